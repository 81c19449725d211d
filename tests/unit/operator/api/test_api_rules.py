"""What `kubectl explain` and `hatswarm validate` tell a user: every schema field described,
conditions as list-maps with RFC 3339 times, no YAML anchors, Kubernetes name rules, replicas
that follow desired/min, and messages naming the field, the offending value and the rule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.edgemodel import Replicas
from hatswarm_operator.api.manifests import ManifestError, parse_object
from hatswarm_operator.cli.crds import render
from hatswarm_operator.cli.main import main

from .schemacheck import crd_schemas, validate

ROOT = Path(__file__).resolve().parents[4]
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
KINDS = ["EdgeModel", "InferencePool"]


def fields(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every field of a schema (object properties, through lists and maps), with its path."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, sub in schema.get("properties", {}).items():
        out.append((f"{path}.{name}", sub))
        out += fields(sub, f"{path}.{name}")
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            out += fields(schema[key], f"{path}{mark}")
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind: str) -> None:
    all_fields = fields(crd_schemas()[kind])
    assert len(all_fields) > 80  # the walk reaches spec and status in depth
    missing = [path for path, node in all_fields if not node.get("description", "").strip()]
    assert missing == [], f"{kind}: fields without a description: {missing}"


def test_the_walk_finds_a_missing_description() -> None:
    schema = {"properties": {"spec": {"description": "d", "properties": {"x": {"type": "string"}}}}}
    assert [p for p, n in fields(schema) if "description" not in n] == [".spec.x"]


@pytest.mark.parametrize("kind", KINDS)
def test_conditions_are_list_maps_with_rfc3339_times(kind: str) -> None:
    conditions = crd_schemas()[kind]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert "type" in item["required"]  # a map key must always be there
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    times = [p for p, n in fields(crd_schemas()[kind]) if n.get("format") == "date-time"]
    expected = {
        "EdgeModel": {".status.canary.startedAt", ".status.lastScaleTime"},
        "InferencePool": {".status.nodes[].lastSeen"},
    }[kind]
    assert expected <= set(times)


def test_generated_yaml_has_no_anchors() -> None:
    for name, text in render().items():
        assert not re.search(r"[&*]id\d+", text), name
    # The schemas repeat identical lists (enums, required): written out each time.
    assert render()["hatswarm.io_edgemodels.yaml"].count("- hailo8l") >= 2


def test_secret_references_are_typed() -> None:
    auth = crd_schemas()["InferencePool"]["properties"]["spec"]["properties"]["auth"]["properties"]
    assert set(auth["tlsSecretRef"]["properties"]) == {"name"}  # kubernetes.io/tls: fixed keys
    assert auth["tokenSecretRef"]["properties"]["key"]["default"] == "token"
    spec = crd_schemas()["EdgeModel"]["properties"]["spec"]["properties"]
    public = spec["artifacts"]["items"]["properties"]["signature"]["properties"]["publicKeyRef"]
    assert "default" not in public["properties"]["key"]
    assert public["required"] == ["name", "key"]  # no made-up default for a public key


@pytest.mark.parametrize(
    ("replicas", "bounds"),
    [
        ({}, (1, 1, 1)),
        ({"min": 2}, (2, 2, 2)),  # was refused: "min must be <= max"
        ({"desired": 3}, (1, 3, 3)),  # was silently clamped to 1
        ({"min": 1, "max": 5, "desired": 9}, (1, 5, 5)),
    ],
)
def test_replicas_max_follows_desired_and_min(
    replicas: dict[str, int], bounds: tuple[int, int, int]
) -> None:
    r = Replicas.model_validate(replicas)
    assert (r.min, r.upper(), r.target()) == bounds
    doc = model_doc(replicas=replicas)
    assert validate(doc) == []
    assert isinstance(parse_object(doc), EdgeModel)


def model_doc(name: str = "m", **spec: Any) -> dict[str, Any]:
    artifact = {"accelerator": "cpu", "format": "onnx", "uri": "file:///m.onnx", "sha256": "a" * 64}
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {"pool": "floor-1", "version": "1", "artifacts": [artifact], **spec},
    }


def pool_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {},
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (pool_doc("1floor"), "'1floor' must be a DNS-1035 label"),
        (pool_doc("floor_1"), "'floor_1' must be a DNS-1035 label"),
        (pool_doc("f" * 64), "(64 characters) must have at most 63 characters"),
        (model_doc("Defects"), "'Defects' must be a DNS-1123 label"),
        (model_doc("m" * 64), "(64 characters) must have at most 63"),
        (model_doc(pool="1floor"), "spec.pool: '1floor' must be a DNS-1035 label"),
    ],
)
def test_kubernetes_name_rules(doc: dict[str, Any], message: str) -> None:
    """A name the cluster would refuse later (a Service, a label value) is refused up front,
    by the schema and by the operator's own parse."""
    assert validate(doc), "the CRD schema accepted it"
    with pytest.raises(ManifestError) as err:
        parse_object(doc)
    assert message in str(err.value)


