"""A stateful Kubernetes API emulator served over HTTP: a test double, never shipped.

Real kopf, the ``kubernetes`` client and kubectl talk to it; see ``fixture.kube_api``.
"""

from .fixture import KubeApi, kube_api
from .resources import ResourceType
from .server import ApiServer
from .store import ApiError, Store

__all__ = ["ApiError", "ApiServer", "KubeApi", "ResourceType", "Store", "kube_api"]
