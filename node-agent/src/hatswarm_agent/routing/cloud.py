"""Cloud fallback: the pool's last resort, an OIP endpoint outside it, capped by traffic share.

Used only when the pool cannot serve a model (nothing loaded, every replica saturated or down)
and its route allows it. The bearer token is one the agent was started with, by the name the
table gives (`--cloud-token NAME=FILE`: a mounted Secret, re-read when it changes); only the
agent's own static table may name a token file directly. The share of recent requests sent to the cloud never exceeds
`max_share` (a sliding window of one-second buckets), and each request is priced.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from hatswarm_agent.protocol.auth import Metadata, TokenFile, open_channel
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.peers import infer_call

WINDOW_S = 30


class ShareWindow:
    """Requests seen and requests sent to the cloud over the last `window_s` seconds."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, total, cloud]

    def _bucket(self) -> list[int]:
        now = int(self._clock())
        while self._buckets and self._buckets[0][0] <= now - self.window_s:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0])
        return self._buckets[-1]

    def request(self) -> None:
        """Count one request entering the dispatcher."""
        self._bucket()[1] += 1

    def totals(self) -> tuple[int, int]:
        self._bucket()
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def allow(self, max_share: float) -> bool:
        """Whether one more cloud request keeps the cloud's share within `max_share`."""
        if max_share <= 0:
            return False
        total, cloud = self.totals()
        return cloud + 1 <= max_share * max(total, 1) + 1e-9

    def sent(self) -> None:
        self._bucket()[2] += 1


class CloudTarget:
    """The table's cloud endpoint: one channel (rebuilt when the endpoint changes) and a token."""

    def __init__(self, tokens: Mapping[str, Path] | None = None) -> None:
        """`tokens`: the cloud tokens the agent was started with, by name."""
        self.named = {name: TokenFile(path) for name, path in (tokens or {}).items()}
        self.config = control_pb2.CloudFallback()
        self.window = ShareWindow()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None  # grpc.aio.UnaryUnaryMultiCallable (grpc has no type stubs)
        self._tokens: TokenFile | None = None
        self._key: tuple[str, bool, str, str] = ("", False, "", "")

    @property
    def enabled(self) -> bool:
        return bool(self.config.endpoint)

    def configure(self, config: control_pb2.CloudFallback) -> grpc.aio.Channel | None:
        """Adopt a table's cloud section; returns a channel that should now be closed."""
        self.config = config
        key = (config.endpoint, config.tls, config.token_name, config.token_file)
        if key == self._key:
            return None
        old = self._channel
        self._key = key
        self._channel, self._call = None, None
        self._tokens = self._token_source(config)
        return old

    def _token_source(self, config: control_pb2.CloudFallback) -> TokenFile | None:
        """The named token; a token file only from a static table (pushed ones are refused
        before they get here, table.validate_pushed)."""
        if config.token_name:
            return self.named.get(config.token_name)
        return TokenFile(config.token_file) if config.token_file else None

    def cost_usd(self) -> float:
        price = self.config.price_per_1k_usd
        return price / 1000 if math.isfinite(price) and price > 0 else 0.0

    def allow(self) -> bool:
        return self.enabled and self.window.allow(self.config.max_share)

    def metadata(self) -> Metadata:
        return self._tokens.metadata() if self._tokens else ()

    def call(self) -> Any:
        if self._call is None:
            tls = grpc.ssl_channel_credentials() if self.config.tls else None  # system roots
            self._channel = open_channel(self.config.endpoint, tls)
            self._call = infer_call(self._channel)
        return self._call

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._call = None, None
