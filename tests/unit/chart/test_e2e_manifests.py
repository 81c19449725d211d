"""The kind e2e cannot run here (no kind, no container engine): check what it would apply.

Its in-cluster client Job and the chart as it installs it (the quickstart's `--set` flags plus
values-kind.yaml) pass kubernetes-validate --strict on the kind node's Kubernetes minor and the
chart's floor; the client script compiles; every quickstart command is one it knows how to run.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import test_kind as e2e

from .conftest import CHART, CRD_KINDS

KIND_NODE_MINORS = ("1.28.0", "1.33.0")  # the chart's floor; kind v0.29's default node image


def _validate(objs: list[dict[str, Any]]) -> list[str]:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors = []
    for version in KIND_NODE_MINORS:
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {err.message}")
    return errors


def test_the_in_cluster_client_job_is_valid() -> None:
    job = e2e.client_job("pool-token", seconds=60)
    assert _validate([job]) == []
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    compile(script, "e2e-client", "exec")
    assert "floor-1.hatswarm.svc:8001" in script  # the Service, not a pod
    assert "insecure_channel(target)" in script  # one new connection per request


def test_every_quickstart_command_is_run_by_the_e2e(helm4: str) -> None:
    commands = e2e.quickstart_commands()
    assert any(c.startswith("helm install") for c in commands)
    assert any(c.startswith("helm test") for c in commands)
    assert any("kubectl -n hatswarm wait em/adder" in c for c in commands)
    ran = [argv for c in commands if (argv := e2e.as_run_here(c, helm4)) is not None]
    assert len(ran) == len([c for c in commands if not c.startswith("kubectl label node")])
    install = next(
        a for a in ran if a[:4] == [helm4, "--kube-context", "kind-hatswarm-e2e", "install"]
    )
    assert install[-2:] == ["-f", str(e2e.HERE / "values-kind.yaml")]
    assert not any("openssl" in " ".join(a) for a in ran)  # the secret's value is made here


def test_the_chart_as_the_e2e_installs_it_is_valid(helm4: str) -> None:
    install = next(c for c in e2e.quickstart_commands() if c.startswith("helm install"))
    words = shlex.split(install)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    cmd = [helm4, "template", words[2], str(CHART), "--namespace", "hatswarm",
           *[a for s in sets for a in ("--set", s)], "-f", str(e2e.HERE / "values-kind.yaml")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] not in CRD_KINDS]
    assert _validate(objs) == []
    images = {
        c["imagePullPolicy"]
        for o in objs
        if o["kind"] in ("Deployment", "Job", "Pod")
        for c in (o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"])["containers"]
    }
    assert images == {"Never"}  # everything of ours runs from the images `kind load` put there


def test_kind_workers_are_the_quickstart_nodes() -> None:
    nodes = yaml.safe_load(Path(e2e.HERE / "kind-config.yaml").read_text())["nodes"]
    workers = [n for n in nodes if n["role"] == "worker"]
    labels = [
        shlex.split(c)[4:] for c in e2e.quickstart_commands() if c.startswith("kubectl label node")
    ]
    assert len(workers) == len(labels) == e2e.WORKERS
    for node, wanted in zip(workers, labels, strict=True):
        assert dict(w.split("=", 1) for w in wanted) == node["labels"]
