"""Model folders on disk (onnxruntime-genai, embedding encoders): a folder, or a tarball of one
(the form a single verified artifact takes) unpacked into a private temporary folder."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from hatswarm_agent.backends.base import BackendError, DeviceInfo, LoadedModel

_M = TypeVar("_M", bound=LoadedModel)


@dataclass
class ModelFolder:
    """A model folder on disk; `cleanup` removes it when it was unpacked from a tarball."""

    path: Path
    unpacked: bool = False
    _removed: bool = field(default=False, repr=False)

    def cleanup(self) -> None:
        if self.unpacked and not self._removed:
            self._removed = True
            shutil.rmtree(self.path, ignore_errors=True)


def open_model_folder(path: Path, marker: str) -> ModelFolder:
    """The folder holding `marker` (e.g. genai_config.json): `path` itself, or a tarball
    (.tar, .tar.gz, ...: the form a single verified artifact takes) unpacked into a private
    temporary folder, with the marker at its root or in its only top-level folder."""
    if path.is_dir():
        if not (path / marker).is_file():
            raise BackendError(f"model folder {path} has no {marker}")
        return ModelFolder(path)
    if not path.is_file():
        raise BackendError(f"model path {path} does not exist")
    if not tarfile.is_tarfile(path):
        raise BackendError(f"{path.name}: expected a model folder or a tarball of one")
    target = Path(tempfile.mkdtemp(prefix="hatswarm-model-"))
    try:
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")  # refuses absolute paths, .., devices
        roots = [target, *(p for p in target.iterdir() if p.is_dir())]
        for root in roots:
            if (root / marker).is_file():
                if root != target:
                    for child in list(root.iterdir()):
                        child.rename(target / child.name)
                    root.rmdir()
                return ModelFolder(target, unpacked=True)
        raise BackendError(f"tarball {path.name} holds no {marker}")
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, tarfile.TarError | OSError):
            raise BackendError(f"cannot unpack {path.name}: {exc}") from exc
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BackendError(f"{path.name} is not a JSON object")
    return doc


def load_from_folder(path: Path, marker: str, build: Callable[[ModelFolder], _M]) -> _M:
    """`build` a model from the folder holding `marker`; an unpacked tarball is removed again
    when building fails."""
    folder = open_model_folder(path, marker)
    try:
        return build(folder)
    except BaseException:
        folder.cleanup()
        raise


class CpuModelBackend(Generic[_M]):
    """What the CPU model-folder backends share: the models they loaded, closed together."""

    def __init__(self) -> None:
        self._models: list[_M] = []

    def _track(self, model: _M) -> _M:
        self._models.append(model)
        return model

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(accelerator="cpu")

    def close(self) -> None:
        for model in self._models:
            model.close()
        self._models.clear()
