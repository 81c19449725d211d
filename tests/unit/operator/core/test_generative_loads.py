"""What the control loop asks an agent to load for generative and embedding EdgeModels: the
backend that runs the build, named as the agent names its backends."""

from __future__ import annotations

import pytest
from hatswarm_agent.backends import canonical_name
from hatswarm_operator.control.converters import load_request
from hatswarm_operator.core.plan import GGUF_BACKEND, TASK_BACKENDS, backend_for
from hatswarm_operator.core.reconcile import plan_pool

from tests.unit.operator.factories import POOL_LABELS, SHA, make_model, make_node, make_pool


@pytest.mark.parametrize("backend", sorted(set(TASK_BACKENDS.values())))
def test_every_task_backend_is_one_the_agent_has(backend: str) -> None:
    assert canonical_name(backend) == backend


def test_tensor_models_load_on_the_agents_default_backend() -> None:
    assert backend_for("tensor", "hailo8") == backend_for("tensor", "cpu") == ""


def test_a_generative_model_loads_on_the_runtime_of_each_nodes_build() -> None:
    hef = {"accelerator": "hailo10h", "format": "hef", "uri": "file:///c.hef", "sha256": SHA}
    tar = {"accelerator": "cpu", "format": "onnx", "uri": "file:///c.tar.gz", "sha256": SHA,
           "memoryMiB": 1024}  # fmt: skip
    chat = make_model("chat", replicas=3, artifacts=[hef, tar], task="generate")
    vec = make_model("vec", replicas=1, artifacts=[dict(tar, uri="file:///v.tar")], task="embed")
    nodes = [
        make_node("n1", accelerator="hailo10h"),
        make_node("n2", accelerator="hailo8"),
        make_node("n3", accelerator="cpu"),
    ]
    plan = plan_pool(make_pool(nodeSelector=POOL_LABELS), [chat, vec], nodes, now=0)
    loads = {(ld.model, ld.node): ld for ld in plan.loads}
    assert {
        k: (ld.artifact.accelerator, ld.backend) for k, ld in loads.items() if k[0] == "chat"
    } == {
        ("chat", "n1"): ("hailo10h", "hailo-genai"),
        ("chat", "n2"): ("cpu", "onnxruntime-genai"),  # the Hailo-8 node's CPU, not its NPU
        ("chat", "n3"): ("cpu", "onnxruntime-genai"),
    }
    (vec_load,) = [ld for ld in plan.loads if ld.model == "vec"]
    assert vec_load.backend == "embedding"
    request = load_request(loads[("chat", "n2")], public_key="")
    assert (request.backend, request.uri, request.format) == (
        "onnxruntime-genai",
        "file:///c.tar.gz",
        "onnx",
    )


def test_a_gguf_build_loads_on_llama_cpp_and_an_embedding_one_in_embedding_mode() -> None:
    assert canonical_name(GGUF_BACKEND) == GGUF_BACKEND
    gguf = {"accelerator": "cpu", "format": "gguf", "uri": "file:///m.gguf", "sha256": SHA}
    chat = make_model("chat", replicas=1, artifacts=[gguf], task="generate")
    vec = make_model("vec", replicas=1, artifacts=[dict(gguf, uri="file:///e.gguf")], task="embed")
    plan = plan_pool(
        make_pool(nodeSelector=POOL_LABELS), [chat, vec], [make_node("n1", accelerator="cpu")], 0
    )
    requests = {ld.model: load_request(ld, public_key="") for ld in plan.loads}
    assert (requests["chat"].backend, dict(requests["chat"].options)) == ("llamacpp", {})
    assert (requests["vec"].backend, dict(requests["vec"].options)) == (
        "llamacpp",
        {"embedding": "true"},
    )
