"""hatswarm data plane: one node agent per Pi + AI HAT+, speaking the Open Inference Protocol."""

__version__ = "0.1.0"
