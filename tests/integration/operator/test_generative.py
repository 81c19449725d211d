"""The operator places generative EdgeModels by accelerator, and their agents answer chats.

Three nodes, all `--backend auto` with their HTTP doors on: a Hailo-10H (the HailoRT test double
in tests/fakes, its GenAI module included), a Hailo-8 (the same double as a Hailo-8: no
generative runtime there) and a plain CPU node. EdgeModel `chat` (task generate) has a fake LLM
HEF for hailo10h and a tarball of a tiny onnxruntime-genai model folder for cpu; `vec` (task
embed) a tarball of a tiny encoder folder; `big` declares more memory than any node has. The
real operator (kopf, against the emulated API) must load the HEF on the Hailo-10H through
the hailo-genai backend and the tarball on the two other nodes through onnxruntime-genai,
never the Hailo-8's NPU; the openai client then gets chat answers from both runtimes.

The pool falls back on a cloud LLM (tests/cloudllm.py, an OpenAI-compatible stand-in in its own
process) through `spec.cloudFallback.openai`, its API key in a Secret the DaemonSet mounts, and
`chat` escalates prompts longer than its context there (`cloudFallback.longPrompts`): a long
chat is answered by the cloud, short ones stay on the edge, and the operator's status counts the
cloud's tokens and their price, per EdgeModel and for the pool, exactly as the cloud counted them;
so does `hatswarm cost report` (showback in tokens) from a real Prometheus scraping the agents.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from hatswarm_agent.routing.policy import affinity_key, rendezvous
from hatswarm_operator.cli.cost import main as cost_main
from hatswarm_operator.finops.promql import Prometheus

from tests import prometheusproc
from tests.agentproc import free_port
from tests.cloudllm import CloudLLM, running
from tests.genaimodels import EMBED_HIDDEN, build_embedding_model, build_genai_model, reference
from tests.hailodouble import agent_env, llm_words, write_llm_hef
from tests.integration.operator.harness import World, pool_manifest, wait_for
from tests.integration.operator.test_accelerators import LABEL

pytestmark = pytest.mark.integration

PROMPT = "hello world"
MAX_TOKENS = 12
READY = 2  # MODEL_STATE_READY
CLOUD_TOKEN = "cloud-s3cret"
LONG = "hello world " * 300  # 600 words: far over the tiny model's 256-token context
IN_PRICE, OUT_PRICE = 3.0, 15.0  # the cloud's USD per 1M input / output tokens


@pytest.fixture
def cloud() -> Iterator[CloudLLM]:
    with running(token=CLOUD_TOKEN) as c:
        yield c


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def tarball(folder: Path) -> Path:
    target = folder.with_suffix(".tar.gz")
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return target


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


def test_generative_models_place_by_accelerator_answer_chats_and_escalate_to_the_cloud(
    world: World, tmp_path: Path, cloud: CloudLLM, stack: ExitStack
) -> None:
    http = {"pi-10h": free_port(), "pi-8": free_port(), "pi-cpu": free_port()}
    metrics = {node: free_port() for node in http}
    # The kubelet's view of the cloud API key Secret the DaemonSet mounts (checked below).
    mounted = tmp_path / "cloud-token"
    mounted.write_text(CLOUD_TOKEN + "\n")

    def args(node: str, chip: str) -> tuple[str, ...]:
        return ("--backend", "auto", "--accelerator", chip, "--http-port", str(http[node]),
                "--metrics-port", str(metrics[node]), "--cloud-token", f"cloud={mounted}")  # fmt: skip

    world.add_node("pi-10h", agent_args=args("pi-10h", "hailo10h"), env=agent_env("hailo10h"),
                   **{LABEL: "hailo10h"})  # fmt: skip
    world.add_node("pi-8", agent_args=args("pi-8", "hailo8"), env=agent_env("hailo8"),
                   **{LABEL: "hailo8"})  # fmt: skip
    world.add_node("pi-cpu", agent_args=args("pi-cpu", "cpu"))

    folder = build_genai_model(tmp_path / "tiny", seed=7)
    cpu_build = tarball(folder)
    hef, words = write_llm_hef(tmp_path / "chat.hef"), llm_words()
    vec = tarball(build_embedding_model(tmp_path / "vec"))
    chat = edge_model(
        "chat",
        "generate",
        [artifact("hailo10h", hef, memory_mib=256), artifact("cpu", cpu_build, memory_mib=1024)],
        replicas=3,
    )
    chat["spec"]["cloudFallback"] = {"longPrompts": True, "cloudModel": "cloud-big"}
    chat["spec"]["costAttribution"] = {"team": "assistants"}
    embed = edge_model("vec", "embed", [artifact("cpu", vec, memory_mib=128)], replicas=1)
    big = edge_model("big", "generate", [artifact("cpu", cpu_build, memory_mib=8192)], replicas=1)
    pool = pool_manifest(
        "floor",
        accelerators=["hailo8", "hailo10h", "cpu"],
        # Room for the 1024 MiB cpu build beside the others (the built-in 2Gi limit: 1792 MiB).
        agent={
            "backend": "auto",
            "image": "hatswarm/agent:test",
            "resources": {"limits": {"memory": "4Gi"}},
        },
        cloudFallback={
            "openai": {
                "baseUrl": cloud.base_url,
                "model": "cloud-default",
                "pricePer1MInputUsd": IN_PRICE,
                "pricePer1MOutputUsd": OUT_PRICE,
            },
            "tokenSecretRef": {"name": "floor-cloud"},
            "tls": False,
            "maxShare": 1.0,
        },
    )
    key = base64.b64encode(CLOUD_TOKEN.encode()).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "floor-cloud", "namespace": "default"}, "data": {"token": key}}  # fmt: skip
    world.kube.apply(secret, pool, chat, embed, big)
    prometheus = stack.enter_context(prometheusproc.running(tmp_path, list(metrics.values())))
    prom = Prometheus(prometheus)
    stack.callback(prom.close)
    wait_for(lambda: prom.query("sum(up)")[0].value == len(metrics), timeout=30, what="scrapes")
    start = time.time() - 0.05
    world.start_operator()

    # Every agent DaemonSet mounts the cloud's API key Secret and names it to the agent as the
    # test's agents were started.
    daemonsets = wait_for(
        lambda: world.store.find("DaemonSet", "default"), timeout=60, what="DaemonSets"
    )
    for ds in daemonsets:
        spec = ds["spec"]["template"]["spec"]
        given = spec["containers"][0]["args"]
        assert given[given.index("--cloud-token") + 1] == (
            "cloud=/var/run/hatswarm/cloud-token/token"
        ), ds["metadata"]["name"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["cloud-token"]["secret"]["secretName"] == "floor-cloud"

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
    assert cloud.stats()["calls"] == 0  # short prompts stay on the edge

    # A prompt over the tiny model's context, through the Hailo-8 node's door to the CPU
    # node (which has the tokenizer that measures it): the route the operator pushed sends it
    # to the pool's cloud, under the EdgeModel's cloud model name, with the Secret's API key.
    long_chat = [{"role": "user", "content": LONG}]
    escalated = door.chat.completions.with_raw_response.create(
        model="chat",
        messages=long_chat,  # type: ignore[arg-type]
        max_tokens=5,
        extra_headers={"X-Session-Id": session_for("pi-cpu", long_chat, placements)},
    )
    assert escalated.headers["x-hatswarm-node"] == "cloud"
    answer = escalated.parse()
    assert answer.choices[0].message.content == "cloud0 cloud1 cloud2 cloud3 cloud4 "
    assert answer.usage is not None
    stats = cloud.stats()
    assert stats["calls"] == 1 and stats["unauthorized"] == 0
    assert stats["models"] == ["cloud-big"]
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (600, 5)
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (600, 5)

    # The operator's status counts the cloud's tokens as the cloud did, priced, for the
    # EdgeModel and the pool (live figures are written at most every 30 s).
    cloud_tokens = stats["prompt_tokens"] + stats["completion_tokens"]
    spend = round((600 * IN_PRICE + 5 * OUT_PRICE) / 1e6, 6)
    counted = wait_for(
        lambda: (s := world.status("EdgeModel", "chat")).get("cloudTokens") == cloud_tokens and s,
        timeout=120,
        what="EdgeModel chat counting the cloud's tokens",
    )
    assert counted["cloudTokenSpendUsd"] == pytest.approx(spend)
    assert counted["edgeTokens"] >= len(prompt_ids) + len(tokens)  # the chats served here
    cost = wait_for(
        lambda: (
            (c := world.status("InferencePool", "floor").get("cost") or {}).get("cloudTokens")
            == cloud_tokens
            and c
        ),
        timeout=60,
        what="the pool counting the cloud's tokens",
    )
    assert cost["cloudTokenSpendUsd"] == pytest.approx(spend)
    assert cost["cloudFallbackSpendUsd"] == pytest.approx(round(spend, 4))
    assert (cost["cloudPer1MInputUsd"], cost["cloudPer1MOutputUsd"]) == (IN_PRICE, OUT_PRICE)
    assert cost["edgeTokens"] >= counted["edgeTokens"]

    # Showback in tokens (`hatswarm cost report`) over the agents' own counters, scraped by
    # Prometheus: the same cloud tokens and price, by model and by team.
    wait_for(
        lambda: prom.query('sum(hatswarm_tokens_total{where="cloud"})')[0].value == cloud_tokens,
        timeout=30,
        what="Prometheus scraping the cloud's tokens",
    )
    end = time.time()
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all([pool, chat, embed, big]))
    out = tmp_path / "report"
    window = ["--from", f"{start:.3f}", "--to", f"{end:.3f}", "--prometheus", prometheus]
    assert cost_main(["report", *window, "-f", str(manifests), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    shown = {m["model"]: m for m in report["models"]}["chat"]
    assert (shown["cloud_prompt_tokens"], shown["cloud_completion_tokens"]) == (600, 5)
    assert shown["cloud_usd"] == pytest.approx((600 * IN_PRICE + 5 * OUT_PRICE) / 1e6)
    assert shown["edge_prompt_tokens"] + shown["edge_completion_tokens"] > 0
    team = {t["team"]: t for t in report["teams"]}["assistants"]
    assert team["cloud_tokens"] == cloud_tokens


def session_for(node: str, messages: list[dict[str, str]], holders: dict[str, str]) -> str:
    """A session id whose conversation every agent of the pool sends to `node` (the same
    rendezvous hash over the holders the agents compute)."""
    for i in range(10_000):
        session = f"s{i}"
        if rendezvous(affinity_key(messages, session), sorted(holders)) == node:
            return session
    raise AssertionError(f"no session hashes to {node}")
