"""`hatswarm validate` on hostile files: every one is an INVALID line naming the file, never a
traceback, and a duplicate key is an error as kubectl makes it."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import yaml
from hatswarm_operator.api.manifests import MAX_DEPTH, StrictLoader
from hatswarm_operator.cli.validate import main

POOL = """\
apiVersion: hatswarm.io/v1alpha1
kind: InferencePool
metadata:
  name: p
spec:
  nodeSelector: {hatswarm.io/pool: p}
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (POOL.replace("  name: p\n", "  name: p\n  name: q\n").encode(), "duplicate key 'name'"),
        (POOL.encode() + b"  extra: \xff\xfe\n", "not UTF-8 text (byte 0xff at offset"),
        (("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "not YAML"),
        (
            (
                POOL
                + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200))
                + "  " * 201
                + "x: 1\n"
            )
            .replace("spec:\n", "spec:\n  deep:\n", 1)
            .encode(),
            f"nested deeper than {MAX_DEPTH} levels",
        ),
    ],
    ids=["duplicate-key", "non-utf8", "flow-nesting", "block-nesting"],
)
def test_hostile_manifests_are_invalid_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    assert main(["-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"INVALID {path}") and message in err
    assert "Traceback" not in err


def test_a_valid_pool_passes_and_merge_keys_may_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(POOL)
    assert main(["-f", str(tmp_path)]) == 0
    assert "ok" in capsys.readouterr().out
    assert yaml.load("base: &b {x: 1}\nm:\n  <<: *b\n  x: 2\n", Loader=StrictLoader)["m"] == {
        "x": 2
    }


def test_the_c_loader_is_used_when_pyyaml_has_it() -> None:
    if getattr(yaml, "__with_libyaml__", False):
        assert issubclass(StrictLoader, yaml.CSafeLoader)


def test_non_utf8_on_standard_input_is_invalid_with_the_offset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(POOL.encode() + b"  extra: \xff\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["-f", "-"]) == 1
    err = capsys.readouterr().err
    assert "not UTF-8 text (byte 0xff at offset" in err and "Traceback" not in err
