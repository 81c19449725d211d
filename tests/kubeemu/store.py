"""The emulator's state: objects, one global resourceVersion, watch history, garbage collection.

Thread-safe (one re-entrant lock): the HTTP server thread and the test's own thread both call
it. Everything an HTTP request can do is a method here, so tests can also create Pods, Nodes
or anything else directly and assert on state without going through HTTP.

Semantics, as the real API server (differences are called out):

- one monotonically increasing ``resourceVersion`` over all objects; no-op writes do not
  bump it nor emit events;
- watch history is bounded (``history_size`` events); ``watch(since=...)`` older than the
  retained window raises 410 Gone; :meth:`Store.compact` drops it all on demand;
- lists page with ``limit``/``continue`` (:meth:`Store.list_page`): every page shows the
  first page's snapshot, and a continue token older than the history is 410 Gone;
- writes to an object with a status subresource ignore ``status``; ``/status`` writes change
  only ``status``; ``metadata.generation`` increments when anything but metadata (and status,
  if it is a subresource) changes, and when ``deletionTimestamp`` is set;
- delete: objects with finalizers get ``deletionTimestamp`` and stay until the last
  finalizer is removed; no new finalizers may be added meanwhile; Pods are deleted at once
  (no kubelet, no grace period);
- garbage collection runs synchronously (background propagation): dependents whose every
  ``ownerReferences`` uid is gone are deleted, references to a deleted owner are dropped
  from dependents that still have another owner; ``propagationPolicy=Orphan`` skips it;
- deleting a Namespace deletes its content, then the Namespace; deleting a CRD deletes its
  custom resources, then the CRD and its discovery entries;
- HTTP creates drop ``status`` for kinds with a status subresource (like the real server);
  :meth:`Store.put` keeps it (a test backdoor to create a Running Pod or a Ready Node).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import copy
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import patches, schema
from .resources import BUILTIN_TYPES, ResourceType, types_from_crd
from .tables import jsonpath

T = TypeVar("T")
Obj = dict[str, Any]
Deliver = Callable[[str, Obj], None]
Hook = Callable[[str, ResourceType, Obj], None]

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_NAME_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character"
)
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


class ApiError(Exception):
    """An API failure, rendered by the server as a ``Status`` with this code and reason."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors -----------------------------------------------------------------------------

Requirement = tuple[str, str, tuple[str, ...]]  # key, op (=, !=, in, notin, exists, !), values


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ = re.compile(r"^([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)$")
_KEY = re.compile(r"^(!?)\s*([A-Za-z0-9_./-]+)$")


