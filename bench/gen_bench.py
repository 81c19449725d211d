"""Generation benchmark (issue 17): time to first token and tokens/s through the agent against
onnxruntime-genai called directly, same model, same thread settings, paired in one run.

Two models, both random weights built here (no download) and cached under
``$TMPDIR/hatswarm-bench-cache/`` (the 0.5B one takes about a minute to write once):

- ``tiny``: the bundled tiny decoder (``hatswarm up``'s generative model), its context raised
  to 1024 tokens so that 896-token generations time a steady decode rate;
- ``qwen05b_int4``: Qwen2.5-0.5B's shape (vocab 151936, hidden 896, 24 layers, 14 heads / 2 KV
  heads, MLP 4864), its linear layers int4 (MatMulNBits, block 32) as the model builder's CPU
  int4 export writes them.

The end-of-sequence token is one the greedy run never produces, so every generation runs its
full ``max_tokens``. Per round and model, in alternating order:

- runtime, 1 sequence: tokenize, ``Generator`` loop in this process; TTFT = start to the first
  token whose text is not empty (what a streaming client sees), decode rate = the tokens after
  the first over the time after it;
- agent, 1 sequence: the same prompt through the agent's OpenAI door (``/v1/completions``,
  ``stream: true``, temperature 0), read with aiohttp; TTFT = request sent to the first SSE
  chunk with text, tokens from the usage the stream ends with (never counted from chunks);
- 4 sequences at once: the runtime with 4 threads (one ``Generator`` each) and the agent with 4
  concurrent streams; aggregate tokens/s = all generated tokens over the wall time.

The agent runs the model as it does in production, in child processes: ``processes`` 2 (the
weights loaded twice, so that two sequences decode at once: onnxruntime-genai's binding holds
the GIL for a whole step, so the runtime's own four threads take turns), each with
``intra_op_num_threads`` equal to the runtime's (1: on these two shared cores a second spinning
intra-op thread only adds noise) and ``max_sequences`` 4; a second agent with one process (the
default) runs the 4 sequences too, for reference. The prefix cache is off for the paired
rounds (every request prefills its whole prompt, as the runtime's does); then a second agent with
the cache on measures what a repeated prompt costs (the next turn of a conversation on the node
its affinity picks): ``ttft_prefix_cached_ms``.

What the agent adds is measured on the very requests it serves: every answer ends with the
runtime's own time in the child process that ran it (``timings``, llama.cpp's fields: the
runtime's calls only, up to the first piece of text and after it). The agent's TTFT overhead is
the client's TTFT minus that prompt time, the median over the rounds and over more short
(4-token) generations; its decode ratio is the client's decode rate over the runtime's own rate
for the same tokens. Why not only against the runtime in this process: the same 0.5B prefill
runs a few percent faster or slower from one process to the next (``runtime_ttft_ms_by_process``
measures it here and in fresh processes), more than the 5 ms to resolve on a 200 ms prefill; the
cross-process paired figures are kept beside, for reference. Ratios: agent decode rate over its
runtime's (target >= 0.95), agent TTFT over its runtime's with the overhead in ms (target <= 5
ms), agent 4-sequence aggregate over the runtime's 1-sequence rate (target >= 1). The chart goes
to bench/generation.png. The load average before and after each model's rounds is kept:
these cores are shared, and a busy neighbour shows there.

    uv run --frozen python bench/gen_bench.py [--quick] [--json PATH] [--chart PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
CACHE = Path(
    os.environ.get("HATSWARM_BENCH_CACHE", Path(tempfile.gettempdir()) / "hatswarm-bench-cache")
)
PROMPT = "hello world, the pool serves a small model on every node"
# The agent's generation processes (option `processes`): two, one per core of this machine, so
# four sequences run two at a time; a second agent with one process is measured beside it.
PROCESSES = 2
FRESH_PROCESSES = 2  # fresh runtime processes measured for the process-to-process spread
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Case:
    name: str
    max_tokens: int
    rounds: int
    ttft_pairs: int = 0  # extra short generations, runtime and agent in turn, for the TTFT
    process_samples: int = 5  # short generations per process for the process-to-process spread


def shapes() -> dict[str, Any]:
    from hatswarm_operator.local.tinyllm import TinyDecoder

    return {
        # The bundled tiny decoder with a 1024-token context, so that a generation's decode
        # window (~60 ms at 15k tokens/s) is long against a stream's fixed latencies at its two
        # ends (0.5-2 ms): at 128 tokens one request's decode ratio ranged 0.67-1.10.
        "tiny": TinyDecoder(context_length=1024),
        "qwen05b_int4": TinyDecoder(
            vocab_size=151936,
            hidden_size=896,
            num_heads=14,
            num_kv_heads=2,
            num_layers=24,
            intermediate_size=4864,
            context_length=1024,
            int4_block_size=32,
        ),
    }


def build(name: str, tokens: int) -> Path:
    """The model folder (cached by shape), with an end-of-sequence token greedy never reaches
    within `tokens` tokens of PROMPT."""
    from hatswarm_operator.local.tinyllm import build_genai_model

    shape = shapes()[name]
    key = hashlib.sha256(repr(shape).encode()).hexdigest()[:12]
    folder = CACHE / f"gen-{name}-{key}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        build_genai_model(folder, seed=3, shape=shape, chat_template=None)
        print(f"  built {name} in {time.monotonic() - started:.0f} s: {folder}", flush=True)
        done.touch()
    _, generated = runtime_tokens(folder, tokens)
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    eos = config["model"]["eos_token_id"]
    if set(eos if isinstance(eos, list) else [eos]) & set(generated):
        unused = min(set(range(shape.vocab_size)) - set(generated))
        config["model"]["eos_token_id"] = [unused]
        config_path.write_text(json.dumps(config, indent=4))
    return folder


def load_model(folder: Path, threads: int) -> tuple[Any, Any]:
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
    model = og.Model(config)
    return model, og.Tokenizer(model)


def runtime_tokens(folder: Path, tokens: int) -> tuple[list[int], list[int]]:
    model, tokenizer = load_model(folder, 1)
    ids = [int(t) for t in tokenizer.encode(PROMPT)]
    return ids, _generate(model, tokenizer, tokens)[3]


def _generate(model: Any, tokenizer: Any, tokens: int) -> tuple[float, float, int, list[int]]:
    """(TTFT s, total s, tokens, ids): one greedy Generator loop, as the agent's backend runs it."""
    import onnxruntime_genai as og

    started = time.perf_counter()
    ids = tokenizer.encode(PROMPT)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False, batch_size=1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    stream = tokenizer.create_stream()
    first: float | None = None
    out: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        out.append(token)
        if first is None and stream.decode(token):
            first = time.perf_counter() - started
        elif first is not None:
            stream.decode(token)
    total = time.perf_counter() - started
    del generator
    return first if first is not None else total, total, len(out), out


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    tokens: int
    # The agent's: the runtime's own time for this request in the process that served it (the
    # `timings` its answer ends with, llama.cpp's fields): prompt to first piece, and the rest.
    runtime_prompt_s: float | None = None
    runtime_decode_s: float | None = None
    runtime_decode_tokens: int | None = None

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / max(1e-9, self.total_s - self.ttft_s)

    @property
    def own_overhead_ms(self) -> float:
        """What the agent added to this request's TTFT: the client's TTFT minus the runtime's
        time to the same first piece, in the same process."""
        assert self.runtime_prompt_s is not None, "the agent's answer had no timings"
        return 1000 * (self.ttft_s - self.runtime_prompt_s)

    @property
    def decode_vs_own_runtime(self) -> float:
        """The client's decode rate over the runtime's own rate for the same tokens."""
        assert self.runtime_decode_s and self.runtime_decode_tokens, "no timings"
        return self.decode_tps / (self.runtime_decode_tokens / self.runtime_decode_s)


