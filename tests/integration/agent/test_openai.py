"""The HTTP front doors and ModelStreamInfer on real agent processes, through the pool.

Two agents: a holder serving a tiny generative model (a verified tarball on the command line),
an embedding model (loaded over LoadModel), a model that never stops early (one sequence slot,
no queue: the 429 case) and a classifier; and an entry agent holding nothing, with the holder
as its peer. Clients are the real ones: the official `openai` client, httpx for Ollama's NDJSON
and KServe v2 REST, curl, and tritonclient's `async_stream_infer` (in a child process:
tests/tritonjobs.py). What they get back is compared with the runtime's own greedy output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import openai
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests import tritonjobs
from tests.agentproc import AgentProcess, free_port, start_agent
from tests.externaltools import missing
from tests.genaimodels import (
    TinyDecoder,
    build_embedding_model,
    build_endless_model,
    build_genai_model,
    reference,
    reference_pieces,
)
from tests.onnxmodels import build_mlp
from tests.polling import poll

pytestmark = pytest.mark.integration

PROMPT = "hello world"
ENDLESS_PROMPT = "hello world, the pool serves"
MAX_TOKENS = 24
# Slow enough (about 7 ms a token here) that its 300 tokens hold a sequence slot for seconds.
SLOW = TinyDecoder(
    hidden_size=512, num_heads=8, num_kv_heads=4, num_layers=4, intermediate_size=1024,
    context_length=512,
)  # fmt: skip
ENDLESS_TOKENS = 300


@dataclass
class Pool:
    holder: AgentProcess
    entry: AgentProcess
    holder_http: str
    entry_http: str
    tiny: Path
    vec: Path
    mlp: Path
    holder_metrics: str


def tarball(folder: Path, target: Path) -> tuple[Path, str]:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return target, hashlib.sha256(target.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    d = tmp_path_factory.mktemp("front-doors")
    tiny = build_genai_model(d / "tiny", seed=7)
    endless, endless_sha = tarball(
        build_endless_model(d / "endless", ENDLESS_PROMPT, ENDLESS_TOKENS, shape=SLOW),
        d / "endless.tar.gz",
    )
    vec = build_embedding_model(d / "vec")
    mlp = build_mlp(d / "mlp.onnx")
    tiny_tar, tiny_sha = tarball(tiny, d / "tiny.tar.gz")
    vec_tar, vec_sha = tarball(vec, d / "vec.tar.gz")
    holder_http, entry_http, metrics = free_port(), free_port(), free_port()
    holder = start_agent(
        [
            "--node-name", "holder",
            "--allow-file-root", str(d),
            "--http-port", str(holder_http),
            "--metrics-port", str(metrics),
            "--model", f"tiny@genai={tiny_tar}#sha256={tiny_sha}",
            "--model", f"mlp={mlp}",
        ],
        timeout=120,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(holder.address) as channel:
            control = control_pb2_grpc.AgentControlStub(channel)
            for request in (
                control_pb2.LoadModelRequest(
                    name="vec", uri=str(vec_tar), sha256=vec_sha, backend="embedding"
                ),
                control_pb2.LoadModelRequest(  # one sequence slot and no queue: the 429 case
                    name="endless", uri=str(endless), sha256=endless_sha, backend="genai",
                    options={"max_sequences": "1", "max_queued": "0"},
                ),
            ):  # fmt: skip
                status = control.LoadModel(request, timeout=120)
                assert status.state == control_pb2.MODEL_STATE_READY, status.reason
        peers = [f"--peer={m}={holder.address}" for m in ("tiny", "endless", "vec", "mlp")]
        entry = start_agent(["--node-name", "entry", "--http-port", str(entry_http), *peers])
    except BaseException:
        holder.stop()
        raise
    yield Pool(
        holder, entry, f"http://127.0.0.1:{holder_http}", f"http://127.0.0.1:{entry_http}",
        tiny, vec, mlp, f"http://127.0.0.1:{metrics}/metrics",
    )  # fmt: skip
    entry.stop()
    holder.stop()


def client(base: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed", **kwargs)  # type: ignore[arg-type]


def greedy_chat(folder: Path, max_tokens: int = MAX_TOKENS) -> tuple[list[int], list[int], str]:
    return reference(folder, PROMPT, max_tokens, chat=True, do_sample=False)


# -- OpenAI --------------------------------------------------------------------------------------


def test_openai_client_streams_a_chat_completion_through_an_agent_that_does_not_hold_it(
    pool: Pool,
) -> None:
    prompt_ids, tokens, text = greedy_chat(pool.tiny)
    stream = client(pool.entry_http).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == text
    assert len([p for p in pieces if p]) > 1  # streamed, not one lump
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage is not None
    assert last.usage.completion_tokens == len(tokens)
    assert last.usage.prompt_tokens == len(prompt_ids)


def test_openai_chat_and_completions_without_streaming(pool: Pool) -> None:
    prompt_ids, tokens, text = greedy_chat(pool.tiny, 12)
    c = client(pool.entry_http)
    raw = c.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0
    )
    assert raw.headers["x-hatswarm-node"] == "holder"
    assert raw.headers["x-hatswarm-route"] == "peer"
    chat = raw.parse()
    assert chat.choices[0].message.content == text
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (len(prompt_ids), 12)

    prompt_ids, tokens, text = reference(pool.tiny, ENDLESS_PROMPT, 10, do_sample=False)
    completion = c.completions.create(
        model="tiny", prompt=ENDLESS_PROMPT, max_tokens=10, temperature=0
    )
    assert completion.choices[0].text == text
    assert completion.usage is not None and completion.usage.completion_tokens == len(tokens)
    streamed = c.completions.create(
        model="tiny", prompt=ENDLESS_PROMPT, max_tokens=10, temperature=0, stream=True
    )
    chunks = list(streamed)
    assert "".join(ch.choices[0].text for ch in chunks) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == len(prompt_ids) + 10


def test_models_lists_what_the_pool_serves(pool: Pool) -> None:
    names = {m.id for m in client(pool.entry_http).models.list()}
    assert {"tiny", "vec", "mlp", "endless"} <= names
    tags = httpx.get(f"{pool.entry_http}/api/tags").json()
    assert {"tiny:latest", "vec:latest"} <= {m["name"] for m in tags["models"]}


def direct_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    """The encoder run directly with onnxruntime: mean-pooled, L2-normalised."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        (states,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        v = states[0].mean(axis=0)
        rows.append(v / np.linalg.norm(v))
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("via", ["holder", "entry"])
def test_embeddings_equal_the_models_own_output_as_floats_and_base64(pool: Pool, via: str) -> None:
    texts = ["hello world", "the quick brown fox jumps over the lazy dog."]
    expected = direct_embeddings(pool.vec, texts)
    base = pool.holder_http if via == "holder" else pool.entry_http
    c = client(base)
    default = c.embeddings.create(model="vec", input=texts)  # the client asks for base64
    floats = c.embeddings.create(model="vec", input=texts, encoding_format="float")
    for answer in (default, floats):
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert answer.usage.prompt_tokens > len(texts)
    raw = httpx.post(
        f"{base}/v1/embeddings",
        json={"model": "vec", "input": texts[0], "encoding_format": "base64"},
    ).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, expected[0], rtol=1e-5, atol=1e-6)


