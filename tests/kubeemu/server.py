"""The emulator's HTTP front: an aiohttp app on 127.0.0.1 in a thread with its own loop.

Serves discovery (legacy, non-aggregated: clients fall back to it), list/watch (chunked JSON
lines), CRUD, patches, the status and scale subresources, and meta.k8s.io Tables for
``kubectl get``. ``/openapi/v3`` is a minimal index whose per-group-version documents
declare that PATCH takes ``fieldValidation`` (so kubectl's default ``--validate=strict`` uses
server-side validation) and carry the schemas of custom resources (``kubectl explain`` works
for them, not for built-in types); ``/openapi/v2`` is 404. Protobuf request bodies (``kubectl create namespace|configmap``
generators), server-side apply and ``dryRun`` are refused with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from .resources import ResourceType
from .store import ApiError, Obj, Store, Subscription
from .tables import build_table

_CLOSE = "__close__"
_VERB = web.RequestKey("kubeemu.verb", str)
_RESOURCE = web.RequestKey("kubeemu.resource", str)
_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0+kubeemu",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA > beta > alpha, then by numbers (higher first)."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if m is None:
        return (0, 0, 0)
    stage = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (stage, int(m.group(1)), int(m.group(3) or 0))


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (for assertions on what a client sent)."""

    method: str
    path: str
    query: str
    content_type: str
    status: int


@dataclass
class RequestCounts:
    """Requests by (verb, resource) and the bytes of their response bodies, since a reset.

    Verbs as Kubernetes' audit log names them: ``list``, ``watch``, ``get``, ``create``,
    ``update``, ``patch``, ``delete``, ``deletecollection``; ``discovery`` for /api, /apis,
    /version and /openapi. The resource is the plural, with ``/status`` or ``/scale`` for a
    subresource. ``watch_events`` counts events streamed to watchers, by resource.
    """

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    response_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    watch_events: Counter[str] = field(default_factory=Counter)
    since: float = field(default_factory=time.monotonic)

    def total(self, verbs: tuple[str, ...] = (), resource: str = "") -> int:
        return sum(
            n
            for (verb, res), n in self.requests.items()
            if (not verbs or verb in verbs) and (not resource or res == resource)
        )


@dataclass
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool


