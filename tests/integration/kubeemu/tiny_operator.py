"""A tiny real kopf operator for the emulator's tests: status on create, finalizer on delete.

Run as ``python -m kopf run --standalone --all-namespaces tiny_operator.py`` with
``KUBECONFIG`` aimed at the emulator. Watches ``widgets.example.com/v1``.
"""

from typing import Any

import kopf


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "kubeemu.test/tiny-operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeemu.test")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubeemu.test")
    settings.watching.server_timeout = 30


@kopf.on.create("example.com", "v1", "widgets")
async def created(body: kopf.Body, patch: kopf.Patch, spec: kopf.Spec, **_: Any) -> None:
    patch.status["phase"] = "Ready"
    patch.status["observedSize"] = spec.get("size")
    kopf.info(body, reason="Ready", message=f"size {spec.get('size')}")  # a core v1 Event


@kopf.on.delete("example.com", "v1", "widgets")
async def deleted(name: str, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f"widget {name} is going away")
