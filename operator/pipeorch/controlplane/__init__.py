"""The control-plane process: Raft node, gRPC and HTTP servers, leader-only loops."""