# -- Ollama --------------------------------------------------------------------------------------


def ndjson(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_ollama_chat_and_generate_stream_ndjson(pool: Pool) -> None:
    prompt_ids, tokens, text = greedy_chat(pool.tiny, 16)
    body = {
        "model": "tiny:latest",
        "messages": [{"role": "user", "content": PROMPT}],
        "options": {"num_predict": 16, "temperature": 0},
    }
    with httpx.stream("POST", f"{pool.entry_http}/api/chat", json=body) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = ndjson(response)
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines) == text  # type: ignore[index]
    assert len(lines) > 2
    assert lines[-1]["eval_count"] == len(tokens)
    assert lines[-1]["prompt_eval_count"] == len(prompt_ids)

    # /api/generate applies the chat template too, unless raw
    with httpx.stream(
        "POST",
        f"{pool.entry_http}/api/generate",
        json={"model": "tiny", "prompt": PROMPT, "options": {"num_predict": 16, "temperature": 0}},
    ) as response:
        lines = ndjson(response)
    assert "".join(line["response"] for line in lines) == text  # type: ignore[misc]
    _, raw_tokens, raw_text = reference(pool.tiny, ENDLESS_PROMPT, 8, do_sample=False)
    whole = httpx.post(
        f"{pool.entry_http}/api/generate",
        json={
            "model": "tiny", "prompt": ENDLESS_PROMPT, "raw": True, "stream": False,
            "options": {"num_predict": 8, "temperature": 0},
        },
    ).json()  # fmt: skip
    assert whole["response"] == raw_text and whole["done"] is True
    assert whole["eval_count"] == len(raw_tokens)


# -- Triton's ModelStreamInfer ------------------------------------------------------------------


