"""Events posted the way Kubernetes' own recorder posts them: counted, aggregated, rate-limited.

A pool of a thousand nodes says "NodeJoined" a thousand times at start and "Loading" for every
replica; one Event object each would flood the API server and `kubectl describe`. This follows
client-go's EventCorrelator (tools/record/events_cache.go):

- **dedup**: the same event (object, type, reason, message) seen again updates the Event
  already posted (`count` + 1, `lastTimestamp`) instead of posting another; increments that
  arrive within `flush_s` go out as one PATCH;
- **aggregation**: when one object gets `similar_max` (10) events of the same type and reason
  with different messages within `window_s` (10 min), the rest count up on one Event whose
  message is "(combined from similar events): <latest message>";
- **spam filter**: a token bucket per object, type and reason (burst 25, one more every
  5 minutes) drops the excess. (client-go keys it by object only; here a burst of NodeJoined
  at start must not silence the NodeLost that follows.)

Posting runs in a background task: recording never blocks the pool's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hatswarm_operator.kube.session import ApiSession, ApiStatusError

log = logging.getLogger("hatswarm.events")

Obj = dict[str, Any]
COMBINED = "(combined from similar events): "
MAX_MESSAGE = 1024


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Posted:
    """One Event object: its name once created, its count, and what is still to send."""

    involved: Obj
    type: str
    reason: str
    message: str
    first: float
    last: float
    count: int = 1
    name: str = ""
    sent_count: int = 0
    queued: bool = False


@dataclass
class _Similar:
    messages: set[str] = field(default_factory=set)
    last: float = 0.0


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RecorderStats:
    recorded: int = 0
    created: int = 0
    patched: int = 0
    dropped: int = 0
    failed: int = 0


class EventRecorder:
    """`record()` an event; `run()` (a task) posts it. One per operator process."""

    def __init__(
        self,
        session: ApiSession,
        *,
        component: str = "hatswarm-operator",
        instance: str = "",
        clock: Callable[[], float] = time.time,
        window_s: float = 600.0,
        similar_max: int = 10,
        burst: int = 25,
        refill_s: float = 300.0,
        flush_s: float = 1.0,
        cache_size: int = 4096,
    ) -> None:
        self.session = session
        self.component = component
        self.instance = instance or socket.gethostname()
        self.clock = clock
        self.window_s = window_s
        self.similar_max = similar_max
        self.burst = burst
        self.refill_s = refill_s
        self.flush_s = flush_s
        self.cache_size = cache_size
        self.stats = RecorderStats()
        self._posted: OrderedDict[tuple[str, ...], _Posted] = OrderedDict()
        self._similar: OrderedDict[tuple[str, ...], _Similar] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, ...], _Bucket] = OrderedDict()
        self._queue: list[_Posted] = []
        self._wake = asyncio.Event()

    # --- correlation (synchronous, on the caller's tick) -------------------------------------

    @staticmethod
    def _object_key(involved: Obj) -> tuple[str, ...]:
        meta = involved.get("metadata") or involved
        return (
            str(involved.get("kind", "")),
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
        )

    def _allowed(self, key: tuple[str, ...], now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill_s)
        bucket.at = now
        self._remember(self._buckets, key, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _remember(
        self, cache: OrderedDict[tuple[str, ...], Any], key: tuple[str, ...], v: Any
    ) -> None:
        cache[key] = v
        cache.move_to_end(key)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def record(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        """Count, aggregate or drop the event now; the API calls happen in `run()`.

        `involved` is an object reference: apiVersion, kind, name, namespace, uid.
        """
        now = self.clock()
        message = message[:MAX_MESSAGE]
        self.stats.recorded += 1
        group = (*self._object_key(involved), type_, reason)
        if not self._allowed(group, now):
            self.stats.dropped += 1
            return
        similar = self._similar.get(group)
        if similar is None or now - similar.last > self.window_s:
            similar = _Similar()
        similar.messages.add(message)
        similar.last = now
        self._remember(self._similar, group, similar)
        key: tuple[str, ...] = (*group, message)
        if len(similar.messages) >= self.similar_max:
            similar.messages.pop()  # keep the set bounded, as client-go does
            key, message = (*group, COMBINED), COMBINED + message
        posted = self._posted.get(key)
        if posted is None:
            posted = _Posted(involved, type_, reason, message, first=now, last=now)
        else:
            posted.count += 1
            posted.last = now
            posted.message = message
        self._remember(self._posted, key, posted)
        if not posted.queued:
            posted.queued = True
            self._queue.append(posted)
            if not posted.name:
                self._wake.set()  # a new Event goes out at once; increments wait for a flush

    # --- posting (the background task) -----------------------------------------------------

    async def run(self) -> None:
        """Post until cancelled: new Events at once, count updates every `flush_s`."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        queue, self._queue = self._queue, []
        for posted in queue:
            posted.queued = False
            try:
                await self._send(posted)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # events are best effort: never break the recorder
                self.stats.failed += 1
                log.warning("event %s %s: %s", posted.reason, posted.message[:80], err)

    async def _send(self, posted: _Posted) -> None:
        meta = posted.involved.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        path = f"/api/v1/namespaces/{namespace}/events"
        if posted.name and posted.count > posted.sent_count:
            body = {"count": posted.count, "lastTimestamp": _rfc3339(posted.last)}
            if posted.message.startswith(COMBINED):
                body["message"] = posted.message
            try:
                await self.session.patch(f"{path}/{posted.name}", body)
            except ApiStatusError as err:
                if err.code != 404:  # expired (Events live an hour): post it anew below
                    raise
                posted.name = ""
            else:
                posted.sent_count = posted.count
                self.stats.patched += 1
                return
        if posted.name:
            return
        ref = {
            "apiVersion": posted.involved.get("apiVersion", ""),
            "kind": posted.involved.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": namespace,
        }
        if meta.get("uid"):
            ref["uid"] = meta["uid"]
        created = await self.session.post(
            path,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{ref['name']}.", "namespace": namespace},
                "involvedObject": ref,
                "type": posted.type,
                "reason": posted.reason,
                "message": posted.message,
                "count": posted.count,
                "firstTimestamp": _rfc3339(posted.first),
                "lastTimestamp": _rfc3339(posted.last),
                "source": {"component": self.component},
                "reportingComponent": self.component,
                "reportingInstance": self.instance,
            },
        )
        posted.name = str((created.get("metadata") or {}).get("name", ""))
        posted.sent_count = posted.count
        self.stats.created += 1
