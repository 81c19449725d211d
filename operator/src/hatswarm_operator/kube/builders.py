"""What an InferencePool owns in Kubernetes, as plain dicts: the agent DaemonSet and the Service.

Pure: no API calls, no kopf. The handlers adopt the results (ownerReferences) and create them
if absent or patch them when `hatswarm.io/spec-hash` differs, so a retry is always safe.

Security: by default the agent runs under the `restricted` Pod Security profile (non-root,
read-only root filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault
seccomp) and reaches the NPU through a device plugin's extended resource. Only
`npu.hostDevice: true` mounts the device file by hostPath in a privileged container; in that
mode the artifact cache lives on the host (`/var/lib/hatswarm/<pool>`) so verified artifacts
survive a pod restart. Restricted pods cannot use hostPath, so they cache in an `emptyDir`
capped at `cacheSize`.

Auth: `spec.auth.tokenSecretRef` is mounted read-only (mode 0440, only the referenced key) at
`/var/run/hatswarm/token/<key>` and passed as `--auth-token-file`; the agent re-reads it when
the kubelet refreshes the volume, so a rotated Secret needs no restart. `spec.auth.tlsSecretRef`
(a kubernetes.io/tls Secret) is mounted at `/var/run/hatswarm/tls/` for `--tls-cert/--tls-key`,
plus `--tls-ca` (its `ca.crt`) when `mutualTls`. The cloud fallback token is mounted where
the routing table points (`/var/run/hatswarm/cloud-token/<key>`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.inferencepool import AgentSettings
from hatswarm_operator.control.credentials import CLOUD_TOKEN_DIR, TLS_CA, TLS_CERT, TLS_KEY

AGENT: Final = "hatswarm-agent"
NAME_LABEL: Final = "app.kubernetes.io/name"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
POOL_LABEL: Final = "hatswarm.io/pool"
SETTINGS_HASH: Final = "hatswarm.io/agent-settings-hash"
SPEC_HASH: Final = "hatswarm.io/spec-hash"
STATE_DIR: Final = "/var/lib/hatswarm"
TOKEN_DIR: Final = "/var/run/hatswarm/token"
TLS_DIR: Final = "/var/run/hatswarm/tls"
SECRET_MODE: Final = 0o440  # owner and group (fsGroup) may read; nobody else
AGENT_UID: Final = 10001

_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`2Gi`, `500M`, `1.5Gi`) in bytes."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    if m is None:
        raise ValueError(f"not a quantity: {quantity!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def load_agent_defaults(path: str | Path | None) -> dict[str, Any]:
    """The cluster's agent defaults (the chart's `$HATSWARM_AGENT_DEFAULTS` file); {} if none.

    Validated as `spec.agent` keys, so a bad file stops the operator at start, not a pool later.
    """
    if not path or not Path(path).exists():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: agent defaults must be a mapping of spec.agent keys")
    AgentSettings.model_validate(data)
    return data


def apply_agent_defaults(pool: InferencePool, defaults: Mapping[str, Any]) -> InferencePool:
    """Fill the agent settings a pool leaves at their built-in value from the cluster defaults.

    The API server writes the CRD's defaults into every stored pool, so "left out" and "set to
    the built-in default" look the same; both take the cluster's value.
    """
    if not defaults:
        return pool
    chosen = AgentSettings.model_validate(defaults)
    builtin = AgentSettings()
    agent = pool.spec.agent
    updates = {
        name: getattr(chosen, name)
        for name in chosen.model_fields_set
        if getattr(agent, name) == getattr(builtin, name)
    }
    if not updates:
        return pool
    spec = pool.spec.model_copy(update={"agent": agent.model_copy(update=updates)})
    return pool.model_copy(update={"spec": spec})


def daemonset_name(pool_name: str) -> str:
    return f"{AGENT}-{pool_name}"


def selector_labels(pool_name: str) -> dict[str, str]:
    """The labels that select a pool's agent pods (DaemonSet selector, Service, the operator)."""
    return {NAME_LABEL: AGENT, POOL_LABEL: pool_name}


