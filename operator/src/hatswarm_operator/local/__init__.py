"""Local mode: the control loop over agent processes on this machine, no cluster."""
