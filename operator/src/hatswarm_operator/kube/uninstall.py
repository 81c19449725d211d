"""`python3 -m hatswarm_operator.kube.uninstall`: the chart's pre-delete hook.

`helm uninstall` removes the operator, but not the CRDs (Helm never deletes `crds/`) nor the
EdgeModels and InferencePools, each of which carries the operator's finalizer: deleting one
later, or its namespace, would hang forever with no operator left to release it. This hook runs
while the release still exists and:

1. scales the operator Deployment to 0 and waits until its pods are gone, so no replica adds
   the finalizer back (kopf re-adds it on any event of an object it serves);
2. removes `hatswarm.io/finalizer` from every EdgeModel and InferencePool it can see (each
   patch carries the object's resourceVersion; a conflict is read again and retried).

The objects, their agents and loaded models keep running; from then on they are plain objects
that `kubectl delete` removes at once. To remove the models from the agents first, delete the
EdgeModels and InferencePools before `helm uninstall` (the documented order).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from hatswarm_operator.api.common import GROUP, VERSION

FINALIZER = "hatswarm.io/finalizer"  # kube/handlers.py sets kopf's finalizer to this name
PLURALS = ("edgemodels", "inferencepools")
MERGE_PATCH = "application/merge-patch+json"

log = logging.getLogger("hatswarm.uninstall")


def _api_client() -> Any:
    configuration = client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def stop_operator(
    api: Any,
    namespace: str,
    deployment: str,
    selector: str,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Scale the operator to 0 and wait (bounded) until no pod of it is left."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    try:
        apps.patch_namespaced_deployment(
            deployment, namespace, {"spec": {"replicas": 0}}, _content_type=MERGE_PATCH
        )
    except ApiException as err:
        if err.status != 404:
            raise
        log.info("deployment %s/%s is gone already", namespace, deployment)
    deadline = time.monotonic() + timeout_s
    while True:
        resp: Any = core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        pods = [p["metadata"]["name"] for p in json.loads(resp.data).get("items") or []]
        if not pods:
            log.info("operator stopped (%s/%s scaled to 0)", namespace, deployment)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"operator pods still running after {timeout_s:.0f}s: {pods}")
        sleep(1.0)


def release_finalizers(api: Any, namespaces: Sequence[str], attempts: int = 5) -> list[str]:
    """Remove the operator's finalizer from every EdgeModel and InferencePool (in
    `namespaces`, or everywhere); returns `plural/namespace/name` of each one released."""
    custom: Any = client.CustomObjectsApi(api)
    released: list[str] = []
    for plural in PLURALS:
        for obj in _list(custom, plural, namespaces):
            meta = obj["metadata"]
            if FINALIZER not in (meta.get("finalizers") or []):
                continue
            name, ns = meta["name"], meta["namespace"]
            for attempt in range(attempts):
                remaining = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
                body = {
                    "metadata": {
                        "finalizers": remaining,
                        "resourceVersion": meta["resourceVersion"],
                    }
                }
                try:
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, plural, name, body, _content_type=MERGE_PATCH
                    )
                    break
                except ApiException as err:
                    if err.status == 404:
                        break
                    if err.status != 409 or attempt == attempts - 1:
                        raise
                    fresh = custom.get_namespaced_custom_object(
                        GROUP, VERSION, ns, plural, name, _preload_content=False
                    )
                    meta = json.loads(fresh.data)["metadata"]
            released.append(f"{plural}/{ns}/{name}")
            log.info("released %s/%s/%s", plural, ns, name)
    return released


def _list(custom: Any, plural: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Every object of `plural` in `namespaces` (globs like `floor-*` as the operator takes
    them), or in all namespaces when there are none."""
    if not namespaces or any(set(ns) & set("*?[") for ns in namespaces):
        resp = custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(resp.data).get("items") or []
        return [
            o
            for o in items
            if not namespaces
            or any(fnmatch.fnmatchcase(o["metadata"]["namespace"], ns) for ns in namespaces)
        ]
    out: list[dict[str, Any]] = []
    for ns in namespaces:
        resp = custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, plural, _preload_content=False
        )
        out.extend(json.loads(resp.data).get("items") or [])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m hatswarm_operator.kube.uninstall",
        description="Stop the operator and release its finalizers (the chart's pre-delete hook).",
    )
    p.add_argument("--namespace", required=True, help="the release's namespace")
    p.add_argument("--deployment", required=True, help="the operator Deployment")
    p.add_argument("--selector", required=True, help="label selector of the operator's pods")
    p.add_argument(
        "--watch-namespace", action="append", default=[],
        help="namespaces the operator watched (repeatable; none: every namespace)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the pods")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    api = _api_client()
    try:
        stop_operator(api, args.namespace, args.deployment, args.selector, args.timeout)
        released = release_finalizers(api, args.watch_namespace)
    except (ApiException, TimeoutError) as err:
        reason = f"{err.status} {err.reason}" if isinstance(err, ApiException) else str(err)
        print(f"hatswarm uninstall hook: {reason}", file=sys.stderr)
        return 1
    finally:
        api.close()
    print(f"hatswarm uninstall hook: released {len(released)} object(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
