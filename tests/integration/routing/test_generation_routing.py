"""Generations routed by token load, with session and prefix affinity (real agent processes).

Two holders of a tiny generative model and an entry agent holding nothing. A conversation's
turns go back to the node that served the first (whose prefix cache then serves the shared part
of the prompt, counted in its NodeStatus); a named session lands on the node its rendezvous hash
picks, whichever agent it enters; long generations with no affinity spread by sequences; and
the load in tokens shows in NodeStatus and in the metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc
from hatswarm_agent.routing.policy import rendezvous

from tests.agentproc import AgentProcess, free_port
from tests.genaimodels import TinyDecoder, build_endless_model, build_genai_model
from tests.polling import poll

from .conftest import Agents

pytestmark = pytest.mark.integration

SHORT = "hello world"  # under 64 characters: a completion prompt with no prefix affinity
SLOW = TinyDecoder(
    hidden_size=512, num_heads=8, num_kv_heads=4, num_layers=4, intermediate_size=1024,
    context_length=512,
)  # fmt: skip
ENDLESS_TOKENS = 300


@dataclass
class Pool:
    holders: dict[str, AgentProcess]  # node name -> agent
    entry_http: str
    entry_metrics: str


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("gen-routing")
    return (
        build_genai_model(d / "tiny", seed=7),
        build_endless_model(d / "endless", SHORT, ENDLESS_TOKENS, shape=SLOW),
    )


@pytest.fixture
def pool(agents: Agents, folders: tuple[Path, Path]) -> Pool:
    tiny, endless = folders
    holders = agents.start_many(
        *(
            [
                "--node-name",
                name,
                "--model",
                f"tiny@genai={tiny}",
                "--model",
                f"endless@genai={endless}",
            ]
            for name in ("h1", "h2")
        )
    )
    http, metrics = free_port(), free_port()
    peers = [f"--peer={m}={h.address}" for h in holders for m in ("tiny", "endless")]
    agents.start(
        ["--node-name", "entry", "--http-port", str(http), "--metrics-port", str(metrics), *peers]
    )
    return Pool(
        dict(zip(("h1", "h2"), holders, strict=True)),
        f"http://127.0.0.1:{http}",
        f"http://127.0.0.1:{metrics}/metrics",
    )


def node_status(agent: AgentProcess) -> control_pb2.NodeStatusResponse:
    with grpc.insecure_channel(agent.address) as channel:
        reply: control_pb2.NodeStatusResponse = control_pb2_grpc.AgentControlStub(
            channel
        ).NodeStatus(control_pb2.NodeStatusRequest(), timeout=10)
        return reply


def generation(agent: AgentProcess, model: str) -> control_pb2.GenerationStatus:
    status = next(m for m in node_status(agent).models if m.name == model)
    assert status.HasField("generation")
    return status.generation


def chat(client: openai.OpenAI, messages: list[dict[str, str]], **kw: object) -> tuple[str, str]:
    """(the answer, the node that generated it), streamed."""
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, stream=True, **kw
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, raw.headers["x-hatswarm-node"]


def test_a_conversation_returns_to_the_node_holding_its_kv_cache(pool: Pool) -> None:
    client = openai.OpenAI(base_url=f"{pool.entry_http}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "hello world, the pool serves"}]
    nodes = []
    for turn in range(3):
        answer, node = chat(client, messages)
        nodes.append(node)
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"and then {turn}"},
        ]
    assert len(set(nodes)) == 1, nodes  # every turn on one node
    (served,) = set(nodes)
    (other,) = set(pool.holders) - {served}
    hits = generation(pool.holders[served], "tiny").prefix_hit_tokens
    assert hits > 0  # turns 2 and 3 rewound the kept generator instead of prefilling again
    assert generation(pool.holders[other], "tiny").prefix_hit_tokens == 0


def test_a_named_session_lands_on_its_rendezvous_node_from_any_agent(pool: Pool) -> None:
    """The entry's view (peers by address) and the pick are the same every time."""
    client = openai.OpenAI(base_url=f"{pool.entry_http}/v1", api_key="x", max_retries=0)
    by_address = {h.address: name for name, h in pool.holders.items()}
    for session in ("alice", "bob", "carol", "dave"):
        expected = by_address[rendezvous(f"session:{session}", list(by_address))]
        for content in ("first question", "another question entirely"):
            _, node = chat(
                client,
                [{"role": "user", "content": content}],
                extra_headers={"X-Session-Id": session},
            )
            assert node == expected
        _, node = chat(client, [{"role": "user", "content": "via user"}], user=session)
        assert node == expected
    scrape = httpx.get(pool.entry_metrics).text
    assert 'hatswarm_route_affinity_total{model="tiny",outcome="hit"} 12.0' in scrape


