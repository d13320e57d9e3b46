"""Kubernetes adapters: the CRDs of pipeorch.dev/v1alpha1 (generated from the spec models)."""
