"""What an InferencePool owns in Kubernetes, as plain dicts: the agent DaemonSets and the Service.

Pure: no API calls, no kopf. The handlers adopt the results (ownerReferences) and create them
if absent or patch them when `hatswarm.io/spec-hash` differs, so a retry is always safe.

Per-node accelerators: one DaemonSet per chip class of `spec.accelerators`. The class of a node
is its `hatswarm.io/accelerator` label (a required nodeAffinity term): the agents of hailo8l,
hailo8 and hailo10h nodes each request their chip's NPU resource and start with `--accelerator`
of that chip; every other node of the pool (labelled cpu, or not labelled) runs the `cpu`
class on onnxruntime with no NPU request, so no node waits Pending for a device it does not
have. The chip an agent reports (HailoRT's identity) is what placement uses.

Security: by default the agent runs under the `restricted` Pod Security profile (non-root,
read-only root filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault
seccomp) and reaches the NPU through a device plugin's extended resource. Only
`npu.hostDevice: true` mounts the device file by hostPath in a privileged container; in that
mode the artifact cache lives on the host (`/var/lib/hatswarm/<pool>`) so verified artifacts
survive a pod restart. Restricted pods cannot use hostPath, so they cache in an `emptyDir`
capped at `cacheSize`.

Auth (README "Security model"): every Secret is mounted read-only, mode 0440, only the keys
needed, into the agent container alone, and the agent re-reads it when the kubelet refreshes
the volume, so a rotated Secret needs no restart. The pool's control token (`hatswarm-control-
<pool>`, which the operator generates; the only credential that opens the agents' control
service) at `/var/run/hatswarm/control/token` (`--control-token-file`); the inference tokens
(`spec.auth.tokenSecretRef`, else the generated `hatswarm-clients-<pool>`; none only with
`unauthenticatedInference`) at `/var/run/hatswarm/token/<key>` (`--auth-token-file`).
`spec.auth.tlsSecretRef` (a kubernetes.io/tls Secret) is mounted at `/var/run/hatswarm/tls/` for
`--tls-cert/--tls-key`, plus `--tls-ca` (its `ca.crt`) when `mutualTls`; the trusted signing
keys (`spec.auth.trustedKeysSecret`, every key) at `/var/run/hatswarm/trusted-keys/`
(`--trusted-keys`). The cloud fallback token is mounted at `/var/run/hatswarm/cloud-token/<key>`
and named to the agent (`--cloud-token cloud=FILE`): a routing table names it, never a path.
`spec.agent.fileRoots` are mounted read-only by hostPath and allow-listed
(`--allow-file-root`); without them file:// artifacts are refused.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from hatswarm_operator import __version__
from hatswarm_operator.api import InferencePool
from hatswarm_operator.api.common import (
    ACCELERATOR_LABEL,
    AGENT_NAME,
    NPU_ACCELERATORS,
    POOL_LABEL,
)
from hatswarm_operator.api.inferencepool import AgentSettings
from hatswarm_operator.control.credentials import (
    CLOUD_TOKEN_DIR,
    CLOUD_TOKEN_NAME,
    TLS_CA,
    TLS_CERT,
    TLS_KEY,
    TOKEN_KEY,
    control_secret_name,
    inference_token_ref,
)

AGENT: Final = AGENT_NAME
NAME_LABEL: Final = "app.kubernetes.io/name"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
CLASS_LABEL: Final = "hatswarm.io/agent-class"
DEFAULT_AGENT_IMAGE: Final = f"ghcr.io/hatswarm/agent:{__version__}"
"""The agent image when neither the pool nor the cluster's agent defaults name one: the
operator's own version, so upgrading the operator upgrades the agents."""
SETTINGS_HASH: Final = "hatswarm.io/agent-settings-hash"
SPEC_HASH: Final = "hatswarm.io/spec-hash"
STATE_DIR: Final = "/var/lib/hatswarm"
TOKEN_DIR: Final = "/var/run/hatswarm/token"
CONTROL_DIR: Final = "/var/run/hatswarm/control"
TRUSTED_KEYS_DIR: Final = "/var/run/hatswarm/trusted-keys"
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
    """Fill the agent settings a pool leaves out from the cluster defaults (the chart's).

    The CRD stores no defaults under `spec.agent`, so what the user wrote is exactly the
    fields pydantic saw (`model_fields_set`); everything else comes from `defaults`, then the
    built-in values. A nested object the pool sets (`npu`, `resources`) is taken whole.
    """
    if not defaults:
        return pool
    chosen = AgentSettings.model_validate(defaults)
    agent = pool.spec.agent
    updates = {
        name: getattr(chosen, name)
        for name in chosen.model_fields_set
        if name not in agent.model_fields_set
    }
    if not updates:
        return pool
    spec = pool.spec.model_copy(update={"agent": agent.model_copy(update=updates)})
    return pool.model_copy(update={"spec": spec})


