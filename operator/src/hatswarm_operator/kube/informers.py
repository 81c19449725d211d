"""Watch-fed caches: list a collection once, then follow its watch (Kubernetes' informers).

A pool's loop ticks every second; reading Nodes, agent Pods and EdgeModels from the API server
on each tick costs megabytes of JSON a second at a thousand nodes, on a k3s server that is
often a Pi itself. An :class:`Informer` reads a collection once (in pages of `page_size`,
`limit`/`continue`), then follows a watch from the list's resourceVersion with bookmarks, so
a quiet cluster costs one idle connection per collection and no reads at all.

Kubernetes' own rules apply: a watch that ends (server timeout, dropped connection) resumes
from the last resourceVersion seen (an event's or a bookmark's); a `410 Gone` (history
compacted, or an API server restart) relists, and the relist *replaces* the cache, so objects
deleted while the watch was down go away too. (kopf's `@kopf.index` does not drop those: its
indices only ever see events, and a relist sends no DELETED for what vanished meanwhile.)

Each cache keeps a projection of each object (`view`), not the object: a Node's view is its
name, labels, readiness and cordon, so a kubelet's heartbeat that only moves timestamps leaves
the cache, and its `revision`, unchanged. `revision` increases whenever a view changes: a
reader that remembers it knows for free whether there is anything new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from hatswarm_operator.kube.session import ApiSession, ApiStatusError

log = logging.getLogger("hatswarm.informers")

Obj = dict[str, Any]
V = TypeVar("V")

WATCH_TIMEOUT_S = (300, 600)
"""Each watch request asks the server to end it after a random time in this range (as
client-go does), so reconnections spread out instead of arriving together."""
INACTIVITY_S = 120.0
"""A watch silent this long (no event, no bookmark; servers send one a minute) is redone."""


class Expired(Exception):  # noqa: N818 (Kubernetes' name for it)
    """410 Gone: the resourceVersion is older than the server's history; relist."""


@dataclass
class InformerStats:
    lists: int = 0
    """Complete lists (one per start, one per 410); pages are counted in `pages`."""
    pages: int = 0
    watches: int = 0
    events: int = 0
    expired: int = 0
    errors: int = 0


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer(Generic[V]):
    """One collection (a path, selectors) kept in memory as `items`: key -> view.

    `view(obj)` projects an object to what the readers need (None leaves it out). `on_change`
    is called after every batch of changes (a list, or a watch event that changed a view), on
    the event loop. `start()` runs it as a task; `synced` is set after the first list.
    """

    def __init__(
        self,
        session: ApiSession,
        path: str,
        view: Callable[[Obj], V | None],
        *,
        label_selector: str = "",
        field_selector: str = "",
        page_size: int = 500,
        on_change: Callable[[], None] | None = None,
        name: str = "",
    ) -> None:
        self.session = session
        self.path = path
        self.view = view
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.on_change = on_change
        self.name = name or path
        self.items: dict[str, V] = {}
        self.revision = 0
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.stats = InformerStats()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_synced(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bounded wait)
        if self.synced.is_set():
            return True  # the common case, without yielding to the loop
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- the loop --------------------------------------------------------------------------

    def _selectors(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def _run(self) -> None:
        backoff = 0.5
        listed = False
        failures = 0
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                await self._watch()
                backoff, failures = 0.5, 0
            except asyncio.CancelledError:
                raise
            except Expired:
                self.stats.expired += 1
                log.info("%s: resourceVersion expired (410), relisting", self.name)
                listed = False
            except (ApiStatusError, httpx.HTTPError, ValueError, KeyError) as err:
                # A failed watch resumes from the last resourceVersion, a failed list lists
                # again; a watch failing again and again (a 403: no `watch` in the RBAC) lists
                # each time, so the cache is never older than the backoff.
                self.stats.errors += 1
                failures += 1
                listed = listed and failures < 3
                log.warning("%s: %s: %s", self.name, type(err).__name__, err)
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 30.0)

    async def _list(self) -> None:
        fresh: dict[str, V] = {}
        params = {**self._selectors(), "limit": str(self.page_size)}
        resource_version = ""
        while True:
            try:
                body = await self.session.get(self.path, params)
            except ApiStatusError as err:
                if err.code == 410:  # a continue token older than the history
                    raise Expired(str(err)) from err
                raise
            self.stats.pages += 1
            for obj in body.get("items") or []:
                view = self.view(obj)
                if view is not None:
                    fresh[object_key(obj)] = view
            meta = body.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or ""
            if not token:
                break
            params["continue"] = token
        self.stats.lists += 1
        changed = fresh != self.items
        self.items = fresh
        self.resource_version = resource_version
        if changed:
            self.revision += 1
        self.synced.set()
        if changed and self.on_change is not None:
            self.on_change()

    async def _watch(self) -> None:
        params = {
            **self._selectors(),
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": str(random.randint(*WATCH_TIMEOUT_S)),
        }
        self.stats.watches += 1
        try:
            async for event in self.session.watch(self.path, params, inactivity_s=INACTIVITY_S):
                self._apply(event)
        except ApiStatusError as err:
            if err.code == 410:
                raise Expired(str(err)) from err
            raise
        except httpx.ReadTimeout:
            log.info("%s: watch silent for %ss, reconnecting", self.name, INACTIVITY_S)

    def _apply(self, event: Obj) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            if code == 410:
                raise Expired(str(obj.get("message", "")))
            raise ApiStatusError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        self.stats.events += 1
        key = object_key(obj)
        view = None if kind == "DELETED" else self.view(obj)
        old = self.items.get(key)
        if view is None:
            self.items.pop(key, None)
        else:
            self.items[key] = view
        self.resource_version = rv or self.resource_version
        if view != old:
            self.revision += 1
            if self.on_change is not None:
                self.on_change()
