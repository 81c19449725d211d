"""Edge FinOps: the TCO model, live attribution, capacity, Prometheus reads."""