def parse_label_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        if m := _SET.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif m := _EQ.match(part):
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _KEY.match(part):
            reqs.append((m.group(2), "!" if m.group(1) else "exists", ()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return reqs


def parse_field_selector(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        m = _EQ.match(part)
        if m is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
    return reqs


def _requirement_holds(has: bool, value: str | None, op: str, values: tuple[str, ...]) -> bool:
    if op == "exists":
        return has
    if op == "!":
        return not has
    if op == "=":
        return has and value == values[0]
    if op == "!=":
        return not has or value != values[0]
    if op == "in":
        return has and value in values
    return not has or value not in values  # notin


def _labels_match(obj: Obj, reqs: list[Requirement]) -> bool:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return all(
        _requirement_holds(key in labels, labels.get(key), op, values) for key, op, values in reqs
    )


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return str(node).lower()
    return str(node)


def _fields_match(obj: Obj, reqs: list[Requirement]) -> bool:
    for key, op, values in reqs:
        equal = _field_value(obj, key) == values[0]
        if equal != (op == "="):
            return False
    return True


def _encode_continue(rv: int, after: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "ns": after[0], "name": after[1]}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError) as e:
        raise ApiError(400, "BadRequest", f"invalid continue token {token!r}") from e


# --- watch plumbing ------------------------------------------------------------------------


@dataclass
class Subscription:
    """A live watch: events of one resource type, filtered, pushed to ``deliver``."""

    rt: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: list[Requirement]
    deliver: Deliver

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return _labels_match(obj, self.labels) and _fields_match(obj, self.fields)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: tuple[str, str]
    obj: Obj
    old: Obj | None = None


@dataclass
class _Txn:
    depth: int = 0
    hooks: list[tuple[str, ResourceType, Obj]] = field(default_factory=list)
    field_validation: str = "Ignore"
    warnings: list[str] = field(default_factory=list)


def _get_path(obj: Obj, path: str) -> Any:
    found = jsonpath(obj, path)
    return found[0] if found else None


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = [p for p in path.strip().lstrip(".").split(".") if p]
    node = obj
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


# --- the store -----------------------------------------------------------------------------


class Store:
    """All objects of the emulated cluster (see the module docstring for the semantics)."""

    def __init__(self, *, history_size: int = 2000) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rv = 0
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._history: deque[Event] = deque()
        self.history_size = history_size
        self._floor = 0
        self._subs: builtins.list[Subscription] = []
        self._hooks: builtins.list[tuple[Hook, str | None, frozenset[str]]] = []
        self._txn = threading.local()
        self._orphaning: set[str] = set()
        self.hook_errors: builtins.list[Exception] = []
        for rt in BUILTIN_TYPES:
            self._types[(rt.group, rt.version, rt.plural)] = rt
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # -- types ---------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def types(self) -> builtins.list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        with self._lock:
            rt = self._types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        """The resource type of a manifest's ``apiVersion`` and ``kind``."""
        group, _, version = api_version.rpartition("/")
        with self._lock:
            for rt in self._types.values():
                if (rt.group, rt.version, rt.kind) == (group, version, kind):
                    return rt
        raise ApiError(404, "NotFound", f"no matches for kind {kind!r} in version {api_version!r}")

    def _register_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for key in [k for k in self._types if (k[0], k[2]) == (group, plural)]:
            del self._types[key]
        for rt in types_from_crd(crd):
            self._types[(rt.group, rt.version, rt.plural)] = rt
        self._objects.setdefault((group or "", plural or ""), {})

    def _unregister_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for key in [k for k in self._types if (k[0], k[2]) == (group, plural)]:
            del self._types[key]

    # -- hooks and waiting ---------------------------------------------------------------------

    def add_hook(
        self, fn: Hook, *, kind: str | None = None, events: tuple[str, ...] = ("ADDED",)
    ) -> Callable[[], None]:
        """Call ``fn(event_type, rt, obj)`` after each matching change; returns a remover.

        Hooks run in the thread that made the change (often the HTTP server's), after the
        store's lock is released; they may call the store (e.g. create a Pod for a new
        DaemonSet) but must not block for long. Their exceptions are kept in
        ``hook_errors`` (the ``kube_api`` fixture fails the test on them).
        """
        entry = (fn, kind, frozenset(events))
        with self._lock:
            self._hooks.append(entry)

        def remove() -> None:
            with self._lock:
                if entry in self._hooks:
                    self._hooks.remove(entry)

        return remove

    def wait_for(self, predicate: Callable[[Store], T], *, timeout: float = 10.0) -> T:
        """Block until ``predicate(store)`` is truthy (re-checked on every change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"store condition not met within {timeout}s")
                self._cond.wait(min(remaining, 0.5))

    async def wait_for_async(
        self,
        predicate: Callable[[Store], T],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the wait happens in a worker thread
    ) -> T:
        """:meth:`wait_for` for async tests: waits in a worker thread, not on the loop."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout=timeout)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        txn: _Txn = getattr(self._txn, "state", None) or _Txn()
        self._txn.state = txn
        txn.depth += 1
        try:
            with self._lock:
                yield
        finally:
            txn.depth -= 1
            if txn.depth == 0:
                pending, txn.hooks = txn.hooks, []
                with self._lock:
                    hooks = list(self._hooks)
                for event_type, rt, obj in pending:
                    for fn, kind, events in hooks:
                        if event_type in events and kind in (None, rt.kind):
                            try:
                                fn(event_type, rt, copy.deepcopy(obj))
                            except Exception as e:  # kept for the fixture to report
                                self.hook_errors.append(e)

    # -- reading -------------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rt.key, {})

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{rt.qualified} "{name}" not found',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _ns(self, rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            obj = self._bucket(rt).get((self._ns(rt, namespace), name))
            if obj is None:
                raise self._not_found(rt, name)
            return self._view(rt, obj)

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[builtins.list[Obj], str]:
        """Objects (all namespaces when ``namespace`` is None) and the list's resourceVersion."""
        sub = Subscription(
            rt,
            namespace if rt.namespaced else None,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector),
            lambda _t, _o: None,
        )
        with self._lock:
            items = [
                self._view(rt, o)
                for (ns, name), o in sorted(self._bucket(rt).items())
                if sub.matches(o)
            ]
            return items, str(self._rv)

    def list_page(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> tuple[builtins.list[Obj], str, str, int | None]:
        """One page of a list: (items, resourceVersion, continue token, remainingItemCount).

        As the real server: every page of one list shows the objects as they were at the
        first page's resourceVersion (a consistent snapshot, rebuilt here from the watch
        history), pages are in key order, and a continue token older than the retained
        history is 410 Gone. ``limit`` 0 means everything; the token is opaque to clients.
        """
        sub = Subscription(
            rt,
            namespace if rt.namespaced else None,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector),
            lambda _t, _o: None,
        )
        with self._lock:
            if continue_token:
                snapshot, after = _decode_continue(continue_token)
                if snapshot < self._floor:
                    raise ApiError(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent"
                        " list result. You can start a new list without the continue"
                        " parameter.",
                    )
                objects = self._snapshot(rt, snapshot)
            else:
                snapshot, after = self._rv, None
                objects = dict(self._bucket(rt))
            keys = sorted(k for k in objects if after is None or k > after)
            matching = [k for k in keys if sub.matches(objects[k])]
            page = matching[:limit] if limit > 0 else matching
            rest = len(matching) - len(page)
            token = _encode_continue(snapshot, page[-1]) if rest > 0 else ""
            items = [self._view(rt, objects[k]) for k in page]
            return items, str(snapshot), token, (rest if rest > 0 else None)

    def _snapshot(self, rt: ResourceType, rv: int) -> dict[tuple[str, str], Obj]:
        """The objects of ``rt`` as they were at resourceVersion ``rv`` (within history)."""
        objects = dict(self._bucket(rt))
        seen: set[tuple[str, str]] = set()
        for event in self._history:
            if event.rv <= rv or event.key != rt.key:
                continue
            meta = event.obj["metadata"]
            slot = (meta.get("namespace", ""), meta["name"])
            if slot in seen:
                continue
            seen.add(slot)  # the first change after the snapshot holds the object as it was
            if event.old is None:
                objects.pop(slot, None)
            else:
                objects[slot] = event.old
        return objects

    def find(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        selector: str = "",
        fields: str = "",
        **labels: str,
    ) -> builtins.list[Obj]:
        """Test helper: every object of ``kind`` (core group first for ``Event``).

        Optionally in one namespace, matching a label ``selector`` string (for keys such as
        ``app.kubernetes.io/name``), a field selector, and/or ``key=value`` labels.
        """
        with self._lock:
            rts = [rt for rt in self._types.values() if rt.kind == kind]
            if not rts:
                return []
            parts = [selector] if selector else []
            parts += [f"{k}={v}" for k, v in labels.items()]
            return self.list(
                rts[0], namespace, label_selector=",".join(parts), field_selector=fields
            )[0]

    # -- committing ----------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, event_type: str, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        slot = (meta.get("namespace", ""), meta["name"])
        if event_type == "DELETED":
            self._bucket(rt).pop(slot, None)
        else:
            self._bucket(rt)[slot] = obj
        event = Event(self._rv, event_type, rt.key, copy.deepcopy(obj), old)
        self._history.append(event)
        while len(self._history) > self.history_size:
            self._floor = self._history.popleft().rv
        for sub in list(self._subs):
            if sub.rt.key == rt.key:
                self._deliver(sub, event)
        txn: _Txn = self._txn.state
        txn.hooks.append((event_type, rt, copy.deepcopy(obj)))
        self._cond.notify_all()
        return self._view(rt, obj)

    def _deliver(self, sub: Subscription, event: Event) -> None:
        now_in, was_in = sub.matches(event.obj), sub.matches(event.old)
        if event.type == "MODIFIED" and now_in and not was_in:
            kind = "ADDED"
        elif event.type == "MODIFIED" and was_in and not now_in:
            kind = "DELETED"
        elif now_in:
            kind = event.type
        else:
            return
        sub.deliver(kind, self._view(sub.rt, event.obj))

    # -- creating ------------------------------------------------------------------------------

    def put(self, manifest: Obj, *, namespace: str | None = None) -> Obj:
        """Test backdoor: create ``manifest`` (by its apiVersion/kind), keeping its status."""
        rt = self.type_for(manifest["apiVersion"], manifest["kind"])
        ns = namespace or (manifest.get("metadata") or {}).get("namespace")
        return self.create(rt, ns, manifest, keep_status=True)

    def create(
        self, rt: ResourceType, namespace: str | None, body: Obj, *, keep_status: bool = False
    ) -> Obj:
        with self._transaction():
            obj = copy.deepcopy(body)
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            meta = obj.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise ApiError(400, "BadRequest", "metadata must be an object")
            ns = self._ns(rt, namespace or meta.get("namespace"))
            if rt.namespaced:
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace"
                        " sent on the request",
                    )
                meta["namespace"] = ns
                namespace_obj = self._objects.get(NS_KEY, {}).get(("", ns))
                if namespace_obj is None:
                    raise ApiError(
                        404,
                        "NotFound",
                        f'namespaces "{ns}" not found',
                        {"name": ns, "kind": "namespaces"},
                    )
                if namespace_obj["metadata"].get("deletionTimestamp"):
                    raise ApiError(
                        403,
                        "Forbidden",
                        f"unable to create new content in namespace {ns} because it is being"
                        " terminated",
                    )
            else:
                meta.pop("namespace", None)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise self._invalid(
                        rt,
                        "",
                        [
                            schema.Cause(
                                "metadata.name",
                                "FieldValueRequired",
                                "Required value: name or generateName is required",
                            )
                        ],
                    )
                while True:
                    suffix = "".join(random.choices(_SUFFIX, k=5))
                    meta["name"] = f"{meta['generateName']}{suffix}"
                    if (ns, meta["name"]) not in self._bucket(rt):
                        break
            name = meta["name"]
            if not _NAME.match(name) or len(name) > 253:
                cause = schema.Cause(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": {_NAME_MESSAGE}',
                )
                raise self._invalid(rt, name, [cause])
            if (ns, name) in self._bucket(rt):
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{rt.qualified} "{name}" already exists',
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
                meta.pop(key, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            if rt.status_subresource and not keep_status:
                obj.pop("status", None)
            self._admit_create(rt, obj)
            if rt.custom:
                self._check_schema(rt, obj, None)
            if rt.key == CRD_KEY:
                self._check_crd(obj)
                self._register_crd(obj)
            return self._commit(rt, "ADDED", obj, None)

    def _admit_create(self, rt: ResourceType, obj: Obj) -> None:
        """What the real server's built-in strategies fill in on create."""
        if rt.key == NS_KEY:
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {})["phase"] = "Active"
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif rt.kind == "Pod" and rt.group == "":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif rt.kind == "Service" and rt.group == "":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") is None:
                count = len(self._bucket(rt)) + 10
                spec["clusterIP"] = f"10.43.{count // 250}.{count % 250 + 1}"
        elif rt.key == CRD_KEY:
            spec = obj.get("spec") or {}
            names = dict(spec.get("names") or {})
            names.setdefault("singular", str(names.get("kind", "")).lower())
            names.setdefault("listKind", f"{names.get('kind')}List")
            obj["status"] = {
                "acceptedNames": names,
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "message": m,
                        "lastTransitionTime": now(),
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
                "storedVersions": [
                    v["name"] for v in spec.get("versions") or [] if v.get("storage")
                ],
            }

    def _check_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        for path, value in (
            ("spec.group", spec.get("group")),
            ("spec.names.plural", names.get("plural")),
            ("spec.names.kind", names.get("kind")),
            ("spec.versions", spec.get("versions")),
        ):
            if not value:
                causes.append(schema.Cause(path, "FieldValueRequired", "Required value"))
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if not causes and crd["metadata"]["name"] != expected:
            causes.append(
                schema.Cause(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{crd["metadata"]["name"]}": must be spec.names.plural+"."'
                    "+spec.group",
                )
            )
        if causes:
            rt = self._types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
            raise self._invalid(rt, crd["metadata"]["name"], causes)

    def _invalid(
        self, rt: ResourceType, name: str, causes: builtins.list[schema.Cause]
    ) -> ApiError:
        kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
        rendered = [c.render() for c in causes]
        text = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
        return ApiError(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {text}',
            {
                "name": name,
                "group": rt.group,
                "kind": rt.kind,
                "causes": [c.as_dict() for c in causes],
            },
        )

    def _check_schema(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rt.schema is None:
            return
        dropped: builtins.list[str] = []
        schema.prune(obj, rt.schema, root=True, dropped=dropped)
        mode = getattr(self._txn.state, "field_validation", "Ignore")
        if dropped and mode == "Strict":
            unknown = ", ".join(f'unknown field "{d}"' for d in dropped)
            raise ApiError(400, "BadRequest", f"strict decoding error: {unknown}")
        if dropped and mode == "Warn":
            self._txn.state.warnings += [f'unknown field "{d}"' for d in dropped]
        schema.apply_defaults(obj, rt.schema)
        causes = schema.validate(obj, rt.schema, old)
        if causes:
            raise self._invalid(rt, obj["metadata"]["name"], causes)

    @contextmanager
    def field_validation(self, mode: str) -> Iterator[builtins.list[str]]:
        """Writes in this block (this thread) validate unknown fields as ``mode``.

        ``Strict`` refuses them (400), ``Warn`` collects warnings into the yielded list,
        ``Ignore`` (the default for direct store calls) prunes them silently.
        """
        with self._transaction():
            state: _Txn = self._txn.state
            previous, state.field_validation, state.warnings = state.field_validation, mode, []
            try:
                yield state.warnings
            finally:
                state.field_validation = previous

    # -- updating ------------------------------------------------------------------------------

    def _stored(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(rt).get((self._ns(rt, namespace), name))
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    def _conflict(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been'
            " modified; please apply your changes to the latest version and try again",
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PUT: replace the object (or its status / scale), optimistic on resourceVersion."""
        with self._transaction():
            old = self._stored(rt, namespace, name)
            if subresource == "scale":
                return self._write_scale(rt, old, body)
            meta = body.get("metadata") or {}
            if meta.get("name") and meta["name"] != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                )
            wanted = meta.get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise self._conflict(rt, name)
            return self._update(rt, old, copy.deepcopy(body), subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
    ) -> Obj:
        """PATCH with ``merge`` (merge-patch), ``strategic`` or ``json`` (JSON-patch)."""
        with self._transaction():
            old = self._stored(rt, namespace, name)
            current = self._view(rt, old)
            if subresource == "scale":
                current = self._scale_of(rt, old)
            try:
                if patch_type == "json":
                    new = patches.json_patch(current, patch)
                elif patch_type == "strategic":
                    new = patches.strategic_merge_patch(current, patch)
                else:
                    new = patches.merge_patch(current, patch)
            except patches.PatchError as e:
                raise ApiError(422, "Invalid", str(e)) from e
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "the patched object is not an object")
            if patch_type != "json" and isinstance(patch, dict):
                wanted = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != old["metadata"]["resourceVersion"]:
                    raise self._conflict(rt, name)
            if subresource == "scale":
                return self._write_scale(rt, old, new)
            return self._update(rt, old, new, subresource)

    def _update(self, rt: ResourceType, old: Obj, new: Obj, subresource: str | None) -> Obj:
        name = old["metadata"]["name"]
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        elif subresource is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            result = new
            result["apiVersion"], result["kind"] = rt.api_version, rt.kind
            meta = result.setdefault("metadata", {})
            for key in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "name",
                "namespace",
            ):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if rt.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or []
                )
                if added:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'{rt.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new'
                        " finalizers can be added if the object is being deleted, found new"
                        f" finalizers {sorted(added)}",
                    )
            if rt.key == CRD_KEY:
                self._check_crd(result)
        if rt.custom:
            self._check_schema(rt, result, self._view(rt, old))
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        result["apiVersion"], result["kind"] = old.get("apiVersion"), old.get("kind")
        if result == old:
            return self._view(rt, old)  # a no-op: no new resourceVersion, no event
        ignored = {"metadata", "status"} if rt.status_subresource else {"metadata"}
        if subresource is None and {k: v for k, v in result.items() if k not in ignored} != {
            k: v for k, v in old.items() if k not in ignored
        }:
            result["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if rt.key == CRD_KEY:
            self._register_crd(result)
        out = self._commit(rt, "MODIFIED", result, copy.deepcopy(old))
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self._remove(rt, result)
        return out

    # -- scale ---------------------------------------------------------------------------------

    def _scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.scale is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        spec_path, status_path, selector_path = rt.scale
        meta = obj["metadata"]
        status: Obj = {"replicas": _get_path(obj, status_path) or 0}
        if selector_path:
            selector = _get_path(obj, selector_path)
            if selector is not None:
                status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": _get_path(obj, spec_path) or 0},
            "status": status,
        }

    def get_scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        with self._lock:
            return self._scale_of(rt, self._stored(rt, namespace, name))

    def _write_scale(self, rt: ResourceType, old: Obj, scale: Obj) -> Obj:
        if rt.scale is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        wanted = (scale.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise self._conflict(rt, old["metadata"]["name"])
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int):
            raise ApiError(422, "Invalid", "spec.replicas: Required value")
        new = self._view(rt, old)
        _set_path(new, rt.scale[0], replicas)
        new["metadata"].pop("resourceVersion", None)
        self._update(rt, old, new, None)
        return self._scale_of(
            rt, self._stored(rt, old["metadata"].get("namespace"), new["metadata"]["name"])
        )

    # -- deleting ------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        preconditions: dict[str, Any] | None = None,
    ) -> Obj:
        """Delete now, or mark with ``deletionTimestamp`` while finalizers remain."""
        with self._transaction():
            old = self._stored(rt, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise self._conflict(rt, name)
            if (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
            ):
                raise self._conflict(rt, name)
            if old["metadata"].get("deletionTimestamp"):
                return self._view(rt, old)
            if propagation == "Orphan":
                self._orphaning.add(old["metadata"]["uid"])
            if rt.key == NS_KEY or rt.key == CRD_KEY:
                return self._delete_container(rt, old)
            if old["metadata"].get("finalizers"):
                return self._mark_deleted(rt, old)
            return self._remove(rt, old)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> builtins.list[Obj]:
        with self._transaction():
            items, _ = self.list(
                rt, namespace, label_selector=label_selector, field_selector=field_selector
            )
            return [
                self.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"])
                for o in items
            ]

    def _mark_deleted(self, rt: ResourceType, old: Obj) -> Obj:
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if rt.key == NS_KEY:
            new.setdefault("status", {})["phase"] = "Terminating"
        return self._commit(rt, "MODIFIED", new, copy.deepcopy(old))

    def _delete_container(self, rt: ResourceType, old: Obj) -> Obj:
        """Namespaces and CRDs: delete the content, then the container when it is empty."""
        out = self._mark_deleted(rt, old)
        for item_rt, ns, name in self._content(old):
            obj = self._bucket(item_rt).get((ns, name))
            if obj is not None and not obj["metadata"].get("deletionTimestamp"):
                self.delete(item_rt, ns or None, name)
        self._finish_containers()
        return out

    def _content(self, container: Obj) -> builtins.list[tuple[ResourceType, str, str]]:
        out: builtins.list[tuple[ResourceType, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for rt in list(self._types.values()):
            if rt.key in seen:
                continue
            seen.add(rt.key)
            if container["kind"] == "Namespace":
                if not rt.namespaced:
                    continue
                ns = container["metadata"]["name"]
                out += [(rt, n, m) for (n, m) in list(self._bucket(rt)) if n == ns]
            else:
                spec = container.get("spec") or {}
                key = (spec.get("group"), (spec.get("names") or {}).get("plural"))
                if rt.key == key:
                    out += [(rt, n, m) for (n, m) in list(self._bucket(rt))]
        return out

    def _finish_containers(self) -> None:
        for key in (NS_KEY, CRD_KEY):
            rt = next(t for t in self._types.values() if t.key == key)
            for obj in list(self._bucket(rt).values()):
                if obj["metadata"].get("deletionTimestamp") and not self._content(obj):
                    if key == NS_KEY:
                        obj.get("spec", {}).pop("finalizers", None)
                    if not obj["metadata"].get("finalizers"):
                        self._remove(rt, copy.deepcopy(obj))

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        if (meta.get("namespace", ""), meta["name"]) not in self._bucket(rt):
            return self._view(rt, obj)
        gone = copy.deepcopy(obj)
        out = self._commit(rt, "DELETED", gone, copy.deepcopy(obj))
        if rt.key == CRD_KEY:
            self._unregister_crd(obj)
        if meta["uid"] in self._orphaning:
            self._orphaning.discard(meta["uid"])
        else:
            self._collect_garbage(meta["uid"])
        self._finish_containers()
        return out

    def _collect_garbage(self, owner_uid: str) -> None:
        live = {o["metadata"]["uid"] for bucket in self._objects.values() for o in bucket.values()}
        seen: set[tuple[str, str]] = set()
        for rt in list(self._types.values()):
            if rt.key in seen:
                continue
            seen.add(rt.key)
            for (ns, name), obj in list(self._bucket(rt).items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                if any(r.get("uid") in live for r in refs if r.get("uid") != owner_uid):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [
                        r for r in refs if r.get("uid") != owner_uid
                    ]
                    self._commit(rt, "MODIFIED", new, copy.deepcopy(obj))
                elif not obj["metadata"].get("deletionTimestamp"):
                    self.delete(rt, ns or None, name)

    # -- watching ------------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        deliver: Deliver,
        *,
        since: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        send_initial_events: bool = False,
    ) -> Subscription:
        """Subscribe; replays history after ``since`` (or ADDED for all objects when unset).

        Raises 410 Gone when ``since`` is older than the retained history.
        """
        sub = Subscription(
            rt,
            namespace if rt.namespaced else None,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector),
            deliver,
        )
        with self._lock:
            if since in (None, "", "0") or send_initial_events:
                for _, obj in sorted(self._bucket(rt).items()):
                    if sub.matches(obj):
                        deliver("ADDED", self._view(rt, obj))
                if send_initial_events:
                    deliver("BOOKMARK", self._bookmark(rt, initial_end=True))
            else:
                try:
                    start = int(str(since))
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"invalid resource version {since!r}") from e
                if start < self._floor:
                    raise ApiError(
                        410, "Expired", f"too old resource version: {start} ({self._floor})"
                    )
                for event in self._history:
                    if event.rv > start and event.key == rt.key:
                        self._deliver(sub, event)
            self._subs.append(sub)
        return sub

    def unwatch(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _bookmark(self, rt: ResourceType, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self._rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    def bookmark(self, sub: Subscription) -> None:
        """Push a BOOKMARK at the current resourceVersion, ordered after pending events."""
        with self._lock:
            sub.deliver("BOOKMARK", self._bookmark(sub.rt))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store: no other thread reads, writes or starts a watch meanwhile."""
        with self._transaction():
            yield

    def compact(self) -> None:
        """Forget all watch history: any older ``resourceVersion`` now gets 410 Gone."""
        with self._lock:
            self._history.clear()
            self._floor = self._rv
