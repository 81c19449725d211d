"""`--model-dir` reading: flat files, Triton repositories, config.pbtxt, and each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from hatswarm_agent.control.repository import RepositoryError, read_config, repository_models


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(
    repo: Path, backend: str = "", **options: str
) -> dict[tuple[str, str], tuple[str, str, dict[str, str]]]:
    return {
        (m.name, m.version): (Path(m.uri).name, m.backend, dict(m.options))
        for m in repository_models(repo, backend, options)
    }


def test_flat_and_triton_layouts_side_by_side(tmp_path: Path) -> None:
    touch(tmp_path / "flat.onnx")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / ".cache" / "junk")
    (tmp_path / "lost+found").mkdir()  # a mounted volume's: not a model
    touch(tmp_path / "docs" / "README.md")
    for version in ("1", "2", "10"):
        touch(tmp_path / "cnn" / version / "model.onnx")
    touch(tmp_path / "yolo" / "1" / "model.hef")
    models = load(tmp_path, workers="3")
    # No config: the latest version only (numeric order: 10 > 2), like tritonserver.
    assert sorted(models) == [("cnn", "10"), ("flat", ""), ("yolo", "1")]
    assert models["cnn", "10"] == ("model.onnx", "", {"workers": "3"})
    assert models["yolo", "1"][0] == "model.hef"


def test_config_pbtxt_sets_options_versions_and_backend(tmp_path: Path) -> None:
    for version in ("1", "2", "3"):
        touch(tmp_path / "m" / version / "weights.onnx")
    touch(
        tmp_path / "m" / "config.pbtxt",
        """
        name: "m"   # must match the directory
        platform: "hailo_hef"
        max_batch_size: 0
        default_model_filename: "weights.onnx"
        version_policy: { specific { versions: [ 1, 3 ] } }
        dynamic_batching { max_queue_delay_microseconds: 250 default_queue_policy { max_queue_size: 9 } }
        instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 0 ] } ]
        parameters { key: "profile" value: { string_value: "yolov8s" } }
        optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" } ] } }
        """,
    )
    models = load(tmp_path, "simulated", workers="8", profile="x")
    assert sorted(models) == [("m", "1"), ("m", "3")]
    name, backend, options = models["m", "3"]
    assert (name, backend) == ("weights.onnx", "hailo")
    assert options == {
        "workers": "3",  # 2 + 1 (a count of 0 is one instance), overriding the command line
        "profile": "yolov8s",
        "max_batch_size": "0",  # present, so it counts even as zero
        "max_queue_delay_us": "250",
        "queue_limit": "9",
    }


def test_onnxruntime_config_keeps_the_command_line_backend(tmp_path: Path) -> None:
    """A Triton config says onnxruntime; `--backend simulated` still paces the ONNX file."""
    touch(tmp_path / "m" / "1" / "model.onnx")
    touch(
        tmp_path / "m" / "config.pbtxt",
        'backend: "onnxruntime"\nversion_policy { latest { num_versions: 2 } }',
    )
    assert load(tmp_path, "simulated")["m", "1"][1] == "simulated"
    assert "max_batch_size" not in load(tmp_path)["m", "1"][2]  # absent: the agent's default


@pytest.mark.parametrize(
    ("layout", "config", "message"),
    [
        ({}, None, "holds no model (expected NAME.onnx or NAME/1/model.onnx)"),
        ({"m/model.onnx": ""}, None, "no version directory (expected"),
        ({"m/config.pbtxt": ""}, None, "no version directory (expected"),
        ({"m/1/other.onnx": ""}, None, "no model file (expected model.onnx or model.hef)"),
        ({"m/1/model.onnx": ""}, 'name: "other"', "name 'other' does not match its directory 'm'"),
        ({"m/1/model.onnx": ""}, 'backend: "pytorch"', "backend 'pytorch' is not served here"),
        ({"m/1/model.onnx": ""}, 'platform: "ensemble"', "backend 'ensemble' is not served here"),
        ({"m/1/model.onnx": ""}, "max_batch_size: many", "config.pbtxt:1:"),
        (
            {"m/1/model.onnx": ""},
            "version_policy { specific { versions: [ 2 ] } }",
            "version_policy asks for versions [2], the directory has [1]",
        ),
    ],
)
def test_mistakes_name_the_path(
    tmp_path: Path, layout: dict[str, str], config: str | None, message: str
) -> None:
    for rel, text in layout.items():
        touch(tmp_path / rel, text)
    if config is not None:
        touch(tmp_path / "m" / "config.pbtxt", config)
    with pytest.raises(RepositoryError) as err:
        repository_models(tmp_path, "", {})
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        repository_models(tmp_path / "nope", "", {})
    with pytest.raises(RepositoryError, match="is not a directory"):
        repository_models(touch(tmp_path / "file.onnx"), "", {})


def test_colon_less_lists_inside_strings_and_comments_stay_untouched(tmp_path: Path) -> None:
    config = read_config(
        touch(
            tmp_path / "config.pbtxt",
            'name: "a [b]" # c [d\ninput [ { name: "x [y]" dims: [ 1 ] } ]',
        )
    )
    assert config.name == "a [b]" and config.input[0].name == "x [y]"
