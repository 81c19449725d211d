"""llama.cpp through the agent vs llama.cpp called directly: time to first token and tokens/s.

The same GGUF (random weights, so no download: a tiny one and one with a real 0.5B decoder
shape — Qwen2-0.5B's hidden size, heads, layers and MLP, a small vocabulary, Q4_0), the same
thread count, the same greedy prompt, in one run. Direct: llama-cpp-python's
`create_completion(stream=True)` in this process. Agent: the `openai` client streaming
`/v1/completions` from a real agent process serving the file (llama.cpp in the model's child
process). The models never emit an end token (tests/ggufmodels.py `never_end`), so both sides
generate exactly `tokens` tokens. Decode rate = (tokens - 1) / (last piece - first piece).

    python bench/gguf_bench.py [--quick]
"""

from __future__ import annotations

import hashlib
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
    return max(1, len(os.sched_getaffinity(0)))


def measure(pieces: Any) -> tuple[float, float, int]:
    """(seconds to the first piece, decode tokens/s, tokens) of an iterator of token counts."""
    start = time.perf_counter()
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
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return first - start, rate, count


def direct(path: Path, tokens: int, rounds: int) -> list[tuple[float, float, int]]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(path),
        n_ctx=1024,
        n_threads=threads(),
        n_threads_batch=threads(),
        verbose=False,
    )
    try:
        results = []
        for _ in range(rounds + 1):  # the first round warms up
            llm.reset()  # no KV-cache prefix reuse: each round evaluates the prompt (as the agent's)
            stream = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, stream=True)
            results.append(measure(1 for chunk in stream if chunk["choices"][0]["text"]))
        return results[1:]
    finally:
        llm.close()


def through_agent(path: Path, tokens: int, rounds: int) -> list[tuple[float, float, int]]:
    import openai

    http = free_port()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    agent: AgentProcess = start_agent(
        [
            "--node-name", "bench", "--log-level", "ERROR",
            "--allow-file-root", str(path.parent),
            "--http-port", str(http),
            "--model", f"m={path}#sha256={sha}", "--option", f"threads={threads()}",
        ],
        timeout=300,
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="x")
        results = []
        for _ in range(rounds + 1):
            stream = client.completions.create(
                model="m", prompt=PROMPT, max_tokens=tokens, temperature=0, stream=True
            )
            results.append(
                measure(1 for chunk in stream if chunk.choices and chunk.choices[0].text)
            )
        return results[1:]
    finally:
        agent.stop()


def summary(results: list[tuple[float, float, int]]) -> dict[str, float]:
    return {
        "ttft_ms": round(statistics.median(r[0] for r in results) * 1000, 2),
        "tokens_per_s": round(statistics.median(r[1] for r in results), 1),
        "tokens": min(r[2] for r in results),
    }


def run(quick: bool = False) -> dict[str, Any]:
    d = OUT / "gguf-models"
    d.mkdir(parents=True, exist_ok=True)
    shapes = {"tiny": GgufShape(context_length=1024)}
    if not quick:
        shapes["0.5b-shape-q4_0"] = HALF_B
    rounds, tokens = (2, 32) if quick else (5, 128)
    out: dict[str, Any] = {"threads": threads(), "tokens": tokens, "rounds": rounds}
    for name, shape in shapes.items():
        path = d / f"{name}.gguf"
        if not path.exists():
            started = time.perf_counter()
            quant = "Q4_0" if shape is HALF_B else None
            build_gguf_model(
                path, seed=5, shape=shape, chat_template=None, quantize=quant, never_end=True
            )
            out[f"{name}_build_s"] = round(time.perf_counter() - started, 1)
        alone, agent = (
            summary(direct(path, tokens, rounds)),
            summary(through_agent(path, tokens, rounds)),
        )
        out[name] = {
            "direct": alone,
            "agent": agent,
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
