"""`runtime.Sink` for Kubernetes: status through `/status` merge-patches, Events through kopf.

The control loop decides what to publish (and already skips unchanged statuses); this only
turns it into API calls. Events go through kopf's event queue (`kopf.event`), which posts in
the background and never blocks the loop; they carry the object's uid when it is known so
`kubectl describe` finds them.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from pydantic import BaseModel

from hatswarm_operator.api.common import API_VERSION
from hatswarm_operator.api.edgemodel import EdgeModelStatus
from hatswarm_operator.api.inferencepool import InferencePoolStatus
from hatswarm_operator.core.plan import ResourceEvent
from hatswarm_operator.kube.cluster import Cluster

log = logging.getLogger("hatswarm.sink")

PLURALS = {"EdgeModel": "edgemodels", "InferencePool": "inferencepools"}


def status_patch(status: BaseModel) -> dict[str, Any]:
    """A merge-patch body for a status: top-level fields that are unset become null (removed).

    Nested `None`s are left out instead: lists are replaced whole and must stay schema-valid.
    """
    body = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    for name, info in type(status).model_fields.items():
        key = info.alias or name
        body.setdefault(key, None)
    return body


def object_ref(kind: str, namespace: str, name: str, uid: str = "") -> dict[str, Any]:
    """A minimal body kopf can build an event's involvedObject from."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta}


class KubeSink:
    """Publishes one pool's decisions. `uids` maps (kind, name) to the object's uid."""

    def __init__(self, cluster: Cluster, pool: str, service: str = "") -> None:
        self.cluster = cluster
        self.pool = pool
        self.service = service
        self.uids: dict[tuple[str, str], str] = {}

    async def model_status(self, namespace: str, name: str, status: EdgeModelStatus) -> None:
        if not await self.cluster.patch_status("edgemodels", namespace, name, status_patch(status)):
            log.debug("edgemodel %s/%s is gone; status dropped", namespace, name)

    async def pool_status(self, namespace: str, name: str, status: InferencePoolStatus) -> None:
        if self.service and not status.service:
            status = status.model_copy(update={"service": self.service})
        await self.cluster.patch_status("inferencepools", namespace, name, status_patch(status))

    async def event(self, namespace: str, event: ResourceEvent) -> None:
        uid = self.uids.get((event.kind, event.name), "")
        body = object_ref(event.kind, namespace, event.name, uid)
        kopf.event(
            kopf.Body(cast(kopf.RawBody, body)),
            type=event.type,
            reason=event.reason,
            message=event.message[:1024],
        )