def test_good_names_pass() -> None:
    for doc in (
        pool_doc("floor-1"),
        pool_doc("f" * 63),
        model_doc("2nd-line"),
        model_doc("m" * 63),
    ):
        assert validate(doc) == []
        assert isinstance(parse_object(doc), EdgeModel | InferencePool)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"replcas": {"min": 1}},
            "spec.replcas: unknown field 'replcas': did you mean `replicas`?",
        ),
        ({"rollout": {"canaryWieght": 5}}, "did you mean `canaryWeight`?"),
        (
            {"slo": {"p99": 5}},
            "unknown field 'p99' (fields: p99LatencyMs, availabilityPercent, ttftP99Ms)",
        ),
        ({"replicas": {"min": "two"}}, "spec.replicas.min: 'two' must be a valid integer"),
        ({"cache": {"enabled": "maybe"}}, "spec.cache.enabled: 'maybe' must be a valid boolean"),
    ],
)
def test_messages_name_field_value_and_rule(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_object(model_doc(**spec), "m.yaml")
    assert message in str(err.value)


def _art(accelerator: str) -> dict[str, Any]:
    fmt = "onnx" if accelerator == "cpu" else "hef"
    return {"accelerator": accelerator, "format": fmt, "uri": "file:///m", "sha256": "a" * 64}


SAMPLE = {"name": "x", "shape": [1], "data": [1.0]}


@pytest.mark.parametrize(
    ("task", "chips", "extra", "refused"),
    [
        (None, ["hailo8l", "hailo8", "cpu"], {}, ""),  # the default: tensor, anywhere
        ("tensor", ["hailo8", "hailo10h"], {}, ""),
        ("generate", ["hailo10h", "cpu"], {}, ""),
        ("generate", ["cpu"], {}, ""),
        ("embed", ["cpu"], {}, ""),
        ("generate", ["hailo10h", "hailo8"], {}, "no runtime on hailo8 or hailo8l"),
        ("generate", ["hailo8l", "cpu"], {}, "no runtime on hailo8 or hailo8l"),
        ("embed", ["hailo8"], {}, "no runtime on hailo8 or hailo8l"),
        ("embed", ["cpu", "hailo10h"], {}, "task embed runs on cpu only"),
        (
            "generate",
            ["cpu"],
            {"validation": {"samples": [{"inputs": [SAMPLE], "expected": [SAMPLE]}]}},
            "task tensor only",
        ),
        (
            "embed",
            ["cpu"],
            {"escalation": {"output": "p", "threshold": 0.5, "target": {"cloud": True}}},
            "task tensor only",
        ),
    ],
)
def test_what_a_task_may_run_on(
    task: str | None, chips: list[str], extra: dict[str, Any], refused: str
) -> None:
    """The API server (CEL) and the operator's own parse agree on every case."""
    doc = model_doc(artifacts=[_art(c) for c in chips], **extra)
    if task is not None:
        doc["spec"]["task"] = task
    errors = validate(doc)
    if not refused:
        assert errors == []
        model = parse_object(doc)
        assert isinstance(model, EdgeModel) and model.spec.task == (task or "tensor")
        return
    assert any(refused in e for e in errors), errors
    with pytest.raises(ManifestError, match=refused):
        parse_object(doc)


def test_suggestions_inside_lists() -> None:
    doc = model_doc()
    doc["spec"]["artifacts"][0]["accelerater"] = "cpu"
    with pytest.raises(ManifestError, match=r"artifacts\[0\]\.accelerater: .*`accelerator`"):
        parse_object(doc)


def _marked(path: Path, mark: str) -> str:
    m = re.search(rf"^# {mark}: (.+)$", path.read_text(), re.M)
    assert m, f"{path.name} needs a `# {mark}:` line"
    return m.group(1).strip()


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_validate_names_the_offending_value(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert _marked(path, "value") in err, err
    field = _marked(path, "expect").replace("spec.", "", 1)
    assert field.split(".")[-1].split("[")[0] in err


def test_every_invalid_example_is_one_document() -> None:
    for path in INVALID:
        assert len([d for d in yaml.safe_load_all(path.read_text()) if d]) == 1, path.name


# What plain JSON-schema tools (kubeconform-style GitOps checks) cannot see: the README lists
# these rules as needing the API server (CEL, list-map keys) or strict unknown-field checks.
NEEDS_CEL = {
    "autoscale-without-max.yaml",
    "embed-on-hailo10h.yaml",
    "escalation-two-targets.yaml",
    "generate-on-hailo8.yaml",
    "hef-on-cpu.yaml",
    "pool-mtls-without-secret.yaml",
    "replicas-min-above-max.yaml",
    "rollout-step-below-canary.yaml",
}
NEEDS_LIST_MAP = {"duplicate-accelerator.yaml"}
NEEDS_STRICT = {"tls-secret-with-key.yaml", "unknown-field.yaml"}


def _strict(schema: Any, path: tuple[str, ...] = ()) -> Any:
    """The schema as `kubeconform -strict` reads it: unknown fields are errors."""
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v, (*path, k)) for k, v in schema.items()}
    if "properties" in schema and path[-2:] != ("properties", "metadata"):
        out.setdefault("additionalProperties", False)
    return out


