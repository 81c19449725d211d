"""The operator places generative EdgeModels by accelerator, and their agents answer chats.

Three nodes, all `--backend auto` with their HTTP doors on: a Hailo-10H (the HailoRT test double
in tests/fakes, its GenAI module included), a Hailo-8 (the same double as a Hailo-8: no
generative runtime there) and a plain CPU node. EdgeModel `chat` (task generate) has a fake LLM
HEF for hailo10h and a tarball of a tiny onnxruntime-genai model folder for cpu; `vec` (task
embed) a tarball of a tiny encoder folder; `big` declares more memory than any node has. The
real operator (kopf, against the emulated API) must load the HEF on the Hailo-10H through
the hailo-genai backend and the tarball on the two other nodes through onnxruntime-genai,
never the Hailo-8's NPU; the openai client then gets chat answers from both runtimes.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

import openai
import pytest
from hatswarm_agent.routing.policy import affinity_key, rendezvous

from tests.agentproc import free_port
from tests.genaimodels import EMBED_HIDDEN, build_embedding_model, build_genai_model, reference
from tests.integration.operator.harness import World, pool_manifest, wait_for
from tests.integration.operator.test_accelerators import FAKES, LABEL, fake_env

pytestmark = pytest.mark.integration

PROMPT = "hello world"
MAX_TOKENS = 12
READY = 2  # MODEL_STATE_READY


def tarball(folder: Path) -> Path:
    target = folder.with_suffix(".tar.gz")
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return target


def fake_llm_hef(path: Path) -> tuple[Path, list[str]]:
    """A HEF of the GenAI test double, and the words it speaks."""
    import sys

    sys.path.insert(0, str(FAKES))
    try:
        from hailo_platform.genai import WORDS, write_fake_llm_hef
    finally:
        sys.path.remove(str(FAKES))
        for name in ("hailo_platform.genai", "hailo_platform"):
            sys.modules.pop(name, None)
    return write_fake_llm_hef(path), list(WORDS)


def artifact(accelerator: str, path: Path, memory_mib: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "accelerator": accelerator,
        "format": "onnx" if accelerator == "cpu" else "hef",
        "uri": path.resolve().as_uri(),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if memory_mib is not None:
        out["memoryMiB"] = memory_mib
    return out


def edge_model(name: str, task: str, artifacts: list[dict[str, Any]], replicas: int) -> Any:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pool": "floor",
            "task": task,
            "version": "1.0.0",
            "artifacts": artifacts,
            "replicas": {"min": 1, "max": 3, "desired": replicas},
        },
    }


def held(world: World, node: str, model: str) -> tuple[str, str] | None:
    """(sha256, backend) of `model` READY on `node`'s agent, if it is."""
    for m in world.node_status(node).models:
        if m.name == model and m.state == READY:
            return m.sha256, m.backend
    return None


