"""The data plane: the OIP servicer, model registry, tensors, queues, adapters."""
