"""hatswarm control plane: the kopf operator, pure decision code, local mode and the CLI."""

__version__ = "0.1.0"
