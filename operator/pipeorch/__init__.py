"""pipeline-orchestrator: ML and data pipelines across simulated clouds on a Raft control plane."""

__version__ = "0.1.0"
