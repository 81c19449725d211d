"""`runtime.Sink` for Kubernetes: status through `/status` merge-patches, Events through the
recorder (events.py: counted and aggregated as Kubernetes' own recorder does).

The control loop decides what to publish and already skips statuses it published before.
What it cannot know after a restart or a takeover is what the API server holds already: the
first time this process would patch an object, the patch is compared with the object's stored
status (from the watch-fed cache, or kopf's live body for the pool) and skipped when it would
change nothing but timestamps (conditions' `lastTransitionTime`, nodes' `lastSeen`). Events
carry the object's uid when it is known so `kubectl describe` finds them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from hatswarm_operator.api.common import API_VERSION
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.core.plan import ResourceEvent
from hatswarm_operator.kube.cluster import Cluster
from hatswarm_operator.kube.events import EventRecorder

log = logging.getLogger("hatswarm.sink")

PLURALS = {"EdgeModel": "edgemodels", "InferencePool": "inferencepools"}
StoredStatus = Callable[[str, str, str], "dict[str, Any] | None"]
"""(kind, namespace, name) -> the object's status as the API server holds it (None: unknown)."""


def status_patch(status: BaseModel) -> dict[str, Any]:
    """A merge-patch body for a status: top-level fields that are unset become null (removed).

    Nested `None`s are left out instead: lists are replaced whole and must stay schema-valid.
    """
    body = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    for name, info in type(status).model_fields.items():
        key = info.alias or name
        body.setdefault(key, None)
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the API server applies to `/status`)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _timeless(status: dict[str, Any]) -> dict[str, Any]:
    """A status without the timestamps that move on their own."""
    out = dict(status)
    if isinstance(out.get("conditions"), list):
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} if isinstance(c, dict) else c
            for c in out["conditions"]
        ]
    if isinstance(out.get("nodes"), list):
        out["nodes"] = [
            {k: v for k, v in n.items() if k != "lastSeen"} if isinstance(n, dict) else n
            for n in out["nodes"]
        ]
    return out


def changes_anything(stored: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Would merge-patching `patch` onto `stored` change more than timestamps?"""
    return _timeless(merge_patch(stored, patch)) != _timeless(stored)


def object_ref(kind: str, namespace: str, name: str, uid: str = "") -> dict[str, Any]:
    """A minimal body an event's involvedObject is built from."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta}


def _unknown(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return None


class KubeSink:
    """Publishes one pool's decisions. `uids` maps (kind, name) to the object's uid."""

    def __init__(
        self,
        cluster: Cluster,
        pool: str,
        recorder: EventRecorder,
        *,
        service: str = "",
        stored_status: StoredStatus = _unknown,
    ) -> None:
        self.cluster = cluster
        self.pool = pool
        self.recorder = recorder
        self.service = service
        self.stored_status = stored_status
        self.uids: dict[tuple[str, str], str] = {}
        self.patched: set[tuple[str, str]] = set()
        self.skipped = 0

    def _unchanged(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """True when this process never patched the object and its stored status already
        says what `body` says (a restart or a takeover: nothing to write)."""
        if (kind, name) in self.patched:
            return False
        self.patched.add((kind, name))
        stored = self.stored_status(kind, namespace, name)
        if stored is None or changes_anything(stored, body):
            return False
        self.skipped += 1
        return True

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        body = status_patch(status)
        if self._unchanged("EdgeModel", namespace, name, body):
            return
        if not await self.cluster.patch_status("edgemodels", namespace, name, body):
            log.debug("edgemodel %s/%s is gone; status dropped", namespace, name)

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        if self.service and not status.service:
            status = status.model_copy(update={"service": self.service})
        body = status_patch(status)
        if self._unchanged("InferencePool", namespace, name, body):
            return
        await self.cluster.patch_status("inferencepools", namespace, name, body)

    async def event(self, namespace: str, event: ResourceEvent) -> None:
        uid = self.uids.get((event.kind, event.name), "")
        ref = object_ref(event.kind, namespace, event.name, uid)
        self.recorder.record(ref, event.type, event.reason, event.message)