def runtime_run(
    model: Any, tokenizer: Any, tokens: int, sequences: int
) -> tuple[list[Sample], float]:
    """`sequences` generations at once on threads; (samples, wall seconds)."""
    results: list[Sample] = []
    lock = threading.Lock()

    def one() -> None:
        ttft, total, n, _ = _generate(model, tokenizer, tokens)
        with lock:
            results.append(Sample(ttft, total, n))

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(sequences)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


# -- the agent -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Agent:
    """hatswarm-agent serving one generative model, with its OpenAI door on `http`."""

    def __init__(
        self, folder: Path, threads: int, sequences: int, prefix_cache: int, processes: int = 1
    ) -> None:
        self.port, http = free_port(), free_port()
        self.http = f"http://{HOST}:{http}"
        fd, name = tempfile.mkstemp(prefix="gen-bench-agent-", suffix=".log")
        self.log = Path(name)
        argv = [
            sys.executable, "-m", "hatswarm_agent.cli", "--host", HOST, "--port", str(self.port),
            "--http-port", str(http), "--metrics-port", "0", "--node-name", "bench",
            "--model", f"chat@genai={folder}",
            "--option", f"intra_op_num_threads={threads}",
            "--option", f"max_sequences={sequences}", "--option", "max_queued=0",
            "--option", f"prefix_cache={prefix_cache}", "--option", f"processes={processes}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fd)
        os.close(fd)

    def wait_ready(self, timeout: float = 300.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.http}/v2/models/chat/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("the agent did not get ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


async def agent_stream(session: Any, url: str, tokens: int) -> Sample:
    # Tokens are counted from the usage the stream ends with (what OpenAI's include_usage asks
    # for), never from chunks: a chunk may carry several tokens (a client behind a fast model
    # gets the text that is ready in one chunk) or none (bytes held until they are UTF-8).
    body = {
        "model": "chat", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    started = time.perf_counter()
    first: float | None = None
    usage: dict[str, int] = {}
    timings: dict[str, float] = {}
    async with session.post(f"{url}/v1/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"agent answered {response.status}: {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            doc = json.loads(line[6:])
            if "error" in doc:
                raise RuntimeError(f"agent stream error: {doc['error']}")
            if first is None and doc["choices"] and doc["choices"][0].get("text"):
                first = time.perf_counter() - started
            usage = doc.get("usage") or usage
            timings = doc.get("timings") or timings
    total = time.perf_counter() - started
    if "completion_tokens" not in usage:
        raise RuntimeError("the agent's stream ended without usage: its tokens cannot be counted")
    if "prompt_ms" not in timings:
        raise RuntimeError("the agent's stream ended without timings: its overhead is unknown")
    return Sample(
        first if first is not None else total,
        total,
        int(usage["completion_tokens"]),
        timings["prompt_ms"] / 1000,
        timings["predicted_ms"] / 1000,
        int(timings["predicted_n"]),
    )


async def agent_run(url: str, tokens: int, sequences: int) -> tuple[list[Sample], float]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        samples = await asyncio.gather(
            *(agent_stream(session, url, tokens) for _ in range(sequences))
        )
        return list(samples), time.perf_counter() - started


def prefix_cached_ttft_ms(folder: Path, threads: int, tokens: int) -> float:
    """Median TTFT of a prompt the agent has just served (its prefix cache on, the default):
    what a conversation's next turn costs on the node its affinity sends it to."""
    agent = Agent(folder, threads, 4, prefix_cache=4)
    try:
        agent.wait_ready()
        asyncio.run(agent_run(agent.http, tokens, 1))  # the first turn, cold
        samples = [asyncio.run(agent_run(agent.http, tokens, 1))[0][0] for _ in range(3)]
    finally:
        agent.stop()
    return 1000 * statistics.median(s.ttft_s for s in samples)


def ttft_differences_ms(
    model: Any, tokenizer: Any, url: str, pairs: int
) -> tuple[list[float], list[float]]:
    """For `pairs` 4-token generations, runtime and agent one right after the other (the order
    alternating): the agent's TTFT minus this process's runtime's, and the agent's own overhead
    (its TTFT minus its runtime's time to the same piece), in ms."""
    differences: list[float] = []
    own: list[float] = []
    for i in range(pairs):
        times: dict[str, float] = {}
        for who in ("runtime", "agent") if i % 2 == 0 else ("agent", "runtime"):
            if who == "runtime":
                times[who] = runtime_run(model, tokenizer, 4, 1)[0][0].ttft_s
            else:
                sample = asyncio.run(agent_run(url, 4, 1))[0][0]
                times[who] = sample.ttft_s
                own.append(sample.own_overhead_ms)
        differences.append(1000 * (times["agent"] - times["runtime"]))
    return differences, own


def process_ttft_ms(folder: Path, threads: int, samples: int) -> float:
    """Median TTFT of 4-token generations by the runtime in a fresh process (this script with
    --process-ttft): how far the same prefill's speed moves from one process to the next."""
    argv = [sys.executable, __file__, "--process-ttft", str(folder), str(threads), str(samples)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def _print_process_ttft(folder: str, threads: str, samples: str) -> None:
    model, tokenizer = load_model(Path(folder), int(threads))
    runtime_run(model, tokenizer, 4, 1)  # warm-up
    times = [runtime_run(model, tokenizer, 4, 1)[0][0].ttft_s for _ in range(int(samples))]
    print(1000 * statistics.median(times))


# -- the run ---------------------------------------------------------------------------------------


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def aggregate(samples: list[Sample], wall: float) -> float:
    return sum(s.tokens for s in samples) / wall


def measure(case: Case, threads: int) -> dict[str, Any]:
    folder = build(case.name, case.max_tokens)
    model, tokenizer = load_model(folder, threads)
    runtime_run(model, tokenizer, min(8, case.max_tokens), 1)  # warm-up
    # Paired rounds without the prefix cache: every request prefills its whole prompt, as the
    # runtime's does (with it, a repeated prompt would prefill one token).
    agent = Agent(folder, threads, 4, prefix_cache=0, processes=PROCESSES)
    single = Agent(folder, threads, 4, prefix_cache=0, processes=1)
    rows: list[dict[str, Any]] = []
    load_before = load_average()
    try:
        for a in (agent, single):
            a.wait_ready()
            asyncio.run(agent_run(a.http, min(8, case.max_tokens), 4))  # warm-up
        for r in range(case.rounds):
            row: dict[str, Any] = {}
            order = ("runtime", "agent", "single") if r % 2 == 0 else ("single", "agent", "runtime")
            for who in order:
                for n in (1, 4) if who != "single" else (4,):
                    if who == "runtime":
                        samples, wall = runtime_run(model, tokenizer, case.max_tokens, n)
                    else:
                        url = agent.http if who == "agent" else single.http
                        samples, wall = asyncio.run(agent_run(url, case.max_tokens, n))
                    bad = [s.tokens for s in samples if s.tokens != case.max_tokens]
                    if bad:
                        raise RuntimeError(f"{who} generated {bad} tokens, not {case.max_tokens}")
                    row[f"{who}_{n}"] = {
                        "ttft_ms": 1000 * statistics.median(s.ttft_s for s in samples),
                        "decode_tps": statistics.median(s.decode_tps for s in samples),
                        "aggregate_tps": aggregate(samples, wall),
                    }
                    if who == "agent" and n == 1:
                        row["agent_1"]["own_overhead_ms"] = statistics.median(
                            s.own_overhead_ms for s in samples
                        )
                        row["agent_1"]["decode_vs_own_runtime"] = statistics.median(
                            s.decode_vs_own_runtime for s in samples
                        )
            rows.append(row)
        ttft_pairs, own_pairs = ttft_differences_ms(model, tokenizer, agent.http, case.ttft_pairs)
    finally:
        agent.stop()
        single.stop()
    cached_ttft_ms = prefix_cached_ttft_ms(folder, threads, case.max_tokens)
    # The same runtime's TTFT in this process and in fresh ones: the spread the paired
    # cross-process difference carries (a child process is one such fresh process).
    here = 1000 * statistics.median(
        runtime_run(model, tokenizer, 4, 1)[0][0].ttft_s for _ in range(case.process_samples)
    )
    by_process = [here] + [
        process_ttft_ms(folder, threads, case.process_samples) for _ in range(FRESH_PROCESSES)
    ]
    load_after = load_average()

    def med(key: str, field: str) -> float:
        return statistics.median(row[key][field] for row in rows)

    def paired(a: str, b: str, field: str, *, diff: bool = False) -> float:
        values = [
            row[a][field] - row[b][field] if diff else row[a][field] / row[b][field] for row in rows
        ]
        return statistics.median(values)

    def ratio_of(a: str, field_a: str, b: str, field_b: str) -> float:
        return statistics.median(row[a][field_a] / row[b][field_b] for row in rows)

    # The rounds' paired differences and the short generations' together: a 0.5B model's
    # prefill varies by +-15 ms between runs here, so three rounds alone cannot resolve 5 ms.
    overhead = statistics.median(
        [row["agent_1"]["ttft_ms"] - row["runtime_1"]["ttft_ms"] for row in rows] + ttft_pairs
    )
    own_overhead = statistics.median(
        [row["agent_1"]["own_overhead_ms"] for row in rows] + own_pairs
    )
    figures = {
        key: {f: round(med(key, f), 3) for f in ("ttft_ms", "decode_tps", "aggregate_tps")}
        for key in ("runtime_1", "agent_1", "runtime_4", "agent_4", "single_4")
    }
    return {
        "model": case.name,
        "max_tokens": case.max_tokens,
        "rounds": case.rounds,
        "intra_op_num_threads": threads,
        "processes": PROCESSES,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(load_after, 2),
        "figures": figures,
        "ttft_overhead_ms": round(overhead, 3),
        "ttft_own_overhead_ms": round(own_overhead, 3),
        "ttft_pairs": len(rows) + len(ttft_pairs),
        "ttft_differences_ms": [round(d, 3) for d in ttft_pairs],
        "ttft_own_overheads_ms": [round(d, 3) for d in own_pairs],
        "runtime_ttft_ms_by_process": [round(t, 3) for t in by_process],
        "ttft_prefix_cached_ms": round(cached_ttft_ms, 3),
        "ratios": {
            # Against the runtime in the agent's own child process, on the same requests: what
            # the agent adds, free of the process-to-process speed difference.
            f"{case.name}_decode_tps_agent_vs_its_runtime": {
                "value": round(med("agent_1", "decode_vs_own_runtime"), 3),
                "target": ">= 0.95 (the serving process's own runtime time)",
            },
            f"{case.name}_ttft_agent_vs_its_runtime": {
                "value": round(1 + own_overhead / figures["agent_1"]["ttft_ms"], 3),
                "target": f"overhead <= 5 ms (measured {own_overhead:.2f} ms)",
            },
            # Against the runtime in this process: the process difference included.
            f"{case.name}_decode_tps_agent_vs_runtime": {
                "value": round(paired("agent_1", "runtime_1", "decode_tps"), 3),
                "target": "(against this process's runtime, for reference)",
            },
            f"{case.name}_ttft_agent_vs_runtime": {
                "value": round(paired("agent_1", "runtime_1", "ttft_ms"), 3),
                "target": f"(this process's runtime: {overhead:+.2f} ms, for reference)",
            },
            f"{case.name}_runtime_ttft_process_spread": {
                "value": round((max(by_process) - min(by_process)) / min(by_process), 3),
                "target": "(the same runtime's TTFT, fastest to slowest of "
                f"{len(by_process)} processes, for reference)",
            },
            f"{case.name}_ttft_prefix_cached_vs_cold": {
                "value": round(cached_ttft_ms / figures["agent_1"]["ttft_ms"], 3),
                "target": "< 1 (a follow-up prompt on the node holding its prefix)",
            },
            # Like with like: both sides' tokens over the wall time of the whole run, prefill
            # included (dividing an aggregate by a decode-only rate would count the 4-sequence
            # side's prefill against it alone); the decode-only quotient is kept for reference.
            f"{case.name}_agent_4seq_aggregate_vs_runtime_1seq": {
                "value": round(
                    ratio_of("agent_4", "aggregate_tps", "runtime_1", "aggregate_tps"), 3
                ),
                "target": ">= 1",
            },
            f"{case.name}_agent_4seq_aggregate_vs_runtime_1seq_decode": {
                "value": round(ratio_of("agent_4", "aggregate_tps", "runtime_1", "decode_tps"), 3),
                "target": "(against the decode-only rate, for reference)",
            },
            f"{case.name}_agent_4seq_one_process_aggregate_vs_runtime_1seq": {
                "value": round(
                    ratio_of("single_4", "aggregate_tps", "runtime_1", "aggregate_tps"), 3
                ),
                "target": "(the model in one process, for reference)",
            },
            f"{case.name}_runtime_4seq_aggregate_vs_runtime_1seq": {
                "value": round(
                    ratio_of("runtime_4", "aggregate_tps", "runtime_1", "aggregate_tps"), 3
                ),
                "target": "(the runtime's own concurrency, for reference)",
            },
        },
        "rows": rows,
    }


def run(
    quick: bool = False,
    models: tuple[str, ...] = ("tiny", "qwen05b_int4"),
    chart_path: Path = BENCH_DIR / "generation.png",
) -> dict[str, Any]:
    """Every model's figures; `quick`: the tiny model only, 2 short rounds."""
    threads = 1  # these 2 shared cores: a second spinning intra-op thread only adds noise
    cases = [
        Case("tiny", 32 if quick else 896, 2 if quick else 5, 0 if quick else 20),
        Case("qwen05b_int4", 32, 3, 16),
    ]
    out: dict[str, Any] = {"models": {}, "ratios": {}}
    for case in cases:
        if case.name not in models or (quick and case.name != "tiny"):
            continue
        print(f"  {case.name}: {case.rounds} rounds of {case.max_tokens} tokens", flush=True)
        result = measure(case, threads)
        out["models"][case.name] = result
        out["ratios"].update(result["ratios"])
    if not quick and out["models"]:
        chart(out, chart_path)
    return out


def chart(result: dict[str, Any], path: Path) -> None:
    """Tokens/s and TTFT per model: runtime vs agent (and the agent with one process), 1 and 4
    sequences (needs matplotlib, the operator's `plot` extra)."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib missing (the operator's plot extra): no chart", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = ("runtime_1", "agent_1", "runtime_4", "agent_4", "single_4")
    labels = {"single_4": "agent (1 process), 4 seq"}
    width = 0.16
    for i, key in enumerate(keys):
        tps = [
            result["models"][m]["figures"][key][
                "decode_tps" if key.endswith("_1") else "aggregate_tps"
            ]
            for m in models
        ]
        ttft = [result["models"][m]["figures"][key]["ttft_ms"] for m in models]
        xs = [j + (i - 2) * width for j in range(len(models))]
        label = labels.get(key, key.replace("_", ", ") + " seq")
        axes[0].bar(xs, tps, width, label=label)
        axes[1].bar(xs, ttft, width, label=label)
    for ax, title in zip(
        axes, ("tokens/s (1 seq: decode rate; 4: aggregate)", "TTFT ms (median)"), strict=True
    ):
        ax.set_xticks(range(len(models)), models)
        ax.set_title(title)
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--process-ttft"]:  # a fresh process for process_ttft_ms
        _print_process_ttft(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default="tiny,qwen05b_int4")
    p.add_argument("--json", type=Path)
    p.add_argument("--chart", type=Path, default=BENCH_DIR / "generation.png")
    args = p.parse_args(argv)
    result = run(args.quick, tuple(args.models.split(",")), args.chart)
    for name, ratio in result["ratios"].items():
        print(f"{name:<55} {ratio['value']:9.3f}  {ratio['target']}")
    for name, model in result["models"].items():
        print(
            name,
            json.dumps(model["figures"]),
            "load",
            model["load_average_before"],
            model["load_average_after"],
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.quick:
        chart(result, args.chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
