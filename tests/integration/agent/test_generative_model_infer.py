"""A generative model over plain ModelInfer (and KServe v2 REST infer), as Triton's vLLM backend
takes it: `text_input` plus the optional `sampling_parameters` (JSON), `stream` and
`exclude_input_in_output`. A real agent process, the unmodified tritonclient (in a child
process: tests/tritonjobs.py), a tiny onnxruntime-genai model whose end-of-sequence token does
not come early, and what must hold: greedy text equals the runtime's own greedy output, exactly
`max_tokens` tokens of it, counted in `hatswarm_tokens_total` (scraped from /metrics) and in
NodeStatus as the streaming doors count; a malformed `sampling_parameters` is INVALID_ARGUMENT
naming it; the metadata and the model config show the optional inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import tritonjobs
from tests.agentproc import AgentProcess, free_port, start_agent
from tests.genaimodels import TinyDecoder, build_endless_model, reference
from tests.tokencounts import node_tokens, tokens_metric

pytestmark = pytest.mark.integration

PROMPT = "hello world"
TOKENS = 12  # the model's end-of-sequence token does not come in the first 16 after PROMPT


@dataclass
class Holder:
    agent: AgentProcess
    folder: Path
    metrics: int
    http: int


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Holder]:
    folder = build_endless_model(
        tmp_path_factory.mktemp("gen") / "tiny", PROMPT, 16, shape=TinyDecoder()
    )
    metrics, http = free_port(), free_port()
    agent = start_agent(
        ["--node-name", "holder", "--model", f"tiny@genai={folder}",
         "--metrics-port", str(metrics), "--http-port", str(http)],
        timeout=120,
    )  # fmt: skip
    with agent:
        yield Holder(agent, folder, metrics, http)


def delta(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[str, float]:
    return {
        kind: after.get(("tiny", kind, "edge"), 0) - before.get(("tiny", kind, "edge"), 0)
        for kind in ("prompt", "completion")
    }


def test_greedy_model_infer_with_sampling_parameters_is_the_runtimes_output_and_counted(
    holder: Holder,
) -> None:
    ids, generated, text = reference(holder.folder, PROMPT, TOKENS, do_sample=False)
    assert len(generated) == TOKENS  # the model does not stop early: exactly TOKENS tokens
    metrics_before, status_before = tokens_metric(holder.metrics), node_tokens(holder.agent)
    got = tritonjobs.run(
        tritonjobs.infer_texts,
        holder.agent.address,
        "tiny",
        [{"prompt": PROMPT, "sampling": {"max_tokens": TOKENS, "temperature": 0}}],
    )
    answer = got["answers"][0]
    assert "error" not in answer, answer
    assert answer["text"] == text  # the completion alone (exclude_input_in_output defaults on)
    assert answer["params"]["hatswarm.node"] == "holder"
    assert answer["params"]["hatswarm.route"] == "local"
    counted = delta(metrics_before, tokens_metric(holder.metrics))
    assert counted == {"prompt": len(ids), "completion": TOKENS}
    assert delta(status_before, node_tokens(holder.agent)) == counted  # NodeStatus, edgeTokens

    # The metadata lists every input as Triton does; the config says which are optional.
    inputs = {t["name"]: t for t in got["metadata"]["inputs"]}
    assert inputs["text_input"]["datatype"] == "BYTES"
    assert inputs["sampling_parameters"]["datatype"] == "BYTES"
    assert set(inputs) == {"text_input", "sampling_parameters", "stream", "exclude_input_in_output"}
    optional = {i["name"]: i.get("optional", False) for i in got["config"]["input"]}
    assert optional == {
        "text_input": False, "sampling_parameters": True, "stream": True,
        "exclude_input_in_output": True,
    }  # fmt: skip


def test_seeded_sampling_prompt_echo_and_the_kserve_rest_door(holder: Holder) -> None:
    sampled = {"max_tokens": 6, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    before = tokens_metric(holder.metrics)
    got = tritonjobs.run(
        tritonjobs.infer_texts,
        holder.agent.address,
        "tiny",
        [
            {"prompt": PROMPT, "sampling": sampled},
            {"prompt": PROMPT, "sampling": sampled},
            {"prompt": PROMPT, "sampling": {"max_tokens": 3, "temperature": 0}, "exclude": False},
            {"prompt": PROMPT},  # no sampling parameters: the model's defaults
        ],
    )
    first, again, echoed, plain = got["answers"]
    assert "error" not in first and "error" not in plain, got["answers"]
    assert first["text"] and first["text"] == again["text"]  # the same seed, the same sample
    _, _, greedy3 = reference(holder.folder, PROMPT, 3, do_sample=False)
    assert echoed["text"] == PROMPT + greedy3  # exclude_input_in_output false: prompt first
    assert delta(before, tokens_metric(holder.metrics))["completion"] >= 6 + 6 + 3

    _, _, greedy5 = reference(holder.folder, PROMPT, 5, do_sample=False)
    rest = httpx.post(
        f"http://127.0.0.1:{holder.http}/v2/models/tiny/infer",
        json={
            "inputs": [
                {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [PROMPT]},
                {
                    "name": "sampling_parameters", "datatype": "BYTES", "shape": [1],
                    "data": [json.dumps({"max_tokens": 5, "temperature": 0})],
                },
            ]
        },
        timeout=60,
    )  # fmt: skip
    assert rest.status_code == 200, rest.text
    assert rest.json()["outputs"][0]["data"] == [greedy5]


def test_bad_sampling_parameters_and_stream_true_are_invalid_argument(holder: Holder) -> None:
    got = tritonjobs.run(
        tritonjobs.infer_texts,
        holder.agent.address,
        "tiny",
        [
            {"prompt": PROMPT, "raw_sampling": b"{max_tokens: 3"},
            {"prompt": PROMPT, "raw_sampling": b"[1, 2]"},
            {"prompt": PROMPT, "sampling": {"temperature": 7}},
            {"prompt": PROMPT, "sampling": {"max_tokens": "many"}},
            {"prompt": PROMPT, "stream": True},
        ],
    )
    *bad, stream = got["answers"]
    for answer in bad:
        assert answer.get("error") == "StatusCode.INVALID_ARGUMENT", answer
        assert "sampling_parameters" in answer["message"], answer
    assert "not JSON" in bad[0]["message"] and "JSON object" in bad[1]["message"]
    assert "temperature" in bad[2]["message"]
    assert stream.get("error") == "StatusCode.INVALID_ARGUMENT", stream
    assert "ModelStreamInfer" in stream["message"]
    rest = httpx.post(
        f"http://127.0.0.1:{holder.http}/v2/models/tiny/infer",
        json={
            "inputs": [
                {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [PROMPT]},
                {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1],
                 "data": ["not json"]},
            ]
        },
        timeout=60,
    )  # fmt: skip
    assert rest.status_code == 400 and "sampling_parameters" in rest.text, rest.text


def test_an_entry_relays_sampling_parameters_and_only_the_holder_counts(holder: Holder) -> None:
    """A non-holding agent forwards the request whole: the holder generates with its sampling
    parameters and counts the tokens once (the entry only relayed)."""
    _, generated, text = reference(holder.folder, PROMPT, 7, do_sample=False)
    before = node_tokens(holder.agent)
    with start_agent(["--node-name", "entry", "--peer", f"tiny={holder.agent.address}"]) as entry:
        got = tritonjobs.run(
            tritonjobs.infer_texts,
            entry.address,
            "tiny",
            [{"prompt": PROMPT, "sampling": {"max_tokens": 7, "temperature": 0}}],
        )
        assert node_tokens(entry) == {}
    answer = got["answers"][0]
    assert answer.get("text") == text, answer
    assert answer["params"]["hatswarm.node"] == "holder"
    assert answer["params"]["hatswarm.route"] == "peer"
    assert delta(before, node_tokens(holder.agent))["completion"] == len(generated) == 7
