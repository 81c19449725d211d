"""The operator's reads and writes against the Kubernetes API, off the event loop.

The `kubernetes` client is synchronous, so every call runs in `asyncio.to_thread`; objects
travel as plain JSON dicts (`_preload_content=False`), camelCase as the API serves them, so
they feed straight into the pydantic API types and the projections of sources.py. The pools'
steady reads come from watches (informers.py), not from here: these lists serve the finalizer
of a pool that is not running and `--reads list`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import GROUP, VERSION
from hatswarm_operator.control.credentials import (
    AgentCredentials,
    agent_credentials,
    auth_secret_names,
)
from hatswarm_operator.kube import builders

MERGE_PATCH = "application/merge-patch+json"
Obj = dict[str, Any]


class Cluster:
    """Thin async facade over the kubernetes client for exactly what the operator needs."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- reads -----------------------------------------------------------------------------

    async def _items(self, fn: Any, *args: Any, **kwargs: Any) -> list[Obj]:
        def call() -> list[Obj]:
            resp = fn(*args, _preload_content=False, **kwargs)
            items: list[Obj] = json.loads(resp.data).get("items") or []
            return items

        return await asyncio.to_thread(call)

    async def nodes(self) -> list[Obj]:
        return await self._items(self.core.list_node)

    async def agent_pods(self, namespace: str, pool: str) -> list[Obj]:
        return await self._items(
            self.core.list_namespaced_pod, namespace, label_selector=builders.label_selector(pool)
        )

    async def edge_models(self, namespace: str) -> list[Obj]:
        items = await self._items(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "edgemodels"
        )
        for obj in items:  # list items carry no apiVersion/kind of their own
            obj.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            obj.setdefault("kind", "EdgeModel")
        return items

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret's data, decoded; LookupError when it cannot be read."""

        def call() -> dict[str, bytes]:
            resp: Any = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            data = json.loads(resp.data).get("data") or {}
            return {str(k): base64.b64decode(v) for k, v in data.items()}

        try:
            return await asyncio.to_thread(call)
        except ApiException as err:
            raise LookupError(f"secret {namespace}/{name}: {err.status} {err.reason}") from err

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = await self.secret_data(namespace, name)
        if key not in data:
            raise LookupError(f"secret {namespace}/{name} has no key {key!r}")
        return data[key].decode().strip()

    async def agent_credentials(self, pool: InferencePool) -> AgentCredentials:
        """What the operator presents to a pool's agents, from its control token and TLS
        Secrets (:func:`credentials.agent_credentials`); LookupError when one cannot be read."""
        namespace = pool.metadata.namespace
        secrets = {
            name: await self.secret_data(namespace, name) for name in auth_secret_names(pool)
        }
        return agent_credentials(pool, secrets, lambda name: f"secret {namespace}/{name}")

    async def create_secret_if_absent(self, obj: Obj) -> bool:
        """Create the Secret `obj` unless one of its name exists (never overwritten: an admin's
        own value wins, and a rotation is a deletion); whether it was created."""
        meta = obj["metadata"]

        def call() -> bool:
            try:
                self.core.read_namespaced_secret(
                    meta["name"], meta["namespace"], _preload_content=False
                )
                return False
            except ApiException as err:
                if err.status != 404:
                    raise
            try:
                self.core.create_namespaced_secret(meta["namespace"], obj)  # type: ignore[arg-type]
            except ApiException as err:
                if err.status != 409:
                    raise
                return False
            return True

        return await asyncio.to_thread(call)

    async def inference_pool(self, namespace: str, name: str) -> Obj | None:
        def call() -> Obj | None:
            try:
                resp: Any = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "inferencepools", name, _preload_content=False
                )
            except ApiException as err:
                if err.status == 404:
                    return None
                raise
            obj: Obj = json.loads(resp.data)
            return obj

        return await asyncio.to_thread(call)

    # --- writes ----------------------------------------------------------------------------

    async def ensure(self, obj: Obj) -> str:
        """Create `obj` if absent, patch it if its spec hash differs: "created", "patched", "".

        Handles the two kinds a pool owns (DaemonSets, Service); a retry is always safe.
        """
        kind, meta = obj["kind"], obj["metadata"]
        read: Any
        create: Any
        patch: Any
        name, ns = meta["name"], meta["namespace"]
        if kind == "DaemonSet":
            read, create, patch = (
                self.apps.read_namespaced_daemon_set,
                self.apps.create_namespaced_daemon_set,
                self.apps.patch_namespaced_daemon_set,
            )
        elif kind == "Service":
            read, create, patch = (
                self.core.read_namespaced_service,
                self.core.create_namespaced_service,
                self.core.patch_namespaced_service,
            )
        else:
            raise ValueError(f"cannot ensure a {kind}")

        def call() -> str:
            try:
                existing = json.loads(read(name, ns, _preload_content=False).data)
            except ApiException as err:
                if err.status != 404:
                    raise
                try:
                    create(ns, obj)
                except ApiException as err2:
                    if err2.status != 409:
                        raise
                    return ""
                return "created"
            if not builders.needs_update(existing, obj):
                return ""
            body = {"metadata": obj["metadata"], "spec": obj["spec"]}
            patch(name, ns, body, _content_type=MERGE_PATCH)
            return "patched"

        return await asyncio.to_thread(call)

    async def delete_owned_daemonset(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete DaemonSet `name` if `owner_uid` owns it (a pool's dropped chip class);
        False when it is absent or someone else's."""

        def call() -> bool:
            try:
                resp: Any = self.apps.read_namespaced_daemon_set(
                    name, namespace, _preload_content=False
                )
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            refs = (json.loads(resp.data).get("metadata") or {}).get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                return False
            try:
                self.apps.delete_namespaced_daemon_set(
                    name, namespace, propagation_policy="Background"
                )
            except ApiException as err:
                if err.status != 404:
                    raise
                return False
            return True

        return await asyncio.to_thread(call)

    async def patch_status(self, plural: str, namespace: str, name: str, status: Obj) -> bool:
        """Merge-patch `/status` of a hatswarm object; False when it is gone."""

        def call() -> bool:
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    {"status": status},
                    _content_type=MERGE_PATCH,
                )
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            return True

        return await asyncio.to_thread(call)
