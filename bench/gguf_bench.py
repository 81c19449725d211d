"""llama.cpp through the agent vs llama.cpp called directly: time to first token and tokens/s.

The same GGUF (random weights, so no download: a tiny one and one with a real 0.5B decoder
shape — Qwen2-0.5B's hidden size, heads, layers and MLP, a small vocabulary, Q4_0), the same
thread count, the same greedy prompt, in one run. Direct: llama.cpp's own token loop in this
process. Agent: httpx streaming `/v1/completions` (SSE) from a real agent process serving the
file (llama.cpp in the model's child process). The models never emit an end token (tests/ggufmodels.py `never_end`), so both sides
generate exactly `tokens` tokens. tokens/s = tokens / (last piece - request start), the rate a
client sees; decode tokens/s = (tokens - 1) / (last piece - first piece).

What the agent adds is also measured on the very requests it serves, as bench/gen_bench.py does
for onnxruntime-genai: the agent's answer ends with llama.cpp's own time in the child process
that ran it (`timings`: the token iterator and detokenizer calls, up to the first piece and
after it). `decode_vs_own_runtime` is the client's decode rate over that runtime rate for the
same tokens (target >= 0.95), `ttft_own_overhead_ms` the client's TTFT minus the runtime's
prompt time (target <= 5 ms): the same model runs a few percent faster or slower from one
process to the next here, so the direct side (this process) is kept for reference. The tiny
model generates 896 tokens so that its decode window (~100 ms) is long against a stream's fixed
latencies at either end.

    python bench/gguf_bench.py [--quick]
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from agentproc import AgentProcess, free_port, start_agent  # noqa: E402

from tests.ggufmodels import GgufShape, build_gguf_model  # noqa: E402

OUT = ROOT / "bench" / "out"
PROMPT = "once upon a time there was a tiny model on a tiny board."
# Qwen2-0.5B's decoder (hidden 896, 14 heads of 64, 2 KV heads, 24 layers, MLP 4864).
HALF_B = GgufShape(
    hidden_size=896, num_heads=14, num_kv_heads=2, num_layers=24, intermediate_size=4864,
    context_length=1024,
)  # fmt: skip


def threads() -> int:
    """llama.cpp threads on both sides: $GGUF_BENCH_THREADS, default 1. llama.cpp's threads
    meet at a barrier after every operation, so on a host whose cores are busy with other work
    (a shared CI machine) a descheduled thread stalls the rest: with 2 threads on a loaded
    2-core host one 32-token greedy run took anywhere from 0.1 to 4 s. One thread measures the
    per-token overhead of the agent without that noise; on a quiet Pi 5 set it to 4."""
    return max(1, int(os.environ.get("GGUF_BENCH_THREADS", "1")))


def measure(pieces: Any, start: float) -> tuple[float, float, float, int]:
    """(seconds to the first piece, decode tokens/s, end-to-end tokens/s, tokens) of an
    iterator of token counts, timed from `start` (before the request is made)."""
    first = last = 0.0
    count = 0
    for tokens in pieces:
        if not tokens:
            continue
        now = time.perf_counter()
        if not count:
            first = now
        last = now
        count += tokens
    decode = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return first - start, decode, count / (last - start) if count else 0.0, count


def prompt(round_: int) -> str:
    """A different first word each round: no KV-cache prefix is reused, on either side."""
    words = ("once", "the", "a", "hello", "stream", "quick", "tiny", "answer", "edge", "pool")
    return f"{words[round_ % len(words)]} {PROMPT}"


class Direct:
    """llama.cpp's own token loop (`Llama.generate`, greedy), each token detokenized: the least
    Python a caller can put around llama.cpp (create_completion re-detokenizes the whole text
    at every token and would flatter the agent)."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path), n_ctx=1024, n_threads=threads(), n_threads_batch=threads(),
            verbose=False,
        )  # fmt: skip

    def round(self, text: str, tokens: int) -> tuple[float, float, float, int]:
        llm = self.llm

        def pieces() -> Any:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            greedy = llm.generate(ids, top_k=0, top_p=1.0, min_p=0.0, temp=0.0)
            for count, token in enumerate(greedy, 1):
                yield len(llm.detokenize([token])) and 1
                if count >= tokens:
                    return

        return measure(pieces(), time.perf_counter())

    def close(self) -> None:
        self.llm.close()


