"""The data plane: the OIP servicer (conversion), the DataPlane that runs requests here, the model
registry, tensors, queues, adapters, domain errors, metrics."""
