"""A generative pool on this machine: a tiny chat model written at run time (tinyllm.py, no
download), agents holding it, and an entry agent that holds nothing and routes to them.

EdgeModel placement does not cover generative models yet, so these agents run beside a
`hatswarm up` pool with static peers (`--peer`) instead of a pushed routing table. Every agent
has its HTTP doors on (OpenAI /v1, Ollama /api, KServe v2 REST /v2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from hatswarm_operator.local.processes import LocalAgent, NodeSpec, start_agent

MODEL = "chat"


@dataclass
class GenerativePool:
    holders: list[LocalAgent]
    entry: LocalAgent
    model_dir: Path

    @property
    def entry_url(self) -> str:
        """The entry agent's OpenAI-compatible base URL."""
        return f"http://127.0.0.1:{self.entry.http_port}/v1"

    def stop(self) -> None:
        for agent in (self.entry, *self.holders):
            agent.stop()


def build_model(state_dir: Path) -> Path:
    """The bundled tiny chat model (seeded random weights, a ChatML template), written now."""
    from hatswarm_operator.local.tinyllm import build_genai_model  # onnx + tokenizers: demo only

    folder = state_dir / "models" / MODEL
    if not (folder / "genai_config.json").is_file():
        build_genai_model(folder, seed=7)
    return folder


async def start_generative_pool(
    state_dir: Path, holders: int = 2, start_within_s: float = 120.0
) -> GenerativePool:
    """Build the model, start `holders` agents with it and an entry agent that routes to them."""
    folder = await asyncio.to_thread(build_model, state_dir)
    specs = [NodeSpec(f"gen-{i + 1}", "cpu") for i in range(holders)]
    started = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_agent, spec, state_dir, start_within_s, ["--model", f"{MODEL}@genai={folder}"]
            )
            for spec in specs
        ),
        return_exceptions=True,
    )
    agents = [s for s in started if isinstance(s, LocalAgent)]
    errors = [s for s in started if isinstance(s, BaseException)]
    if errors:
        for agent in agents:
            agent.stop()
        raise RuntimeError(f"could not start the generative nodes: {errors[0]}")
    peers = [f"--peer={MODEL}={a.address}" for a in agents]
    try:
        entry = await asyncio.to_thread(
            start_agent, NodeSpec("gen-entry", "cpu"), state_dir, start_within_s, peers
        )
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return GenerativePool(agents, entry, folder)
