"""Cross-region latency on a Kubernetes node: tc rules derived from the region matrix."""
