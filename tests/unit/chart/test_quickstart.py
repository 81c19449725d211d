"""The quickstart holds together offline: its files, names and commands agree with each other.

The kind e2e (tests/e2e/test_kind.py) runs the same commands on a cluster; this checks what can
be checked without one: the model file is the one its EdgeModel names (by sha256) and computes
y = x + 1, its URI is the model store's Service for the release and namespace the README uses,
the helm command renders, and the examples pass the CRDs.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from tests.unit.operator.api.schemacheck import validate as validate_cr

from .conftest import CHART, ROOT

MODEL = ROOT / "examples" / "models" / "adder.onnx"
README = CHART / "README.md"


def quickstart_commands() -> list[str]:
    text = README.read_text()
    block = text.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def adder_bytes() -> bytes:
    """How examples/models/adder.onnx was made (onnx.helper; deterministic)."""
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 4], [1.0] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[one],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hatswarm-examples"
    )
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def test_the_model_file_is_what_its_edgemodel_names() -> None:
    assert MODEL.read_bytes() == adder_bytes()
    em = yaml.safe_load((ROOT / "examples" / "model-quickstart.yaml").read_text())
    (artifact,) = em["spec"]["artifacts"]
    assert artifact["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([[0, 1, 2, 3]], dtype=np.float32)})
    expected = em["spec"]["validation"]["samples"][0]["expected"][0]["data"]
    assert y.ravel().tolist() == expected  # the validation gate's sample holds


def _flag(command: str, name: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words) if w == name]


def test_one_namespace_and_names_that_match() -> None:
    """Every command uses namespace hatswarm; the ConfigMap, the release name and the model
    store's Service line up with the URI in model-quickstart.yaml."""
    commands = quickstart_commands()
    kube = [c for c in commands if c.startswith(("kubectl", "helm"))]
    assert kube
    for c in kube:
        if c.startswith("kubectl label node") or c.startswith("kubectl create namespace"):
            continue
        assert _flag(c, "-n") == ["hatswarm"], c
    assert "kubectl create namespace hatswarm" in commands
    (install,) = [c for c in commands if c.startswith("helm install")]
    words = shlex.split(install)
    release = words[2]
    sets = dict(s.split("=", 1) for s in _flag(install, "--set"))
    (configmap,) = [c for c in commands if "create configmap" in c]
    cm_name = shlex.split(configmap)[shlex.split(configmap).index("configmap") + 1]
    assert sets["modelStore.configMap"] == cm_name
    assert f"--from-file={MODEL.relative_to(ROOT)}" in configmap
    em = yaml.safe_load((ROOT / "examples" / "model-quickstart.yaml").read_text())
    uri = em["spec"]["artifacts"][0]["uri"]
    assert uri == f"http://{release}-models.hatswarm.svc/{MODEL.name}"
    pool = yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text())
    (secret,) = [c for c in commands if "create secret generic" in c]
    assert pool["spec"]["auth"]["tokenSecretRef"]["name"] in shlex.split(secret)
    for path in ("examples/pool.yaml", "examples/model-quickstart.yaml"):
        doc = yaml.safe_load((ROOT / path).read_text())
        assert doc["metadata"]["namespace"] == "hatswarm", path


def test_the_install_command_renders_what_the_examples_need(helm4: str) -> None:
    (install,) = [c for c in quickstart_commands() if c.startswith("helm install")]
    sets = _flag(install, "--set")
    release = shlex.split(install)[2]
    proc = subprocess.run(
        [helm4, "template", release, str(CHART), "--namespace", "hatswarm",
         *[a for s in sets for a in ("--set", s)]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    objs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Service", f"{release}-models") in names  # http://hatswarm-models.hatswarm.svc
    assert ("DaemonSet", f"{release}-device-plugin") in names
    defaults = next(o for o in objs if o["metadata"]["name"] == f"{release}-config")
    assert "squat.ai/hailo" in defaults["data"]["agent-defaults.yaml"]


@pytest.mark.parametrize(
    "path", ["examples/pool.yaml", "examples/model-quickstart.yaml"], ids=lambda p: Path(p).name
)
def test_quickstart_examples_pass_the_crds(path: str) -> None:
    assert validate_cr(yaml.safe_load((ROOT / path).read_text())) == []


def test_the_readme_names_no_other_namespace() -> None:
    text = README.read_text()
    others = set(re.findall(r"(?:-n|--namespace)[ =]([a-z0-9-]+)", text)) - {"hatswarm"}
    assert others == set(), others
