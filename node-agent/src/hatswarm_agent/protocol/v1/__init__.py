"""Generated protobuf and gRPC stubs (`make gen`); do not edit."""