def label_selector(pool_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool_name).items())


def common_labels(pool_name: str) -> dict[str, str]:
    return {**selector_labels(pool_name), MANAGED_BY_LABEL: "hatswarm"}


def digest(obj: Any) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_hash(pool: InferencePool) -> str:
    """Hash of everything about the pool that the agent pods are started with."""
    spec = pool.spec
    cloud = spec.cloud_fallback
    return digest(
        {
            "agent": spec.agent.wire(),
            "cloudToken": cloud.token_secret_ref.wire()
            if cloud and cloud.token_secret_ref
            else None,
            "auth": spec.auth.wire(),
        }
    )


def agent_accelerator(pool: InferencePool) -> str:
    """The `--accelerator` the agent starts with (the hailo backend reports the real chip)."""
    agent = pool.spec.agent
    if agent.backend == "onnxruntime":
        return "cpu"
    return next((a for a in pool.spec.accelerators if a != "cpu"), "cpu")


def agent_args(pool: InferencePool) -> list[str]:
    agent = pool.spec.agent
    auth = pool.spec.auth
    extra: list[str] = []
    if auth.token_secret_ref is not None:
        extra += ["--auth-token-file", f"{TOKEN_DIR}/{auth.token_secret_ref.key}"]
    if auth.tls_secret_ref is not None:
        extra += ["--tls-cert", f"{TLS_DIR}/{TLS_CERT}", "--tls-key", f"{TLS_DIR}/{TLS_KEY}"]
        if auth.mutual_tls:
            extra += ["--tls-ca", f"{TLS_DIR}/{TLS_CA}"]
    return [
        "--host", "0.0.0.0",
        "--port", str(agent.port),
        "--node-name", "$(NODE_NAME)",
        "--accelerator", agent_accelerator(pool),
        "--backend", agent.backend,
        "--state-dir", STATE_DIR,
        "--cache-max-bytes", str(quantity_bytes(agent.cache_size)),
        "--metrics-port", str(agent.metrics_port),
        "--log-level", "INFO",
        "--await-routing-table",  # NOT_SERVING (not Ready) until it can route
        *extra,
    ]  # fmt: skip


def _resources(pool: InferencePool) -> dict[str, Any]:
    agent = pool.spec.agent
    resources: dict[str, Any] = copy.deepcopy(agent.resources)
    npu = agent.npu
    if agent.backend == "hailo" and not npu.host_device and npu.resource_name:
        limits = resources.setdefault("limits", {})
        limits[npu.resource_name] = 1
        requests = resources.get("requests")
        if isinstance(requests, dict) and npu.resource_name in requests:
            requests[npu.resource_name] = 1
    return resources


def _privileged(pool: InferencePool) -> bool:
    npu = pool.spec.agent.npu
    return pool.spec.agent.backend == "hailo" and npu.host_device and bool(npu.device_file)


