"""Generations escalated to a cloud LLM: real agents, a real OpenAI-compatible stand-in.

The cloud stand-in (tests/cloudllm.py, its own process) counts the calls and tokens it served;
the agents must send it what their routes say (a prompt over the edge model's context; an
answer whose first tokens the model is unsure of; a model no replica can serve), within the
cloud's share of recent requests, relay its stream through every front door unchanged, and
count its tokens and their price exactly as the cloud did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc

from tests import tritonjobs
from tests.agentproc import free_port
from tests.cloudllm import CloudLLM, running
from tests.genaimodels import build_genai_model, reference
from tests.tokencounts import node_tokens, tokens_metric

from .conftest import Agents

pytestmark = pytest.mark.integration

TOKEN = "cloud-s3cret"
LONG = "hello world " * 300  # far over the tiny model's 256-token context
IN_PRICE, OUT_PRICE = 3.0, 15.0  # USD per 1M tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_genai_model(tmp_path_factory.mktemp("gen") / "tiny", seed=7)


@pytest.fixture
def cloud() -> Iterator[CloudLLM]:
    with running(token=TOKEN) as c:
        yield c


def table(
    tmp: Path,
    cloud: CloudLLM,
    *,
    max_share: float = 1.0,
    route: dict[str, Any] | None = None,
    name: str = "table.json",
) -> Path:
    token = tmp / "cloud-token"
    token.write_text(TOKEN + "\n")
    doc = {
        "generation": 1,
        "routes": [{"model": "tiny", "cloudFallback": True, **(route or {})}],
        "cloud": {
            "openaiBaseUrl": cloud.base_url,
            "openaiModel": "cloud-default",
            "tokenFile": str(token),
            "maxShare": max_share,
            "pricePer1mInputUsd": IN_PRICE,
            "pricePer1mOutputUsd": OUT_PRICE,
        },
    }
    path = tmp / name
    path.write_text(json.dumps(doc))
    return path


def metric(port: int, prefix: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_too_long_prompt_goes_to_the_cloud_through_every_door(
    agents: Agents, tiny: Path, cloud: CloudLLM, tmp_path: Path
) -> None:
    """Holder escalates (it has the tokenizer); a non-holding entry relays the stream."""
    routes = {"escalateLongPrompts": True, "cloudModel": "cloud-big"}
    holder = agents.start(
        ["--node-name", "holder", "--model", f"tiny@genai={tiny}",
         "--routing-table", str(table(tmp_path, cloud, route=routes))],
        timeout=120,
    )  # fmt: skip
    http, metrics = free_port(), free_port()
    entry = agents.start(
        ["--node-name", "entry", "--http-port", str(http), "--metrics-port", str(metrics),
         "--peer", f"tiny={holder.address}"]
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=[{"role": "user", "content": LONG}],
        max_tokens=5,
        temperature=0,
        stream=True,
    )
    assert raw.headers["x-hatswarm-node"] == "cloud"
    assert raw.headers["x-hatswarm-route"] == "cloud"  # relayed by the holder, from the cloud
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "cloud0 cloud1 cloud2 cloud3 cloud4 "
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 5 and usage.prompt_tokens == 600

    # Ollama NDJSON and Triton ModelStreamInfer relay the same cloud stream.
    with httpx.stream(
        "POST",
        f"http://127.0.0.1:{http}/api/generate",
        json={"model": "tiny", "prompt": LONG, "options": {"num_predict": 3}},
    ) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "".join(line["response"] for line in lines) == "cloud0 cloud1 cloud2 "
    assert lines[-1]["done"] and lines[-1]["eval_count"] == 3
    responses = tritonjobs.run(
        tritonjobs.stream_generate,
        entry.address,
        "tiny",
        [{"id": "t", "prompt": LONG, "sampling": {"max_tokens": 4}}],
        60.0,
    )
    assert "".join(r["text"] or "" for r in responses) == "cloud0 cloud1 cloud2 cloud3 "
    assert responses[-1]["final"] and not any(r["error"] for r in responses)
    assert responses[0]["params"]["hatswarm.route"] == responses[-1]["params"]["hatswarm.route"]
    assert responses[-1]["params"]["hatswarm.route"] == "cloud"

    stats = cloud.stats()
    assert stats["calls"] == 3 and stats["unauthorized"] == 0
    assert stats["models"] == ["cloud-big"] * 3  # the route's cloud model name
    # The holder counted the cloud's tokens as the cloud did, and priced them.
    counts = node_tokens(holder)
    assert counts[("tiny", "prompt", "cloud")] == stats["prompt_tokens"]
    assert counts[("tiny", "completion", "cloud")] == stats["completion_tokens"] == 12
    assert ("tiny", "prompt", "edge") not in counts  # nothing ran on the edge
    assert node_tokens(entry) == {}  # the entry only relayed: counted once, by the holder


def text_request(prompt: str) -> pb.ModelInferRequest:
    """A plain ModelInfer of a generative model: Triton vLLM-style tensors (text_input only:
    the OIP face of the generative backends declares no sampling_parameters input)."""
    request = pb.ModelInferRequest(model_name="tiny", id="r1")
    text = request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(prompt.encode())
    return request


def test_plain_model_infer_and_kserve_rest_escalate_a_too_long_prompt(
    agents: Agents, tiny: Path, cloud: CloudLLM, tmp_path: Path
) -> None:
    """Not only the streaming doors: gRPC ModelInfer and KServe v2 REST infer of a generative
    model send a prompt over its context to the cloud too (the holder measures and escalates;
    a non-holding entry relays), answered as the model's one text_output; short ones stay."""
    holder = agents.start(
        ["--node-name", "holder", "--model", f"tiny@genai={tiny}",
         "--routing-table", str(table(tmp_path, cloud, route={"escalateLongPrompts": True}))],
        timeout=120,
    )  # fmt: skip
    http = free_port()
    entry = agents.start(
        ["--node-name", "entry", "--http-port", str(http), "--peer", f"tiny={holder.address}"]
    )  # fmt: skip
    with grpc.insecure_channel(entry.address) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        short = infer(text_request("hello"), timeout=60)
        assert short.parameters["hatswarm.node"].string_param == "holder"
        assert short.parameters["hatswarm.route"].string_param == "peer"
        long = infer(text_request(LONG), timeout=60)
        assert long.parameters["hatswarm.node"].string_param == "cloud"
        # Relayed by the holder, answered by the cloud: the route says where the answer came from.
        assert long.parameters["hatswarm.route"].string_param == "cloud"
        assert [o.name for o in long.outputs] == ["text_output"] and long.id == "r1"
        eight = "".join(f"cloud{i} " for i in range(8))  # the stand-in's default length
        assert long.outputs[0].contents.bytes_contents == [eight.encode()]
    rest = httpx.post(
        f"http://127.0.0.1:{http}/v2/models/tiny/infer",
        json={
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [LONG]}]
        },
        timeout=60,
    )
    assert rest.status_code == 200, rest.text
    answer = rest.json()
    assert answer["parameters"]["hatswarm.node"] == "cloud"
    assert answer["parameters"]["hatswarm.route"] == "cloud"
    assert answer["outputs"][0]["data"] == [eight]
    with grpc.insecure_channel(holder.address) as channel:  # the holder's own door
        own = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(LONG), timeout=60)
    assert own.parameters["hatswarm.route"].string_param == "cloud"
    assert own.outputs[0].contents.bytes_contents == [eight.encode()]
    stats = cloud.stats()
    assert stats["calls"] == 3 and stats["prompt_tokens"] == 1800
    counts = node_tokens(holder)  # the holder counted the cloud's tokens as the cloud did
    assert counts[("tiny", "prompt", "cloud")] == 1800
    assert counts[("tiny", "completion", "cloud")] == stats["completion_tokens"] == 24
    assert node_tokens(entry) == {}  # the entry only relayed


