"""A stand-in for a cloud LLM: a real OpenAI-compatible HTTP server, run as its own process.

It is a test double for what cannot exist here (a hosted model behind an API key), speaking
the wire format the agent's cloud fallback must handle: `POST /v1/chat/completions` and
`/v1/completions`, streamed as server-sent events with a usage chunk when
`stream_options.include_usage` asks for one, OpenAI's error shape, a bearer token. Its
"tokenizer" is whitespace words; it answers `max_tokens` (default 8) words `cloud0 cloud1 ...`.
`GET /stats` says what it saw: calls, prompt and completion tokens, models, prompts, refused
tokens, so a test can check the agent's counts against the cloud's own.

    python -m tests.cloudllm --port 8123 --token secret [--delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web

from tests.agentproc import free_port


def count_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    return len(str(body.get("prompt", "")).split())


def make_app(token: str, delay_s: float) -> web.Application:
    stats: dict[str, Any] = {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "models": [],
        "prompts": [],
        "unauthorized": 0,
    }

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "test"}}, status=status)

    async def complete(request: web.Request) -> web.StreamResponse:
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            stats["unauthorized"] += 1
            return error(401, "bad api key")
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        if body.get("model") == "refuse-me":
            return error(400, "model refuse-me refuses everything")
        stats["calls"] += 1
        stats["models"].append(body.get("model"))
        stats["prompts"].append(body.get("messages") if chat else body.get("prompt"))
        prompt = count_tokens(body)
        n = int(body.get("max_tokens") or 8)
        stats["prompt_tokens"] += prompt
        stats["completion_tokens"] += n
        words = [f"cloud{i} " for i in range(n)]
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            text = "".join(words)
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text}
            )
            return web.json_response(
                {"id": "c1", "object": kind, "model": body.get("model"),
                 "choices": [{**choice, "finish_reason": "length"}], "usage": usage}
            )  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(doc: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(doc)}\n\n".encode())

        for i, word in enumerate(words):
            if delay_s:
                await asyncio.sleep(delay_s)
            last = i == n - 1
            delta = {"delta": {"content": word}} if chat else {"text": word}
            await send(
                {"id": "c1", "object": f"{kind}.chunk", "model": body.get("model"),
                 "choices": [{"index": 0, **delta, "finish_reason": "length" if last else None}]}
            )  # fmt: skip
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"id": "c1", "object": f"{kind}.chunk", "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    app.router.add_get("/stats", get_stats)
    return app


@dataclass
class CloudLLM:
    base_url: str  # ".../v1"
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(self.base_url.removesuffix("/v1") + "/stats").json()
        return doc


@contextmanager
def running(token: str = "", delay_ms: int = 0) -> Iterator[CloudLLM]:
    """The stand-in in a child process, ready to answer; stopped at the end."""
    port = free_port()
    args = ["--port", str(port), "--token", token, "--delay-ms", str(delay_ms)]
    proc = subprocess.Popen([sys.executable, "-m", "tests.cloudllm", *args])
    cloud = CloudLLM(f"http://127.0.0.1:{port}/v1", proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                cloud.stats()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the cloud stand-in did not start") from None
                time.sleep(0.05)
        yield cloud
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    web.run_app(
        make_app(args.token, args.delay_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        print=None,
    )


if __name__ == "__main__":
    main()