def test_long_generations_without_affinity_spread_by_sequences(pool: Pool) -> None:
    """Two endless generations at once (short prompts: no affinity) run on both holders: the
    second goes where fewer sequences run. Their load shows in NodeStatus while they run."""
    client = openai.OpenAI(base_url=f"{pool.entry_http}/v1", api_key="x", max_retries=0)
    nodes: list[str] = []
    started = threading.Barrier(3)

    def generate() -> None:
        raw = client.completions.with_raw_response.create(
            model="endless", prompt=SHORT, max_tokens=ENDLESS_TOKENS, temperature=0, stream=True
        )
        nodes.append(raw.headers["x-hatswarm-node"])
        stream = iter(raw.parse())
        next(stream)
        started.wait(30)
        for _ in stream:
            pass

    threads = [threading.Thread(target=generate) for _ in range(2)]
    threads[0].start()
    assert poll(lambda: len(nodes) == 1, within=30)
    threads[1].start()
    started.wait(30)

    def loaded() -> dict[str, control_pb2.GenerationStatus]:  # reported every 0.1 s
        now = {name: generation(h, "endless") for name, h in pool.holders.items()}
        return now if all(g.kv_cache_tokens_used for g in now.values()) else {}

    running = poll(loaded, within=10)
    for t in threads:
        t.join(60)
    assert sorted(nodes) == ["h1", "h2"]
    for name, g in running.items():
        assert (g.active_sequences, g.max_sequences) == (1, 2), name
        assert g.kv_cache_tokens_budget == 2 * SLOW.context_length
        assert 0 < g.kv_cache_tokens_used <= g.kv_cache_tokens_budget


def test_tokens_per_second_and_ttft_in_node_status_and_metrics(
    agents: Agents, folders: tuple[Path, Path]
) -> None:
    tiny, _ = folders
    http, metrics = free_port(), free_port()
    holder = agents.start(
        ["--node-name", "solo", "--metrics-port", str(metrics), "--http-port", str(http),
         "--model", f"tiny@genai={tiny}"],
        timeout=120,
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
    for i in range(3):
        client.completions.create(model="tiny", prompt=f"{SHORT} {i}", max_tokens=10, temperature=0)
    status = node_status(holder)
    g = next(m for m in status.models if m.name == "tiny").generation
    assert g.completion_tokens == 30 and g.prompt_tokens > 0
    assert g.tokens_per_second > 0
    assert 0 < g.ttft_p50_ms <= g.ttft_p99_ms
    assert g.max_sequences == 2 and g.active_sequences == 0
    assert status.generation.completion_tokens == 30  # the node's total
    assert status.generation.ttft_p99_ms == g.ttft_p99_ms
    scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
    for name in (
        "hatswarm_generation_tokens_per_second",
        "hatswarm_generation_ttft_p99_seconds",
        "hatswarm_generation_kv_cache_budget_tokens",
        "hatswarm_generation_sequence_slots",
    ):
        assert f'{name}{{model="tiny",version="1"}}' in scrape, name
    assert 'hatswarm_generation_sequence_slots{model="tiny",version="1"} 2.0' in scrape
