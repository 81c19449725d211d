"""Pure decisions: plain data in, plain data out. No Kubernetes, gRPC or files."""