@dataclass(frozen=True)
class AgentClass:
    """One DaemonSet of a pool: the agents of the nodes of one chip class.

    `cpu` is the catch-all: every node of the pool not labelled with one of the pool's chips.
    """

    accelerator: str  # "hailo8l", "hailo8", "hailo10h" or "cpu"
    backend: str  # the agent's --backend
    resource: str | None  # the NPU extended resource requested, if any
    host_device: bool  # mount the device file by hostPath (privileged)
    node_requirement: dict[str, Any] | None  # a nodeSelectorRequirement (None: every node)


def agent_classes(pool: InferencePool) -> list[AgentClass]:
    """The chip classes a pool runs agents for, NPU chips first (in `spec.accelerators` order).

    Only `auto` and `hailo` agents touch the NPU: they request its resource (or mount the file
    with `hostDevice`). A pool whose backend is onnxruntime, or that lists no chip, has one
    class for all its nodes.
    """
    agent = pool.spec.agent
    chips = [a for a in pool.spec.accelerators if a in NPU_ACCELERATORS]
    if agent.backend == "onnxruntime" or not chips:
        return [AgentClass("cpu", "onnxruntime", None, False, None)]
    npu = agent.npu
    uses_npu = agent.backend in ("auto", "hailo")
    host_device = uses_npu and npu.host_device and bool(npu.device_file)
    out = [
        AgentClass(
            accelerator=chip,
            backend=agent.backend,
            resource=npu.resource_for(chip) if uses_npu and not host_device else None,
            host_device=host_device,
            node_requirement={"key": ACCELERATOR_LABEL, "operator": "In", "values": [chip]},
        )
        for chip in chips
    ]
    if "cpu" in pool.spec.accelerators:
        out.append(
            AgentClass(
                "cpu", "onnxruntime", None, False,
                {"key": ACCELERATOR_LABEL, "operator": "NotIn", "values": chips},
            )
        )  # fmt: skip
    return out


def daemonset_name(pool_name: str, accelerator: str = "cpu") -> str:
    return f"{AGENT}-{pool_name}-{accelerator}"


def stale_daemonsets(pool: InferencePool) -> list[str]:
    """Names of agent DaemonSets this pool may own but no longer wants: chip classes it dropped,
    and the single DaemonSet `hatswarm-agent-<pool>` of versions before per-chip classes."""
    name = pool.metadata.name
    wanted = {daemonset_name(name, c.accelerator) for c in agent_classes(pool)}
    every = [f"{AGENT}-{name}", *(daemonset_name(name, a) for a in (*NPU_ACCELERATORS, "cpu"))]
    return [n for n in every if n not in wanted]


def selector_labels(pool_name: str) -> dict[str, str]:
    """The labels that select a pool's agent pods (Service, the operator, the EdgeModel's
    scale selector); each DaemonSet adds its class label to them."""
    return {NAME_LABEL: AGENT, POOL_LABEL: pool_name}


def label_selector(pool_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool_name).items())


def common_labels(pool_name: str) -> dict[str, str]:
    return {**selector_labels(pool_name), MANAGED_BY_LABEL: "hatswarm"}


def digest(obj: Any) -> str:
    """A short stable hash of JSON-able data (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def agent_image(pool: InferencePool, accelerator: str = "cpu") -> str:
    """The agent image of a chip class: the pool's image for that chip, else its image, else
    (cluster defaults applied) the operator's own version."""
    agent = pool.spec.agent
    chip: str | None = getattr(agent.images, accelerator, None)
    return chip or agent.image or DEFAULT_AGENT_IMAGE