def build_daemonset(pool: InferencePool) -> dict[str, Any]:
    """The agent DaemonSet `hatswarm-agent-<pool>` on the nodes of `spec.nodeSelector`."""
    name, ns = pool.metadata.name, pool.metadata.namespace
    agent = pool.spec.agent
    privileged = _privileged(pool)
    labels = common_labels(name)

    mounts: list[dict[str, Any]] = [
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if privileged:
        volumes.append(
            {
                "name": "state",
                "hostPath": {"path": f"{STATE_DIR}/{name}", "type": "DirectoryOrCreate"},
            }
        )
        device = agent.npu.device_file or ""
        volumes.append({"name": "npu", "hostPath": {"path": device, "type": "CharDevice"}})
        mounts.append({"name": "npu", "mountPath": device})
    else:
        volumes.append({"name": "state", "emptyDir": {"sizeLimit": agent.cache_size}})
    for volume, mount in _secret_volumes(pool):
        volumes.append(volume)
        mounts.append(mount)

    if privileged:
        container_security: dict[str, Any] = {"privileged": True, "runAsUser": 0}
        pod_security: dict[str, Any] = {}
    else:
        container_security = {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    # Kubernetes' native gRPC probe speaks plaintext only (no TLS, no client certificate), so
    # with TLS on it could never pass. Then the probes are a TCP connect to the gRPC port:
    # weaker (a wedged server that still accepts connections passes), but honest, needs no
    # exec or extra binary in the image, and opens no plaintext port beside the TLS one. A
    # bearer token alone keeps the gRPC probe: the agent leaves grpc.health.v1 open.
    if pool.spec.auth.tls_secret_ref is not None:
        grpc_probe: dict[str, Any] = {"tcpSocket": {"port": "grpc"}}
    else:
        grpc_probe = {"grpc": {"port": agent.port}}
    container: dict[str, Any] = {
        "name": "agent",
        "image": agent.image,
        "imagePullPolicy": agent.image_pull_policy,
        "args": agent_args(pool),
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [
            {"name": "grpc", "containerPort": agent.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": agent.metrics_port, "protocol": "TCP"},
        ],
        "resources": _resources(pool),
        "startupProbe": {**grpc_probe, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3},
        "volumeMounts": mounts,
        "securityContext": container_security,
    }
    template_annotations = {
        SETTINGS_HASH: settings_hash(pool),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(agent.metrics_port),
    }
    pod_spec: dict[str, Any] = {
        "nodeSelector": dict(pool.spec.node_selector),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 15,
        "containers": [container],
        "volumes": volumes,
    }
    if pod_security:
        pod_spec["securityContext"] = pod_security
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": daemonset_name(name), "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": template_annotations},
                "spec": pod_spec,
            },
        },
    }
    return _stamped(obj)


def _secret_volumes(pool: InferencePool) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) for each Secret the agent reads: pool token, TLS files, cloud token."""

    def secret(name: str, secret_name: str, keys: list[str], path: str) -> tuple[Any, Any]:
        items = [{"key": k, "path": k} for k in keys]
        volume = {
            "name": name,
            "secret": {"secretName": secret_name, "items": items, "defaultMode": SECRET_MODE},
        }
        return volume, {"name": name, "mountPath": path, "readOnly": True}

    auth, cloud = pool.spec.auth, pool.spec.cloud_fallback
    out = []
    if auth.token_secret_ref is not None:
        ref = auth.token_secret_ref
        out.append(secret("auth-token", ref.name, [ref.key], TOKEN_DIR))
    if auth.tls_secret_ref is not None:
        keys = [TLS_CERT, TLS_KEY, *([TLS_CA] if auth.mutual_tls else [])]
        out.append(secret("tls", auth.tls_secret_ref.name, keys, TLS_DIR))
    if cloud is not None and cloud.token_secret_ref is not None:
        ref = cloud.token_secret_ref
        out.append(secret("cloud-token", ref.name, [ref.key], CLOUD_TOKEN_DIR))
    return out


def build_service(pool: InferencePool) -> dict[str, Any]:
    """The ClusterIP Service `<pool>`: the pool's one entry point on the agents' gRPC port."""
    name, ns = pool.metadata.name, pool.metadata.namespace
    port = pool.spec.agent.port
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": common_labels(name)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [
                {
                    "name": "grpc",
                    "port": port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }
    return _stamped(obj)


def service_address(pool: InferencePool) -> str:
    """host:port clients use inside the cluster."""
    m = pool.metadata
    return f"{m.name}.{m.namespace}.svc:{pool.spec.agent.port}"


def _stamped(obj: dict[str, Any]) -> dict[str, Any]:
    """Record the hash of the desired object on it, so `needs_update` is one comparison."""
    obj["metadata"]["annotations"] = {SPEC_HASH: digest(obj)}
    return obj


def needs_update(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when the live object was built from different settings than `desired`."""
    have = ((existing.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH)
    return bool(have != desired["metadata"]["annotations"][SPEC_HASH])