class ApiServer:
    """Serves a :class:`Store` over HTTP; ``start()`` binds 127.0.0.1 on a free port."""

    def __init__(
        self, store: Store, *, token: str | None = None, bookmark_interval: float = 2.0
    ) -> None:
        self.store = store
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.requests: deque[RequestRecord] = deque(maxlen=2000)
        self._counts = RequestCounts()
        self._counts_lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._queues: set[asyncio.Queue[tuple[str, Obj]]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # surfaced to start()'s caller
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="kubeemu", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30):
            raise TimeoutError("kubeemu server did not start within 30s")
        if failure:
            raise failure[0]

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            for queue in list(self._queues):
                queue.put_nowait((_CLOSE, {}))
            if self._runner is not None:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    def counts(self, *, reset: bool = False) -> RequestCounts:
        """A copy of the request counts since the last reset (and reset them if asked)."""
        with self._counts_lock:
            c = self._counts
            copy_ = RequestCounts(
                Counter(c.requests), Counter(c.response_bytes), Counter(c.watch_events), c.since
            )
            if reset:
                self._counts = RequestCounts()
        return copy_

    def _count(self, verb: str, resource: str, nbytes: int) -> None:
        with self._counts_lock:
            self._counts.requests[(verb, resource)] += 1
            self._counts.response_bytes[(verb, resource)] += nbytes

    def _count_watch_event(self, resource: str) -> None:
        with self._counts_lock:
            self._counts.watch_events[resource] += 1

    def expire_watches(self, while_down: Callable[[Store], object] | None = None) -> None:
        """What a real server does after an etcd compaction: every open watch ends, and
        resuming from any resourceVersion seen so far is 410 Gone (clients must relist).

        `while_down(store)` makes changes no watcher sees as an event: it runs after every
        open watch was told to end and before any client can watch again (the store is
        locked meanwhile), so only a relist can tell the clients about them.
        """
        with self.store.locked():
            self.close_watches()
            if while_down is not None:
                while_down(self.store)
            self.store.compact()

    def close_watches(self) -> None:
        """End every open watch stream (clients see a normal end of stream and reconnect)."""
        loop = self._loop
        if loop is None:
            return
        for queue in list(self._queues):
            loop.call_soon_threadsafe(queue.put_nowait, (_CLOSE, {}))

    # -- dispatch ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await self._dispatch(request)
        except ApiError as e:
            response = self._status(e)
        except Exception as e:  # a bug in the emulator: make it visible to the client
            response = self._status(ApiError(500, "InternalError", f"kubeemu: {e!r}"))
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                request.query_string,
                request.headers.get("Content-Type", ""),
                response.status,
            )
        )
        body = getattr(response, "body", None)
        if not request.path.startswith("/kubeemu/"):  # the emulator's own, not the API's
            self._count(
                request.get(_VERB, "discovery"),
                request.get(_RESOURCE, ""),
                len(body) if isinstance(body, bytes) else 0,
            )
        return response

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(body).encode(), status=status, content_type="application/json"
        )

    def _status(self, error: ApiError) -> web.Response:
        return self._json(error.status(), error.code)

    def _authorized(self, request: web.Request) -> bool:
        """A wrong bearer token is refused; none at all is fine (client-go sends none on http)."""
        header = request.headers.get("Authorization")
        if self.token is None or header is None:
            return True
        return header == f"Bearer {self.token}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if not self._authorized(request):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if path.startswith("/kubeemu/"):
            return await self._emulator_endpoint(request, path)
        if path == "/version":
            return self._json(_VERSION)
        if path == "/api":
            return self._json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                }
            )
        if path == "/apis":
            return self._json(self._group_list())
        if path == "/openapi/v3":
            return self._json(self._openapi_index())
        if path.startswith("/openapi/v3/"):
            return self._json(self._openapi_group_version(path[len("/openapi/v3/") :]))
        if path.startswith("/openapi"):
            raise ApiError(404, "NotFound", "kubeemu serves no OpenAPI v2 document")
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) == 2:
            return self._json(self._group(parts[1]))
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return self._json(self._resource_list(group, version))
        target = self._target(group, version, rest)
        return await self._serve_resource(request, target)

    # -- the emulator's own endpoints (no real API server has /kubeemu) -------------------------

    async def _emulator_endpoint(self, request: web.Request, path: str) -> web.Response:
        """For a test or benchmark in another process: ``GET /kubeemu/counts[?reset=true]``
        (the request counts), ``POST /kubeemu/objects`` (a list of manifests put straight into
        the store, status kept), ``POST /kubeemu/expire`` (:meth:`expire_watches`)."""
        if path == "/kubeemu/counts" and request.method == "GET":
            c = self.counts(reset=request.query.get("reset") == "true")
            return self._json(
                {
                    "seconds": time.monotonic() - c.since,
                    "requests": [[v, r, n] for (v, r), n in sorted(c.requests.items())],
                    "response_bytes": [[v, r, n] for (v, r), n in sorted(c.response_bytes.items())],
                    "watch_events": dict(c.watch_events),
                }
            )
        if path == "/kubeemu/objects" and request.method == "POST":
            body = await self._body(request)
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "POST /kubeemu/objects takes a list of objects")
            for manifest in body:
                self.store.put(manifest)
            return self._json({"put": len(body)})
        if path == "/kubeemu/expire" and request.method == "POST":
            self.store.compact()
            for queue in list(self._queues):
                queue.put_nowait((_CLOSE, {}))
            return self._json({"expired": True})
        raise ApiError(404, "NotFound", f"kubeemu has no {request.method} {path}")

    # -- discovery -----------------------------------------------------------------------------

    def _versions(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for rt in self.store.types():
            out.setdefault(rt.group, set()).add(rt.version)
        return out

    def _group(self, name: str) -> Obj:
        versions = self._versions().get(name)
        if not versions or name == "":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ordered = sorted(versions, key=version_priority, reverse=True)
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in ordered]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def _group_list(self) -> Obj:
        names = sorted(g for g in self._versions() if g)
        groups = [self._group(n) for n in names]
        for group in groups:
            del group["kind"], group["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> Obj:
        types = [rt for rt in self.store.types() if (rt.group, rt.version) == (group, version)]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = [
            entry for rt in sorted(types, key=lambda t: t.plural) for entry in rt.discovery()
        ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- OpenAPI v3: just enough for kubectl to see server-side field validation --------------

    def _openapi_index(self) -> Obj:
        paths: Obj = {}
        for group, versions in self._versions().items():
            for version in versions:
                key = f"apis/{group}/{version}" if group else f"api/{version}"
                digest = hashlib.sha256(
                    json.dumps(self._openapi_group_version(key), sort_keys=True).encode()
                ).hexdigest()[:16]
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        return {"paths": paths}

    def _openapi_group_version(self, key: str) -> Obj:
        """Paths with a PATCH that takes ``fieldValidation``, and each custom resource's schema
        (its CRD's ``openAPIV3Schema``) for ``kubectl explain``; built-in types have none."""
        parts = key.split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        types = [rt for rt in self.store.types() if (rt.group, rt.version) == (group, version)]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        paths: Obj = {}
        schemas: Obj = {}
        for rt in types:
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            if rt.schema is not None:
                name = ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"
                schemas[name] = {**rt.schema, "x-kubernetes-group-version-kind": [gvk]}
            operation = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "OK"}},
            }
            paths[f"{prefix}{scope}/{rt.plural}/{{name}}"] = {"patch": operation}
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (kubeemu)", "version": _VERSION["gitVersion"]},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            try:
                candidate = self.store.resource_type(group, version, rest[2])
            except ApiError:
                candidate = None
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.store.resource_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource not in (None, "status", "scale") or (
            subresource == "status" and not rt.status_subresource
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Target(rt, namespace, name, subresource, watch)

    # -- resources -----------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        content_type = request.headers.get("Content-Type", "")
        if "protobuf" in content_type or "cbor" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types"
                f" include: application/json, application/yaml (got {content_type})",
            )
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ApiError(400, "BadRequest", f"cannot decode the request body: {e}") from e

    def _table_wanted(self, request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    def _table(self, request: web.Request, rt: ResourceType, items: list[Obj], rv: str) -> Obj:
        return build_table(
            rt.kind,
            items,
            list(rt.printer_columns) if rt.printer_columns else None,
            is_custom=rt.custom,
            resource_version=rv,
            include_object=request.query.get("includeObject", "Metadata"),
        )

    @staticmethod
    def _field_validation(request: web.Request) -> str:
        mode = request.query.get("fieldValidation", "Warn")
        if mode not in ("Strict", "Warn", "Ignore"):
            raise ApiError(400, "BadRequest", "fieldValidation must be Strict, Warn or Ignore")
        return mode

    @staticmethod
    def _warned(response: web.Response, warnings: list[str]) -> web.Response:
        for warning in warnings:
            response.headers.add("Warning", "299 - " + json.dumps(warning))
        return response

    @staticmethod
    def _verb(method: str, t: _Target, watching: bool) -> str:
        if method == "GET":
            return "watch" if watching else ("list" if t.name is None else "get")
        if method == "DELETE":
            return "deletecollection" if t.name is None else "delete"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())

    async def _serve_resource(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        watching = t.watch or q.get("watch") in ("true", "1")
        request[_VERB] = self._verb(request.method, t, watching)
        request[_RESOURCE] = t.rt.plural + (f"/{t.subresource}" if t.subresource else "")
        if q.get("dryRun"):
            raise ApiError(400, "BadRequest", "kubeemu does not support dryRun")
        method = request.method
        store, rt = self.store, t.rt
        if t.name is None:
            if method == "GET" and (t.watch or q.get("watch") in ("true", "1")):
                return await self._watch(request, t)
            if method == "GET":
                try:
                    limit = int(q.get("limit") or 0)
                except ValueError:
                    raise ApiError(400, "BadRequest", "limit must be an integer") from None
                items, rv, token, remaining = store.list_page(
                    rt,
                    t.namespace,
                    label_selector=q.get("labelSelector", ""),
                    field_selector=q.get("fieldSelector", ""),
                    limit=limit,
                    continue_token=q.get("continue", ""),
                )
                if self._table_wanted(request):
                    return self._json(self._table(request, rt, items, rv))
                meta: Obj = {"resourceVersion": rv}
                if token:
                    meta["continue"] = token
                    meta["remainingItemCount"] = remaining
                return self._json(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": meta,
                        "items": items,
                    }
                )
            if method == "POST":
                body = await self._body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the request body must be an object")
                with store.field_validation(self._field_validation(request)) as warnings:
                    created = store.create(rt, t.namespace, body)
                return self._warned(self._json(created, 201), warnings)
            if method == "DELETE":
                deleted = store.delete_collection(
                    rt,
                    t.namespace,
                    label_selector=q.get("labelSelector", ""),
                    field_selector=q.get("fieldSelector", ""),
                )
                return self._json(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(store.resource_version)},
                        "items": deleted,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        if t.watch:
            raise ApiError(404, "NotFound", "watch a single object with a fieldSelector")
        if method == "GET":
            if t.subresource == "scale":
                return self._json(store.get_scale(rt, t.namespace, t.name))
            obj = store.get(rt, t.namespace, t.name)
            if self._table_wanted(request) and t.subresource is None:
                return self._json(
                    self._table(request, rt, [obj], obj["metadata"]["resourceVersion"])
                )
            return self._json(obj)
        if method == "PUT":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            with store.field_validation(self._field_validation(request)) as warnings:
                replaced = store.replace(rt, t.namespace, t.name, body, subresource=t.subresource)
            return self._warned(self._json(replaced), warnings)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type.startswith("application/apply-patch"):
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "kubeemu does not implement server-side apply: use client-side"
                    " `kubectl apply` (without --server-side)",
                )
            patch_type = _PATCH_TYPES.get(content_type)
            if patch_type is None:
                raise ApiError(
                    415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported"
                )
            body = await self._body(request)
            with store.field_validation(self._field_validation(request)) as warnings:
                patched = store.patch(
                    rt, t.namespace, t.name, patch_type, body, subresource=t.subresource
                )
            return self._warned(self._json(patched), warnings)
        if method == "DELETE":
            options = await self._body(request) or {}
            propagation = q.get("propagationPolicy") or options.get("propagationPolicy")
            obj = store.delete(
                rt,
                t.namespace,
                t.name,
                propagation=propagation or "Background",
                preconditions=options.get("preconditions"),
            )
            return self._json(obj, 202 if obj["metadata"].get("deletionTimestamp") else 200)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed")

    # -- watch ---------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()

        def deliver(event_type: str, obj: Obj) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (event_type, obj))

        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        as_table = self._table_wanted(request)
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        sub: Subscription | None = None
        try:
            sub = self.store.watch(
                t.rt,
                t.namespace,
                deliver,
                since=q.get("resourceVersion"),
                label_selector=q.get("labelSelector", ""),
                field_selector=q.get("fieldSelector", ""),
                send_initial_events=q.get("sendInitialEvents") == "true",
            )
        except ApiError as e:
            if e.code != 410:
                raise
            await response.prepare(request)
            await response.write(
                json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n"
            )
            await response.write_eof()
            return response
        self._queues.add(queue)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        deadline = loop.time() + timeout if timeout else None
        try:
            await response.prepare(request)
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    wait = min(wait, left) if wait is not None else left
                try:
                    event_type, obj = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        self.store.bookmark(sub)
                    continue
                if event_type == _CLOSE:
                    break
                if event_type == "BOOKMARK":
                    initial_end = "annotations" in obj["metadata"]
                    if not bookmarks and not initial_end:
                        continue
                elif as_table:
                    obj = self._table(request, t.rt, [obj], obj["metadata"]["resourceVersion"])
                line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
                self._count_watch_event(t.rt.plural)
                await response.write(line)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._queues.discard(queue)
            self.store.unwatch(sub)
        return response