@pytest.mark.parametrize("via", ["holder", "entry"])
def test_tritonclient_stream_gets_the_tokens_as_separate_responses_with_a_final_flag(
    pool: Pool, via: str
) -> None:
    _, tokens, text = reference(pool.tiny, ENDLESS_PROMPT, MAX_TOKENS, do_sample=False)
    sampling = {"max_tokens": MAX_TOKENS, "temperature": 0}
    address = pool.holder.address if via == "holder" else pool.entry.address
    responses = tritonjobs.run(
        tritonjobs.stream_generate,
        address,
        "tiny",
        [
            {"id": "a", "prompt": ENDLESS_PROMPT, "sampling": sampling},
            {"id": "b", "prompt": ENDLESS_PROMPT, "sampling": sampling, "empty_final": True},
            {"id": "whole", "prompt": ENDLESS_PROMPT, "sampling": sampling, "stream": False},
        ],
    )
    assert not [r for r in responses if r["error"]]
    for rid in ("a", "b"):
        mine = [r for r in responses if r["id"] == rid]
        assert [r["final"] for r in mine] == [False] * (len(mine) - 1) + [True]
        assert len(mine) > 3  # one response per piece, not one lump
        assert "".join(r["text"] or "" for r in mine) == text
        final = mine[-1]
        assert final["params"]["hatswarm.completion_tokens"] == len(tokens)
        assert sum(r["params"].get("hatswarm.tokens", 0) for r in mine) == len(tokens)
        assert final["params"]["hatswarm.node"] == "holder"
    assert [r for r in responses if r["id"] == "b"][-1]["text"] is None  # the empty final
    (whole,) = [r for r in responses if r["id"] == "whole"]
    assert whole["final"] is True and whole["text"] == ENDLESS_PROMPT + text  # vLLM's default


def test_stream_errors_keep_the_stream_open(pool: Pool) -> None:
    responses = tritonjobs.run(
        tritonjobs.stream_generate,
        pool.entry.address,
        "tiny",
        [
            {"id": "bad", "prompt": "x", "sampling": {"temperature": 9}},
            {
                "id": "good",
                "prompt": ENDLESS_PROMPT,
                "sampling": {"max_tokens": 3, "temperature": 0},
            },
        ],
    )
    errors = [r for r in responses if r["error"]]
    assert len(errors) == 1 and "temperature" in errors[0]["error"]
    good = [r for r in responses if r["id"] == "good"]
    assert good and good[-1]["final"] is True


# -- KServe v2 REST --------------------------------------------------------------------------------


