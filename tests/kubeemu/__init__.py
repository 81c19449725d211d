"""A stateful Kubernetes API emulator served over HTTP: a test double, never shipped.

Real kopf, the ``kubernetes`` python client and kubectl talk to it over 127.0.0.1. Every test
can use the ``kube_api`` fixture (registered suite-wide by ``tests/conftest.py``)::

    def test_pool(kube_api: KubeApi) -> None:
        kube_api.apply(crd_manifest, pool_manifest)              # kubectl apply -f -
        kube_api.kubectl("get", "inferencepools", check=True)    # any kubectl command
        kube_api.store.put(node_manifest)                        # direct, keeps status
        rt = kube_api.store.type_for("hatswarm.io/v1alpha1", "InferencePool")
        kube_api.store.wait_for(lambda s: s.get(rt, "default", "p")["status"], timeout=30)
        subprocess.Popen([...kopf run...], env=kube_api.env())   # KUBECONFIG set

``kube_api.url``, ``.kubeconfig`` (token user), ``.store`` (:class:`Store`), ``.server``
(:class:`ApiServer`: ``requests`` log, ``counts()`` by verb and resource,
``close_watches()``, ``expire_watches()`` (410 on resume), ``bookmark_interval``),
``.api_client()`` (a configured ``kubernetes.client.ApiClient``). ``store.add_hook`` lets a
test react to objects being created (e.g. play the DaemonSet controller and create Pods).
"""

from .fixture import KubeApi, kube_api
from .resources import ResourceType
from .server import ApiServer, RequestCounts, RequestRecord
from .store import ApiError, Store

__all__ = [
    "ApiError",
    "ApiServer",
    "KubeApi",
    "RequestCounts",
    "RequestRecord",
    "ResourceType",
    "Store",
    "kube_api",
]
