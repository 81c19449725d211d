"""The acting half of the control plane: probe agents, converge, push tables."""
