"""A model directory as `--model-dir` reads it: flat `*.onnx` files or a Triton repository.

Triton's layout is `NAME/VERSION/model.onnx` with an optional `NAME/config.pbtxt`, so a
repository prepared for tritonserver serves unchanged. From the config the agent takes what it
can honour: `max_batch_size`, `dynamic_batching` (queue delay, queue size), `instance_group`
counts (worker threads), `version_policy`, `default_model_filename`, and `parameters` (passed
to the backend as options, e.g. `intra_op_threads`). Fields it has no use for (GPU settings,
warm-up, ...) are ignored; a model for a backend it cannot run is refused by name.

Every mistake raises RepositoryError with one line naming the path and what was expected; a
subfolder holding no config, version folder or model file (a volume's lost+found) is skipped
with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format

from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.protocol.v1 import model_config_pb2 as mc

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
MODEL_FILES = ("model.onnx", "model.hef")
# Triton's backend/platform names -> the agent backend that runs them ("" = the agent's own).
BACKENDS: Mapping[str, str] = {
    "": "",
    "onnxruntime": "",
    "onnxruntime_onnx": "",
    "hailo": "hailo",
    "hailo_hef": "hailo",
    "simulated": "simulated",
    "simulated_npu": "simulated",
}

# protobuf's text parser can skip an unknown field written `field: [ {...} ]` but not
# `field [ {...} ]` (colon omitted, which Triton configs do): add the colon outside strings
# and comments.
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|([A-Za-z_]\w*)(\s*)\[')


class RepositoryError(ValueError):
    """The model directory or one of its configs is not what the agent can serve."""


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt (Triton's text format); unknown fields are ignored."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path}: cannot read: {exc}") from exc
    text = _TOKENS.sub(lambda m: f"{m[1]}:{m[2]}[" if m[1] else m[0], text)
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config, allow_unknown_field=True)
    except text_format.ParseError as exc:
        where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}"
        raise RepositoryError(f"{where}: {str(exc).partition(' : ')[2] or exc}") from exc
    return config


def config_options(config: mc.ModelConfig) -> dict[str, str]:
    """Agent options a Triton config sets (the model's `--option`s, per model)."""
    options = {key: p.string_value for key, p in config.parameters.items()}
    if config.HasField("max_batch_size"):
        options["max_batch_size"] = str(config.max_batch_size)
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        options["max_queue_delay_us"] = str(batching.max_queue_delay_microseconds)
        if batching.default_queue_policy.max_queue_size:
            options["queue_limit"] = str(batching.default_queue_policy.max_queue_size)
    workers = sum(max(group.count, 1) for group in config.instance_group)
    if workers:
        options["workers"] = str(workers)
    return options


def _versions(model_dir: Path, config: mc.ModelConfig) -> list[str]:
    """The version directories to serve, by the config's version policy (default: latest)."""
    found = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not found:
        raise RepositoryError(
            f"{model_dir}: no version directory (expected {model_dir}/1/model.onnx)"
        )
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = found
    elif which == "specific":
        missing = sorted(set(policy.specific.versions) - set(found))
        if missing:
            raise RepositoryError(
                f"{model_dir}/{CONFIG_FILE}: version_policy asks for versions {missing}, "
                f"the directory has {found}"
            )
        chosen = sorted(policy.specific.versions)
    else:
        count = policy.latest.num_versions if which == "latest" else 1
        chosen = found[-max(count, 1) :]
    return [str(v) for v in chosen]


def _model_file(version_dir: Path, config: mc.ModelConfig) -> Path:
    names = (config.default_model_filename,) if config.default_model_filename else MODEL_FILES
    for name in names:
        if (version_dir / name).is_file():
            return version_dir / name
    raise RepositoryError(f"{version_dir}: no model file (expected {' or '.join(names)})")


def repository_models(
    model_dir: Path, backend: str, options: Mapping[str, str]
) -> list[control_pb2.LoadModelRequest]:
    """LoadModelRequests for every model in `model_dir`, flat files and Triton models alike.

    `backend` and `options` are the command line's; a model's config.pbtxt overrides them for
    that model.
    """
    if not model_dir.is_dir():
        what = "does not exist" if not model_dir.exists() else "is not a directory"
        raise RepositoryError(f"--model-dir {model_dir} {what}")
    models: list[control_pb2.LoadModelRequest] = []
    for path in sorted(model_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix == ".onnx":
            models.append(
                control_pb2.LoadModelRequest(
                    name=path.stem, uri=str(path.resolve()), backend=backend, options=options
                )
            )
        elif path.is_dir():
            if not _looks_like_a_model(path):  # lost+found on a mounted volume, notes, ...
                log.warning("--model-dir: skipping %s (no config.pbtxt, version or model)", path)
                continue
            models.extend(_triton_model(path, backend, options))
    if not models:
        raise RepositoryError(
            f"--model-dir {model_dir} holds no model (expected NAME.onnx or NAME/1/model.onnx)"
        )
    return models


def _looks_like_a_model(folder: Path) -> bool:
    """A config, a version directory or a model file: meant as a model (mistakes in it are
    errors); anything else is not ours."""
    return any(
        p.name == CONFIG_FILE or (p.is_dir() and p.name.isdigit()) or p.suffix in (".onnx", ".hef")
        for p in folder.iterdir()
    )


def _triton_model(
    model_dir: Path, backend: str, options: Mapping[str, str]
) -> list[control_pb2.LoadModelRequest]:
    config_path = model_dir / CONFIG_FILE
    config = read_config(config_path) if config_path.is_file() else mc.ModelConfig()
    name = model_dir.name
    if config.name and config.name != name:
        raise RepositoryError(
            f"{config_path}: name '{config.name}' does not match its directory '{name}'"
        )
    kind = config.backend or config.platform
    if kind not in BACKENDS:
        raise RepositoryError(
            f"{config_path}: backend '{kind}' is not served here "
            f"(supported: {', '.join(k for k in BACKENDS if k)})"
        )
    merged = {**options, **config_options(config)}
    return [
        control_pb2.LoadModelRequest(
            name=name,
            version=version,
            uri=str(_model_file(model_dir / version, config).resolve()),
            backend=BACKENDS[kind] or backend,
            options=merged,
        )
        for version in _versions(model_dir, config)
    ]