def mlp_direct(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    return np.asarray(y)


@pytest.mark.parametrize("via", ["holder", "entry"])
def test_kserve_v2_rest_infer_on_a_classifier(pool: Pool, via: str) -> None:
    base = pool.holder_http if via == "holder" else pool.entry_http
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    body = {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": x.tolist()}],
    }
    answer = httpx.post(f"{base}/v2/models/mlp/infer", json=body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["shape"] == [2, 10] and out["datatype"] == "FP32"
    np.testing.assert_allclose(
        np.array(out["data"]).reshape(2, 10), mlp_direct(pool.mlp, x), rtol=1e-5
    )
    assert doc["id"] == "r1" and doc["parameters"]["hatswarm.node"] == "holder"
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}


def test_kserve_v2_rest_metadata_and_curl(pool: Pool) -> None:
    meta = httpx.get(f"{pool.holder_http}/v2/models/mlp").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    tiny = httpx.get(f"{pool.holder_http}/v2/models/tiny").json()
    assert tiny["inputs"][0]["name"] == "text_input" and tiny["outputs"][0]["name"] == "text_output"
    assert httpx.get(f"{pool.holder_http}/v2/models/tiny/ready").json()["ready"] is True
    curl = shutil.which("curl")
    if curl is None:
        missing("curl", "apt-get install curl")
    x = [[0.5] * 64]
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x}]})
    out = subprocess.run(
        [curl, "-sf", "-H", "Content-Type: application/json", "-d", body,
         f"{pool.entry_http}/v2/models/mlp/infer"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    data = json.loads(out.stdout)["outputs"][0]["data"]
    np.testing.assert_allclose(data, mlp_direct(pool.mlp, np.array(x, np.float32))[0], rtol=1e-5)


# -- errors --------------------------------------------------------------------------------------


def test_unknown_model_is_404_in_every_door(pool: Pool) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(pool.entry_http, max_retries=0).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )
    assert "nope" in str(info.value)
    ollama = httpx.post(f"{pool.entry_http}/api/chat", json={"model": "nope", "messages": []})
    assert ollama.status_code == 404 and "nope" in ollama.json()["error"]
    loaded = httpx.post(f"{pool.entry_http}/api/generate", json={"model": "tiny"})
    assert loaded.json()["done_reason"] == "load"  # Ollama's "is it there?"
    ollama = httpx.post(
        f"{pool.entry_http}/api/generate", json={"model": "nope", "prompt": "hi", "stream": False}
    )
    assert ollama.status_code == 404 and "nope" in ollama.json()["error"]
    rest = httpx.post(
        f"{pool.holder_http}/v2/models/nope/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
    )
    assert rest.status_code == 404 and "nope" in rest.json()["error"]


def test_bad_bodies_are_400_naming_the_problem(pool: Pool) -> None:
    url = f"{pool.entry_http}/v1/chat/completions"
    not_json = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    no_messages = httpx.post(url, json={"model": "tiny"})
    assert no_messages.status_code == 400 and "messages" in no_messages.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client(pool.entry_http, max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=7
        )
    assert "temperature" in str(info.value)
    classifier = httpx.post(
        url, json={"model": "mlp", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert classifier.status_code == 400 and "does not generate" in classifier.text
    shape = httpx.post(
        f"{pool.entry_http}/v2/models/mlp/infer",
        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
    )
    assert shape.status_code == 400 and "x" in shape.json()["error"]


@pytest.mark.parametrize("via", ["holder", "entry"])
def test_full_sequence_slots_are_429(pool: Pool, via: str) -> None:
    base = pool.holder_http if via == "holder" else pool.entry_http
    c = client(base, max_retries=0)
    before = cancelled(pool)
    long = c.completions.create(
        model="endless",
        prompt=ENDLESS_PROMPT,
        max_tokens=ENDLESS_TOKENS,
        temperature=0,
        stream=True,
    )
    try:
        next(iter(long))  # the one slot is taken, and no queue
        with pytest.raises(openai.RateLimitError):
            c.completions.create(
                model="endless", prompt=ENDLESS_PROMPT, max_tokens=4, temperature=0
            )
        ollama = httpx.post(
            f"{base}/api/generate",
            json={"model": "endless", "prompt": "x", "raw": True, "stream": False},
        )
        assert ollama.status_code == 429 and ollama.json()["error"]
    finally:
        long.close()
    # The client going away stops the generation on the holder, through the entry too.
    assert poll(lambda: cancelled(pool) > before, within=30)


def cancelled(pool: Pool) -> float:
    """Generations of `endless` the holder stopped because their client went away."""
    text = httpx.get(pool.holder_metrics).text
    series = (
        'hatswarm_inference_request_failure_total{model="endless",reason="cancelled",version="1"}'
    )
    for line in text.splitlines():
        if line.startswith(series):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_langchain_streams_a_chat_through_an_agent_that_does_not_hold_the_model(
    pool: Pool,
) -> None:
    """A framework client (langchain-openai's ChatOpenAI, over the official client) streams the
    runtime's own greedy answer, with usage, from the entry agent."""
    from langchain_core.messages import AIMessageChunk, HumanMessage
    from langchain_openai import ChatOpenAI

    prompt_ids, tokens, text = greedy_chat(pool.tiny)
    chat = ChatOpenAI(
        base_url=f"{pool.entry_http}/v1",
        api_key="not-needed",  # type: ignore[arg-type]
        model="tiny",
        temperature=0,
        max_completion_tokens=MAX_TOKENS,
        max_retries=0,
        stream_usage=True,
    )
    chunks = list(chat.stream([HumanMessage(PROMPT)]))
    assert len([c for c in chunks if c.content]) > 1  # streamed, not one lump
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk  # type: ignore[assignment]
    assert isinstance(whole, AIMessageChunk)
    assert whole.content == text
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["input_tokens"] == len(prompt_ids)
    assert whole.usage_metadata["output_tokens"] == len(tokens)
    assert whole.response_metadata.get("finish_reason") in ("stop", "length")


# -- the per-token path: chunks may bundle tokens, counts and the gRPC stream do not -------------


def test_fast_streams_on_the_holder_keep_the_runtimes_tokens_and_exact_usage(pool: Pool) -> None:
    """On the node holding it, the tiny model makes tokens faster than one SSE or NDJSON chunk
    each can be written: the doors may send several tokens in a chunk, but the text is the
    runtime's greedy output and the usage counts its tokens, for 4 streams at once too; the
    gRPC stream still gets one response per piece, each the runtime's own."""
    tokens = 64
    expected = reference_pieces(pool.tiny, ENDLESS_PROMPT, tokens)
    text = "".join(t for t, _ in expected)
    count = sum(n for _, n in expected)
    body = {
        "model": "tiny", "prompt": ENDLESS_PROMPT, "max_tokens": tokens, "temperature": 0,
        "stream": True,
    }  # fmt: skip

    def sse_stream(_: int) -> tuple[str, int, int]:
        with httpx.stream("POST", f"{pool.holder_http}/v1/completions", json=body) as response:
            docs = [
                json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
            ]
        chunks = [d["choices"][0]["text"] for d in docs[:-1]]
        return "".join(chunks), len(chunks), docs[-1]["usage"]["completion_tokens"]

    with ThreadPoolExecutor(4) as pool_threads:
        for got, chunks, usage in [sse_stream(0), *pool_threads.map(sse_stream, range(4))]:
            assert got == text
            assert usage == count
            assert 1 <= chunks <= len([t for t, _ in expected if t])

    with httpx.stream(
        "POST",
        f"{pool.holder_http}/api/generate",
        json={
            "model": "tiny", "prompt": ENDLESS_PROMPT, "raw": True,
            "options": {"num_predict": tokens, "temperature": 0},
        },
    ) as response:  # fmt: skip
        lines = ndjson(response)
    assert "".join(line["response"] for line in lines) == text  # type: ignore[misc]
    assert lines[-1]["eval_count"] == count

    responses = tritonjobs.run(
        tritonjobs.stream_generate,
        pool.holder.address,
        "tiny",
        [
            {
                "id": "a",
                "prompt": ENDLESS_PROMPT,
                "sampling": {"max_tokens": tokens, "temperature": 0},
            }
        ],
    )
    *pieces, final = responses
    assert not final["error"] and final["final"] is True
    assert [(r["text"], r["params"]["hatswarm.tokens"]) for r in pieces] == expected
    assert final["params"]["hatswarm.completion_tokens"] == count


def test_the_holder_reports_its_runtimes_own_timings(pool: Pool) -> None:
    """The end of an answer carries llama.cpp's `timings`: the runtime's own time, inside what
    the client measured; the Ollama door reports the same split as its durations."""
    tokens = 32
    expected = reference_pieces(pool.tiny, ENDLESS_PROMPT, tokens)
    first_tokens = next(n for text, n in expected if text)
    body = {
        "model": "tiny", "prompt": ENDLESS_PROMPT, "max_tokens": tokens, "temperature": 0,
        "stream": True,
    }  # fmt: skip
    started = time.perf_counter()
    first_ms = None
    with httpx.stream("POST", f"{pool.holder_http}/v1/completions", json=body) as response:
        docs = []
        for line in response.iter_lines():
            if line.startswith("data: {"):
                docs.append(json.loads(line[6:]))
                if first_ms is None and docs[-1]["choices"][0]["text"]:
                    first_ms = 1000 * (time.perf_counter() - started)
    total_ms = 1000 * (time.perf_counter() - started)
    timings, usage = docs[-1]["timings"], docs[-1]["usage"]
    assert timings["prompt_n"] == usage["prompt_tokens"]
    assert timings["predicted_n"] == usage["completion_tokens"] - first_tokens
    assert first_ms is not None and 0 < timings["prompt_ms"] < first_ms
    assert 0 < timings["prompt_ms"] + timings["predicted_ms"] < total_ms
    assert timings["predicted_per_second"] == pytest.approx(
        1000 * timings["predicted_n"] / timings["predicted_ms"], rel=1e-3
    )
    whole = httpx.post(f"{pool.holder_http}/v1/completions", json={**body, "stream": False})
    assert whole.json()["timings"]["prompt_n"] == usage["prompt_tokens"]
    # Through a peer: the holder's runtime time travels with the stream's end.
    started = time.perf_counter()
    relayed = httpx.post(f"{pool.entry_http}/v1/completions", json={**body, "stream": False})
    relayed_ms = 1000 * (time.perf_counter() - started)
    assert relayed.headers["x-hatswarm-route"] == "peer"
    got = relayed.json()["timings"]
    assert got["predicted_n"] == timings["predicted_n"]
    assert 0 < got["prompt_ms"] + got["predicted_ms"] < relayed_ms

    done = httpx.post(
        f"{pool.holder_http}/api/generate",
        json={
            "model": "tiny", "prompt": ENDLESS_PROMPT, "raw": True, "stream": False,
            "options": {"num_predict": tokens, "temperature": 0},
        },
    ).json()  # fmt: skip
    assert done["prompt_eval_duration"] > 0 and done["eval_duration"] > 0
    assert done["prompt_eval_duration"] + done["eval_duration"] < done["total_duration"]
