"""Resource types the emulator serves: built-in ones and those registered by CRDs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class ResourceType:
    """One group/version/plural as discovery advertises it, with its storage semantics."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = True
    # scale subresource: (specReplicasPath, statusReplicasPath, labelSelectorPath) or None
    scale: tuple[str, str, str | None] | None = None
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] | None = None
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Store key: objects are shared by every version of a group/plural."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``widgets.example.com`` as in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        out = [entry]
        if self.status_subresource:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.scale is not None:
            out.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = True,
    scale: tuple[str, str, str | None] | None = None,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=short,
        categories=categories,
        status_subresource=status,
        scale=scale,
    )


_REPLICAS = (".spec.replicas", ".status.replicas", None)

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",)),
    _rt("", "v1", "nodes", "Node", namespaced=False, short=("no",)),
    _rt("", "v1", "pods", "Pod", short=("po",), categories=("all",)),
    _rt("", "v1", "services", "Service", short=("svc",), categories=("all",)),
    _rt("", "v1", "endpoints", "Endpoints", short=("ep",), status=False),
    _rt("", "v1", "events", "Event", short=("ev",), status=False),
    _rt("", "v1", "configmaps", "ConfigMap", short=("cm",), status=False),
    _rt("", "v1", "secrets", "Secret", status=False),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",), status=False),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",)),
    _rt("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), categories=("all",)),
    _rt(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short=("deploy",),
        categories=("all",),
        scale=_REPLICAS,
    ),
    _rt(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short=("rs",),
        categories=("all",),
        scale=_REPLICAS,
    ),
    _rt(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short=("sts",),
        categories=("all",),
        scale=_REPLICAS,
    ),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", status=False),
    _rt("events.k8s.io", "v1", "events", "Event", short=("ev",), status=False),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",)),
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
    ),
)


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        columns = version.get("additionalPrinterColumns")
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in subresources,
                scale=(
                    (
                        scale["specReplicasPath"],
                        scale["statusReplicasPath"],
                        scale.get("labelSelectorPath"),
                    )
                    if scale
                    else None
                ),
                schema=schema,
                printer_columns=tuple(columns) if columns else None,
                custom=True,
            )
        )
    return out
