"""The CRDs are generated from the pydantic types, structural, and accepted by Kubernetes'
own schema; examples pass them and every invalid example fails them naming the field."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import EdgeModel, EdgeModelSpec, InferencePool
from hatswarm_operator.api import crd as crd_module
from hatswarm_operator.api.manifests import ManifestError, parse_object
from hatswarm_operator.cli.crds import render

from .schemacheck import CRD_DIR, crd_schemas, validate

ROOT = Path(__file__).resolve().parents[4]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_crd_files_match_the_code() -> None:
    rendered = render()
    on_disk = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert on_disk == rendered, "crds/ drifted from the API types: run `make crds`"


def test_chart_crds_are_a_copy_of_crds() -> None:
    chart = ROOT / "charts" / "hatswarm" / "crds"
    assert {p.name: p.read_text() for p in chart.glob("*.yaml")} == render()


def test_changing_a_field_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift check is not vacuous: a field added to the types changes the output."""

    class NewSpec(EdgeModelSpec):
        new_field: int = 1

    class Changed(EdgeModel):
        spec: NewSpec

    before = render()
    monkeypatch.setattr(crd_module, "EdgeModel", Changed)
    after = render()
    assert after != before
    assert "newField" in after["hatswarm.io_edgemodels.yaml"]


def _nodes(schema: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        out.append((path, schema))
        for k, v in schema.get("properties", {}).items():
            out += _nodes(v, f"{path}.{k}")
        if isinstance(schema.get("items"), dict):
            out += _nodes(schema["items"], f"{path}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            out += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", ["EdgeModel", "InferencePool"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in _nodes(crd_schemas()[kind]):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "const", "nullable"):
            assert banned not in node, f"{path} has {banned}"
        assert not ("properties" in node and "additionalProperties" in node), path


def test_crd_metadata_for_kubectl() -> None:
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        assert names["categories"] == ["hatswarm"]
        version = crd["spec"]["versions"][0]
        assert "status" in version["subresources"]
        cols = [c["name"] for c in version["additionalPrinterColumns"]]
        assert cols[-1] == "Age"
        if names["kind"] == "EdgeModel":
            assert names["shortNames"] == ["em"]
            assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas.desired"
            assert {"Pool", "Ready", "Version", "Phase"} <= set(cols)
        else:
            assert names["shortNames"] == ["ipool"]
            assert {"Ready", "Nodes", "Models", "Cost/1k"} <= set(cols)


def test_kubernetes_validate_strict_accepts_crds() -> None:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    files = [str(p) for p in sorted(CRD_DIR.glob("*.yaml"))]
    proc = subprocess.run(
        [str(exe), "--strict", *files], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == len(files)


def test_kubernetes_validate_refuses_a_broken_crd(tmp_path: Path) -> None:
    crd = yaml.safe_load((CRD_DIR / "hatswarm.io_edgemodels.yaml").read_text())
    crd["spec"]["versions"][0]["served"] = "yes"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(crd))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    proc = subprocess.run([str(exe), "--strict", str(bad)], capture_output=True, check=False)
    assert proc.returncode != 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_schema_cel_and_types(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        assert validate(doc) == []
        obj = parse_object(doc, str(path))
        assert isinstance(obj, EdgeModel | InferencePool)


def _expected_field(path: Path) -> str:
    m = re.search(r"^# expect: (\S+)", path.read_text(), re.M)
    assert m, f"{path.name} must say which field is wrong (# expect: ...)"
    return m.group(1)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_fail_schema_naming_the_field(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# Invalid: "), "each invalid example says why in a comment"
    field = _expected_field(path)
    (doc,) = _docs(path)
    errors = validate(doc)
    assert errors, f"{path.name} passed the CRD schema"
    assert any(e.startswith(field) for e in errors), errors


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_fail_the_operators_own_parse(path: Path) -> None:
    """On a cluster without CEL the operator still refuses them, naming the same field."""
    (doc,) = _docs(path)
    with pytest.raises(ManifestError) as err:
        parse_object(doc, path.name)
    assert _expected_field(path).replace("spec.", "", 1).split(".")[0].split("[")[0] in str(
        err.value
    )


def test_defaults_fill_nested_objects() -> None:
    spec = crd_schemas()["EdgeModel"]["properties"]["spec"]["properties"]
    assert spec["replicas"]["default"] == {"min": 1, "desired": 1}  # max follows them
    assert spec["rollout"]["properties"]["steps"]["default"] == [10, 50, 100]
    assert "default" not in crd_schemas()["EdgeModel"]["properties"]["status"]
