"""LocalStream: a generation on this node is counted once, however its caller goes away."""

from __future__ import annotations

import asyncio

from hatswarm_agent.backends.generation import Outcome, Piece, TokenStream
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.serving.generation import LocalStream
from hatswarm_agent.serving.metrics import AgentMetrics
from hatswarm_agent.serving.registry import ModelVersion


def entry() -> tuple[ModelVersion, AgentMetrics]:
    metrics = AgentMetrics()
    version = ModelVersion("gen", "1", control_pb2.LoadModelRequest(name="gen"), "genai")
    version.metrics = metrics.model("gen", "1")
    return version, metrics


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"model": "gen", "version": "1", **labels})
    return value or 0.0


async def test_a_close_cancelled_while_the_producer_stops_still_counts_the_generation() -> None:
    """aiohttp cancels a handler whose client went away, often while the handler is already
    closing its stream after a failed write: the count must not depend on that race."""
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stream = TokenStream(3, cancel=lambda: None, finished=finished)
    stream.push(Piece("a", 1))
    version, metrics = entry()
    local = LocalStream(stream, version, "n1", 0.0)
    assert (await local.__anext__()).text == "a"

    closing = asyncio.create_task(local.aclose())
    await asyncio.sleep(0)  # waiting for the producer to stop
    closing.cancel()  # the handler's second cancellation
    await asyncio.gather(closing, return_exceptions=True)
    assert sample(metrics, "hatswarm_inference_request_failure_total", reason="cancelled") == 0

    stream.push(Outcome("stop", 2, 3))  # the producer stops at its next token
    finished.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sample(metrics, "hatswarm_inference_request_failure_total", reason="cancelled") == 1
    assert version.stats.failure == 1
    await local.aclose()  # a second close counts nothing more
    assert version.stats.failure == 1