def settings_hash(pool: InferencePool) -> str:
    """Hash of everything about the pool that the agent pods are started with."""
    spec = pool.spec
    cloud = spec.cloud_fallback
    return digest(
        {
            "agent": spec.agent.wire(),
            "image": agent_image(pool),
            "cloudToken": cloud.token_secret_ref.wire()
            if cloud and cloud.token_secret_ref
            else None,
            "auth": spec.auth.wire(),
        }
    )


def agent_accelerator(pool: InferencePool) -> str:
    """The `--accelerator` of a pool's first class (its first chip, else cpu)."""
    return agent_classes(pool)[0].accelerator


def agent_args(pool: InferencePool, cls: AgentClass | None = None) -> list[str]:
    cls = cls or agent_classes(pool)[0]
    agent = pool.spec.agent
    auth = pool.spec.auth
    extra: list[str] = ["--control-token-file", f"{CONTROL_DIR}/{TOKEN_KEY}"]
    tokens = inference_token_ref(pool)
    if tokens is not None:
        extra += ["--auth-token-file", f"{TOKEN_DIR}/{tokens.key}"]
    if auth.tls_secret_ref is not None:
        extra += ["--tls-cert", f"{TLS_DIR}/{TLS_CERT}", "--tls-key", f"{TLS_DIR}/{TLS_KEY}"]
        if auth.mutual_tls:
            extra += ["--tls-ca", f"{TLS_DIR}/{TLS_CA}"]
    if auth.trusted_keys_secret is not None:
        extra += ["--trusted-keys", TRUSTED_KEYS_DIR]
    if auth.require_signatures:
        extra.append("--require-signatures")
    cloud = pool.spec.cloud_fallback
    if cloud is not None and cloud.token_secret_ref is not None:
        extra += [
            "--cloud-token",
            f"{CLOUD_TOKEN_NAME}={CLOUD_TOKEN_DIR}/{cloud.token_secret_ref.key}",
        ]
    for root in agent.file_roots:
        extra += ["--allow-file-root", root]
    return [
        "--host", "0.0.0.0",
        "--port", str(agent.port),
        "--node-name", "$(NODE_NAME)",
        "--accelerator", cls.accelerator,
        "--backend", cls.backend,
        "--state-dir", STATE_DIR,
        "--cache-max-bytes", str(quantity_bytes(agent.cache_size)),
        "--metrics-port", str(agent.metrics_port),
        "--log-level", "INFO",
        *extra,
    ]  # fmt: skip


def _resources(pool: InferencePool, cls: AgentClass) -> dict[str, Any]:
    agent = pool.spec.agent
    resources: dict[str, Any] = copy.deepcopy(agent.resources)
    if cls.resource:  # quantities are strings: the kubernetes client refuses an int here
        limits = resources.setdefault("limits", {})
        limits[cls.resource] = "1"
        requests = resources.get("requests")
        if isinstance(requests, dict) and cls.resource in requests:
            requests[cls.resource] = "1"
    return resources


def _affinity(user: Mapping[str, Any], requirement: dict[str, Any] | None) -> dict[str, Any]:
    """The pool's affinity with the class's node requirement ANDed into every required term."""
    affinity: dict[str, Any] = copy.deepcopy(dict(user))
    if requirement is None:
        return affinity
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({})
    for term in terms:
        term.setdefault("matchExpressions", []).append(dict(requirement))
    return affinity


def _pod_settings(pool: InferencePool, cls: AgentClass, template: dict[str, Any]) -> None:
    """spec.agent's pod settings: pull secrets, tolerations, affinity (with the class's node
    requirement), priority class, service account, extra labels and annotations (the
    operator's own labels and annotations win over extra ones of the same key)."""
    agent = pool.spec.agent
    meta, pod = template["metadata"], template["spec"]
    meta["labels"] = {**agent.pod_labels, **meta["labels"]}
    meta["annotations"] = {**agent.pod_annotations, **meta["annotations"]}
    if agent.image_pull_secrets:
        pod["imagePullSecrets"] = [ref.wire() for ref in agent.image_pull_secrets]
    if agent.tolerations:
        pod["tolerations"] = copy.deepcopy(agent.tolerations)
    affinity = _affinity(agent.affinity, cls.node_requirement)
    if affinity:
        pod["affinity"] = affinity
    if agent.priority_class_name:
        pod["priorityClassName"] = agent.priority_class_name
    if agent.service_account_name:
        pod["serviceAccountName"] = agent.service_account_name


