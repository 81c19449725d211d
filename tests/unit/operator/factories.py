"""Pure-data builders of pools, models and nodes for the operator's unit tests.

Each builds a valid object with the fewest fields a test cares about; a test passes the spec
keys it needs (camelCase, as a manifest spells them) and keeps its own defaults in a one-line
wrapper when it has several.
"""

from __future__ import annotations

from typing import Any

from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.common import Condition
from hatswarm_operator.core.inventory import ModelObs, NodeState
from hatswarm_operator.core.plan import PoolPlan

API_VERSION = "hatswarm.io/v1alpha1"
SHA = "a" * 64
POOL = "p"
POOL_LABELS = {"pool": POOL}


def pool_manifest(
    name: str = POOL, *, namespace: str | None = None, generation: int | None = None, **spec: Any
) -> dict[str, Any]:
    """An InferencePool manifest (a plain dict)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if generation is not None:
        metadata["generation"] = generation
    return {"apiVersion": API_VERSION, "kind": "InferencePool", "metadata": metadata, "spec": spec}


def make_pool(
    name: str = POOL, *, namespace: str | None = None, generation: int | None = None, **spec: Any
) -> InferencePool:
    """A parsed InferencePool with exactly the spec keys given."""
    manifest = pool_manifest(name, namespace=namespace, generation=generation, **spec)
    return InferencePool.model_validate(manifest)


def cpu_artifact(uri: str = "file:///m.onnx", sha256: str = SHA) -> dict[str, Any]:
    return {"accelerator": "cpu", "format": "onnx", "uri": uri, "sha256": sha256}


def make_model(
    name: str = "m",
    *,
    version: str = "1",
    replicas: int = 2,
    generation: int = 1,
    artifacts: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> EdgeModel:
    """A parsed EdgeModel of pool `p` (one CPU artifact unless given), `replicas` desired
    within [1, 5]."""
    return EdgeModel.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "EdgeModel",
            "metadata": {"name": name, "generation": generation},
            "spec": {
                "pool": POOL,
                "version": version,
                "artifacts": artifacts if artifacts is not None else [cpu_artifact()],
                "replicas": {"min": 1, "max": 5, "desired": replicas},
                **spec,
            },
        }
    )


def make_node(
    name: str, *models: ModelObs, accelerator: str = "hailo8l", up: bool = True, **kw: Any
) -> NodeState:
    """An answering node of pool `p`, at 127.0.0.1:900<last digit of its name>."""
    return NodeState(
        name=name,
        address=f"127.0.0.1:{9000 + int(name[-1])}",
        labels=dict(POOL_LABELS),
        accelerator=accelerator,
        up=up,
        models=models,
        **kw,
    )


def condition(plan: PoolPlan, model: str, kind: str) -> Condition:
    """The `kind` condition the plan sets in `model`'s status (KeyError when it sets none)."""
    return {c.type: c for c in plan.model_status[model].conditions}[kind]
