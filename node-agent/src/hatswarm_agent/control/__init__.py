"""What the operator asks of this agent: the control servicer, model lifecycle, artifacts,
signatures, the saved assignment."""
