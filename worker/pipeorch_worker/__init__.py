"""The worker agent: pulls work from the control plane over gRPC (pipeorch.v1)."""