class ThroughAgent:
    """A client streaming /v1/completions from a real agent process: httpx reading the SSE
    lines, as lean as the direct side (the `openai` client's own parsing, a pydantic model a
    chunk, would count as the agent's overhead)."""

    def __init__(self, path: Path) -> None:
        import httpx

        http = free_port()
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        self.agent: AgentProcess = start_agent(
            [
                "--node-name", "bench", "--log-level", "ERROR",
                "--allow-file-root", str(path.parent),
                "--http-port", str(http),
                "--model", f"m={path}#sha256={sha}", "--option", f"threads={threads()}",
            ],
            timeout=300,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{http}/v1/completions"
        self.client = httpx.Client(timeout=600)
        self.own: list[dict[str, float]] = []  # per round, against the runtime's own timings

    def round(self, text: str, tokens: int) -> tuple[float, float, float, int]:
        body = {
            "model": "m", "prompt": text, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
        }  # fmt: skip
        start = time.perf_counter()
        # A chunk may carry several tokens (the agent sends what is ready as one chunk), so the
        # count comes from usage; chunks give the times of the first and the last piece.
        first = last = 0.0
        count: int | None = None
        timings: dict[str, Any] = {}
        with self.client.stream("POST", self.url, json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                doc = json.loads(line[6:])
                if doc["choices"] and doc["choices"][0].get("text"):
                    last = time.perf_counter()
                    first = first or last
                if doc.get("usage"):
                    count = doc["usage"]["completion_tokens"]
                timings = doc.get("timings") or timings
        if count is None:
            raise RuntimeError("the agent's stream ended without usage (stream_options)")
        if "predicted_ms" not in timings:
            raise RuntimeError("the agent's stream ended without timings: its overhead is unknown")
        decode = (count - 1) / (last - first) if count > 1 and last > first else 0.0
        self.own.append(
            {
                "decode_vs_own_runtime": decode
                / (timings["predicted_n"] / (timings["predicted_ms"] / 1000)),
                "ttft_own_overhead_ms": (first - start) * 1000 - timings["prompt_ms"],
            }
        )
        return first - start, decode, count / (last - start) if count else 0.0, count

    def close(self) -> None:
        self.client.close()
        self.agent.stop()


def compare(
    path: Path, tokens: int, rounds: int
) -> tuple[list[Any], list[Any], list[dict[str, float]]]:
    """Rounds alternate between the two sides (the first of each warms up), so both see the
    same machine: other work on a shared host lands on both."""
    alone, agent = Direct(path), ThroughAgent(path)
    try:
        a, b = [], []
        for i in range(rounds + 1):
            a.append(alone.round(prompt(i), tokens))
            b.append(agent.round(prompt(i), tokens))
        return a[1:], b[1:], agent.own[1:]
    finally:
        agent.close()
        alone.close()


def summary(results: list[tuple[float, float, float, int]]) -> dict[str, float]:
    return {
        "ttft_ms": round(statistics.median(r[0] for r in results) * 1000, 2),
        "decode_tokens_per_s": round(statistics.median(r[1] for r in results), 1),
        "tokens_per_s": round(statistics.median(r[2] for r in results), 1),
        "tokens": min(r[3] for r in results),
    }


def run(quick: bool = False) -> dict[str, Any]:
    d = OUT / "gguf-models"
    d.mkdir(parents=True, exist_ok=True)
    shapes = {"tiny": GgufShape(context_length=1024)}
    if not quick:
        shapes["0.5b-shape-q4_0"] = HALF_B
    rounds, tokens = (4, 32) if quick else (9, 128)
    out: dict[str, Any] = {"threads": threads(), "tokens": tokens, "rounds": rounds}
    for name, shape in shapes.items():
        n = tokens if quick or name != "tiny" else 896  # a ~100 ms decode window for the tiny
        path = d / f"{name}.gguf"
        if not path.exists():
            started = time.perf_counter()
            quant = "Q4_0" if shape is HALF_B else None
            build_gguf_model(
                path, seed=5, shape=shape, chat_template=None, quantize=quant, never_end=True
            )
            out[f"{name}_build_s"] = round(time.perf_counter() - started, 1)
        direct_rounds, agent_rounds, own = compare(path, n, rounds)
        alone, agent = summary(direct_rounds), summary(agent_rounds)
        out[name] = {
            "direct": alone,
            "agent": agent,
            "tokens": n,
            "decode_vs_own_runtime": round(
                statistics.median(o["decode_vs_own_runtime"] for o in own), 3
            ),
            "decode_vs_own_runtime_per_round": [round(o["decode_vs_own_runtime"], 3) for o in own],
            "ttft_own_overhead_ms": round(
                statistics.median(o["ttft_own_overhead_ms"] for o in own), 2
            ),
            "size_mb": round(path.stat().st_size / 1e6, 1),
            "tokens_per_s_agent_vs_direct": round(agent["tokens_per_s"] / alone["tokens_per_s"], 3),
            "ttft_overhead_ms": round(agent["ttft_ms"] - alone["ttft_ms"], 2),
        }
    out["quick"] = quick
    return out


def main() -> int:
    from benchcli import standalone  # bench/ is on sys.path when run as a script

    return standalone(run, OUT / "gguf.json", __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())