def test_cloud_share_cap_and_token_cost(
    agents: Agents, tiny: Path, cloud: CloudLLM, tmp_path: Path
) -> None:
    metrics, http = free_port(), free_port()
    agents.start(
        ["--node-name", "solo", "--model", f"tiny@genai={tiny}", "--http-port", str(http),
         "--metrics-port", str(metrics),
         "--routing-table", str(table(tmp_path, cloud, max_share=0.5,
                                      route={"escalateLongPrompts": True}))],
        timeout=120,
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
    short = client.completions.create(model="tiny", prompt="hello", max_tokens=4, temperature=0)
    assert short.usage is not None
    long1 = client.completions.create(model="tiny", prompt=LONG, max_tokens=6)
    assert long1.choices[0].text == "cloud0 cloud1 cloud2 cloud3 cloud4 cloud5 "
    with pytest.raises(openai.RateLimitError) as info:  # 2 of 3 would be over half
        client.completions.create(model="tiny", prompt=LONG, max_tokens=6)
    assert "share limit" in str(info.value) and "context" in str(info.value)
    stats = cloud.stats()
    assert stats["calls"] == 1 and stats["models"] == ["cloud-default"]
    counts = tokens_metric(metrics)
    assert counts[("tiny", "prompt", "cloud")] == stats["prompt_tokens"] == 600
    assert counts[("tiny", "completion", "cloud")] == 6
    assert counts[("tiny", "prompt", "edge")] == short.usage.prompt_tokens
    assert counts[("tiny", "completion", "edge")] == short.usage.completion_tokens
    cost = metric(metrics, "hatswarm_cloud_fallback_cost_usd_total{")
    assert cost == pytest.approx((600 * IN_PRICE + 6 * OUT_PRICE) / 1e6)


def test_unsure_answers_go_to_the_cloud_and_sure_ones_stay(
    agents: Agents, tiny: Path, cloud: CloudLLM, tmp_path: Path
) -> None:
    """onnxruntime-genai's logits give each token's log-probability; the first 4 judge."""
    _, _, text = reference(tiny, "hello world", 12, chat=True, do_sample=False)
    ports = {}
    for name, threshold in (("strict", -0.0), ("lenient", -1000.0)):
        ports[name] = free_port()
        agents.start(
            ["--node-name", name, "--model", f"tiny@genai={tiny}", "--http-port",
             str(ports[name]),
             "--routing-table", str(table(tmp_path, cloud, name=f"{name}.json", route={
                 "escalationMinMeanLogprob": threshold, "escalationLogprobTokens": 4}))],
            timeout=120,
        )  # fmt: skip
    answers = {}
    for name, port in ports.items():
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello world"}],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        chunks = list(raw.parse())
        answers[name] = (
            raw.headers["x-hatswarm-node"],
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
        )
    # Random weights: every mean log-probability is below 0, none below -1000.
    assert answers["strict"] == ("cloud", "".join(f"cloud{i} " for i in range(12)))
    assert answers["lenient"] == ("lenient", text)  # held back, then replayed unchanged
    assert cloud.stats()["calls"] == 1


def test_no_replica_falls_back_to_the_cloud(
    agents: Agents, cloud: CloudLLM, tmp_path: Path
) -> None:
    http = free_port()
    agents.start(
        ["--node-name", "gw", "--gateway", "--http-port", str(http),
         "--routing-table", str(table(tmp_path, cloud))]
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "one two three"}], max_tokens=2
    )
    assert answer.choices[0].message.content == "cloud0 cloud1 "
    assert answer.usage is not None and answer.usage.prompt_tokens == 3
    assert cloud.stats()["prompts"] == [[{"role": "user", "content": "one two three"}]]
