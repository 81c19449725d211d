"""The hatswarm.io/v1alpha1 API: pydantic models are the single source of truth.

CRD YAML (crds/, the chart's crds/) is generated from these types by `hatswarm crds`; the
operator parses every object it reconciles through the same types, so a cluster without CEL
support still refuses what the schema would.
"""

from hatswarm_operator.api.common import GROUP, VERSION, Condition
from hatswarm_operator.api.edgemodel import EdgeModel, EdgeModelSpec, EdgeModelStatus
from hatswarm_operator.api.inferencepool import (
    InferencePool,
    InferencePoolSpec,
    InferencePoolStatus,
)

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "EdgeModel",
    "EdgeModelSpec",
    "EdgeModelStatus",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
]