def build_daemonsets(pool: InferencePool) -> list[dict[str, Any]]:
    """The pool's agent DaemonSets, one per chip class (:func:`agent_classes`)."""
    return [build_daemonset(pool, cls) for cls in agent_classes(pool)]


def build_daemonset(pool: InferencePool, cls: AgentClass | None = None) -> dict[str, Any]:
    """The agent DaemonSet `hatswarm-agent-<pool>-<class>` on the nodes of `spec.nodeSelector`
    of that chip class (default: the pool's first class)."""
    cls = cls or agent_classes(pool)[0]
    name, ns = pool.metadata.name, pool.metadata.namespace
    agent = pool.spec.agent
    privileged = cls.host_device
    labels = {**common_labels(name), CLASS_LABEL: cls.accelerator}

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
    for i, root in enumerate(agent.file_roots):  # model folders on the host, read-only
        volumes.append({"name": f"models-{i}", "hostPath": {"path": root, "type": "Directory"}})
        mounts.append({"name": f"models-{i}", "mountPath": root, "readOnly": True})

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
        "image": agent_image(pool, cls.accelerator),
        "imagePullPolicy": agent.image_pull_policy,
        "args": agent_args(pool, cls),
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [
            {"name": "grpc", "containerPort": agent.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": agent.metrics_port, "protocol": "TCP"},
        ],
        "resources": _resources(pool, cls),
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
    template: dict[str, Any] = {
        "metadata": {"labels": labels, "annotations": template_annotations},
        "spec": pod_spec,
    }
    _pod_settings(pool, cls, template)
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": daemonset_name(name, cls.accelerator),
            "namespace": ns,
            "labels": labels,
        },
        "spec": {
            "selector": {"matchLabels": {**selector_labels(name), CLASS_LABEL: cls.accelerator}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": template,
        },
    }
    return _stamped(obj)


def _secret_volumes(pool: InferencePool) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) for each Secret the agent reads: pool token, TLS files, cloud token."""

    def secret(name: str, secret_name: str, keys: list[str] | None, path: str) -> tuple[Any, Any]:
        source: dict[str, Any] = {"secretName": secret_name, "defaultMode": SECRET_MODE}
        if keys is not None:  # None: every key (a folder of trusted keys)
            source["items"] = [{"key": k, "path": k} for k in keys]
        return {"name": name, "secret": source}, {
            "name": name,
            "mountPath": path,
            "readOnly": True,
        }

    auth, cloud = pool.spec.auth, pool.spec.cloud_fallback
    out = [
        secret("control-token", control_secret_name(pool.metadata.name), [TOKEN_KEY], CONTROL_DIR)
    ]
    tokens = inference_token_ref(pool)
    if tokens is not None:
        out.append(secret("auth-token", tokens.name, [tokens.key], TOKEN_DIR))
    if auth.tls_secret_ref is not None:
        keys = [TLS_CERT, TLS_KEY, *([TLS_CA] if auth.mutual_tls else [])]
        out.append(secret("tls", auth.tls_secret_ref.name, keys, TLS_DIR))
    if auth.trusted_keys_secret is not None:
        out.append(secret("trusted-keys", auth.trusted_keys_secret, None, TRUSTED_KEYS_DIR))
    if cloud is not None and cloud.token_secret_ref is not None:
        ref = cloud.token_secret_ref
        out.append(secret("cloud-token", ref.name, [ref.key], CLOUD_TOKEN_DIR))
    return out


def build_token_secret(pool: InferencePool, name: str, token: str) -> dict[str, Any]:
    """A generated token Secret of the pool (`credentials.generated_secrets`), as a dict: the
    handler adopts it (the pool owns it) and creates it only when absent."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": pool.metadata.namespace,
            "labels": common_labels(pool.metadata.name),
        },
        "data": {TOKEN_KEY: base64.b64encode(f"{token}\n".encode()).decode()},
    }


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
