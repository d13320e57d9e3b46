"""Generated gRPC stubs for proto/pipeorch/v1/pipeorch.proto (regenerate with `make proto`)."""