def test_which_invalid_examples_plain_json_schema_misses() -> None:
    import jsonschema

    plain_misses, strict_misses = set(), set()
    for path in INVALID:
        (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        schema = crd_schemas()[doc["kind"]]
        if not list(jsonschema.Draft7Validator(schema).iter_errors(doc)):
            plain_misses.add(path.name)
        if not list(jsonschema.Draft7Validator(_strict(schema)).iter_errors(doc)):
            strict_misses.add(path.name)
    assert strict_misses == NEEDS_CEL | NEEDS_LIST_MAP
    assert plain_misses == NEEDS_CEL | NEEDS_LIST_MAP | NEEDS_STRICT


@pytest.mark.parametrize(
    ("accelerator", "fmt", "accepted"),
    [
        ("cpu", "gguf", True),
        ("cpu", "onnx", True),
        ("hailo8", "gguf", False),
        ("cpu", "hef", False),
    ],
)
def test_cpu_takes_onnx_or_gguf(accelerator: str, fmt: str, accepted: bool) -> None:
    """The CRD's CEL rule and the pydantic validator agree: llama.cpp's GGUF runs on the CPU."""
    doc = model_doc()
    doc["spec"]["artifacts"][0].update(accelerator=accelerator, format=fmt, uri=f"file:///m.{fmt}")
    if fmt == "gguf":
        doc["spec"]["task"] = "generate"
    errors = validate(doc)
    if accepted:
        assert errors == []
        assert isinstance(parse_object(doc), EdgeModel)
    else:
        assert any("cpu takes format onnx or gguf" in e for e in errors), errors
        with pytest.raises(ValueError, match="cpu takes format onnx or gguf"):
            parse_object(doc)


def test_a_gguf_file_needs_a_generative_task() -> None:
    """A GGUF file is a llama.cpp model: a tensor model of one is refused by both checks."""
    doc = model_doc()
    doc["spec"]["artifacts"][0].update(format="gguf", uri="file:///m.gguf")
    errors = validate(doc)
    assert any("a GGUF file is a llama.cpp model" in e for e in errors), errors
    with pytest.raises(ManifestError, match=r"a GGUF file is a llama\.cpp model"):
        parse_object(doc)
    doc["spec"]["task"] = "embed"
    assert validate(doc) == []