def test_generative_models_place_by_accelerator_and_answer_chats(
    world: World, tmp_path: Path
) -> None:
    http = {"pi-10h": free_port(), "pi-8": free_port(), "pi-cpu": free_port()}

    def args(node: str, chip: str) -> tuple[str, ...]:
        return ("--backend", "auto", "--accelerator", chip, "--http-port", str(http[node]))

    world.add_node("pi-10h", agent_args=args("pi-10h", "hailo10h"), env=fake_env("hailo10h"),
                   **{LABEL: "hailo10h"})  # fmt: skip
    world.add_node("pi-8", agent_args=args("pi-8", "hailo8"), env=fake_env("hailo8"),
                   **{LABEL: "hailo8"})  # fmt: skip
    world.add_node("pi-cpu", agent_args=args("pi-cpu", "cpu"))

    folder = build_genai_model(tmp_path / "tiny", seed=7)
    cpu_build = tarball(folder)
    hef, words = fake_llm_hef(tmp_path / "chat.hef")
    vec = tarball(build_embedding_model(tmp_path / "vec"))
    chat = edge_model(
        "chat",
        "generate",
        [artifact("hailo10h", hef, memory_mib=256), artifact("cpu", cpu_build, memory_mib=1024)],
        replicas=3,
    )
    embed = edge_model("vec", "embed", [artifact("cpu", vec, memory_mib=128)], replicas=1)
    big = edge_model("big", "generate", [artifact("cpu", cpu_build, memory_mib=8192)], replicas=1)
    pool = pool_manifest(
        "floor",
        accelerators=["hailo8", "hailo10h", "cpu"],
        agent={"backend": "auto", "image": "hatswarm/agent:test"},
    )
    world.kube.apply(pool, chat, embed, big)
    world.start_operator()

    # The HEF on the Hailo-10H (HailoRT GenAI), the CPU build on the Hailo-8 node and the CPU
    # node (onnxruntime-genai): never the Hailo-8's NPU.
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (hef, cpu_build, vec)}
    expected = {
        "pi-10h": (sha[hef], "hailo-genai"),
        "pi-8": (sha[cpu_build], "onnxruntime-genai"),
        "pi-cpu": (sha[cpu_build], "onnxruntime-genai"),
    }
    wait_for(
        lambda: {n: held(world, n, "chat") for n in expected} == expected,
        timeout=180,
        what="chat on every node with the build its accelerator runs",
    )
    wait_for(
        lambda: world.status("EdgeModel", "chat").get("phase") == "Ready",
        timeout=60,
        what="EdgeModel chat Ready",
    )
    placements = {p["node"]: p["state"] for p in world.status("EdgeModel", "chat")["placements"]}
    assert placements == {"pi-10h": "Ready", "pi-8": "Ready", "pi-cpu": "Ready"}
    (vec_node,) = wait_for(lambda: world.ready_on("vec"), timeout=120, what="vec placed")
    assert held(world, vec_node, "vec") == (sha[vec], "embedding")

    # `big` declares 8192 MiB: no node has that much, and the status says so.
    degraded = wait_for(
        lambda: (
            world.condition("EdgeModel", "big", "Degraded").get("status") == "True"
            and world.condition("EdgeModel", "big", "Degraded")
        ),
        timeout=60,
        what="big refused for memory",
    )
    assert degraded["reason"] == "InsufficientCapacity"
    assert "(8192 MiB on cpu, " in degraded["message"], degraded
    assert world.ready_on("big") == []

    # A chat through the CPU node's OpenAI door: the runtime's own greedy answer. Generations
    # go to the node their session hashes to (affinity), so each request names a session that
    # lands where this test looks.
    messages = [{"role": "user", "content": PROMPT}]
    prompt_ids, tokens, text = reference(folder, PROMPT, MAX_TOKENS, chat=True, do_sample=False)
    cpu = openai.OpenAI(base_url=f"http://127.0.0.1:{http['pi-cpu']}/v1", api_key="unused")
    raw = cpu.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_headers={"X-Session-Id": session_for("pi-cpu", messages, placements)},
    )
    assert raw.headers["x-hatswarm-node"] == "pi-cpu"
    answer = raw.parse()
    assert answer.choices[0].message.content == text
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        len(prompt_ids),
        len(tokens),
    )

    # Streamed through the Hailo-10H's door: served there by HailoRT GenAI (the double's words;
    # its closing stop token is counted, not shown).
    npu = openai.OpenAI(base_url=f"http://127.0.0.1:{http['pi-10h']}/v1", api_key="unused")
    streamed = npu.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,  # type: ignore[arg-type]
        extra_headers={"X-Session-Id": session_for("pi-10h", messages, placements)},
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert streamed.headers["x-hatswarm-node"] == "pi-10h"
    chunks = list(streamed.parse())
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    said = "".join(pieces).split()
    assert said and set(said) <= set(words)
    usage = chunks[-1].usage
    assert usage is not None and len(said) <= usage.completion_tokens <= MAX_TOKENS

    # Embeddings through any door (the Hailo-8 node's, which may not hold vec: routed).
    door = openai.OpenAI(base_url=f"http://127.0.0.1:{http['pi-8']}/v1", api_key="unused")
    vectors = door.embeddings.create(model="vec", input=["hello", "world"])
    assert [len(v.embedding) for v in vectors.data] == [EMBED_HIDDEN, EMBED_HIDDEN]


def session_for(node: str, messages: list[dict[str, str]], holders: dict[str, str]) -> str:
    """A session id whose conversation every agent of the pool sends to `node` (the same
    rendezvous hash over the holders the agents compute)."""
    for i in range(10_000):
        session = f"s{i}"
        if rendezvous(affinity_key(messages, session), sorted(holders)) == node:
            return session
    raise AssertionError(f"no session hashes to {node}")
