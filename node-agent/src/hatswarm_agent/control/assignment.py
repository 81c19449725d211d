"""The agent's last assignment, kept on disk so a restart serves without the control plane.

Every successful LoadModel/UnloadModel rewrites the file atomically (temp file, fsync,
`os.replace`, fsync of the directory): after a power cut the file is either the old or the new
assignment, never a torn one. A file that cannot be read is logged and treated as empty (the
operator will send the assignment again); it is kept aside as `<name>.corrupt` for a human.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hatswarm_agent.control.artifacts import fsync_dir
from hatswarm_agent.protocol.v1 import control_pb2

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass
class AssignedModel:
    """One model version the agent was told to serve: a LoadModelRequest as plain data."""

    name: str
    version: str
    uri: str
    sha256: str = ""
    signature: str = ""
    public_key: str = ""
    backend: str = ""
    format: str = ""
    options: dict[str, str] = field(default_factory=dict)
    cache_ttl_seconds: int = 0
    adapters: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_request(cls, req: control_pb2.LoadModelRequest) -> AssignedModel:
        return cls(
            name=req.name,
            version=req.version,
            uri=req.uri,
            sha256=req.sha256,
            signature=req.signature,
            public_key=req.public_key,
            backend=req.backend,
            format=req.format,
            options=dict(req.options),
            cache_ttl_seconds=req.cache_ttl_seconds,
            adapters=[{"name": a.name, "uri": a.uri, "sha256": a.sha256} for a in req.adapters],
        )

    def to_request(self) -> control_pb2.LoadModelRequest:
        return control_pb2.LoadModelRequest(
            name=self.name,
            version=self.version,
            uri=self.uri,
            sha256=self.sha256,
            signature=self.signature,
            public_key=self.public_key,
            backend=self.backend,
            format=self.format,
            options=self.options,
            cache_ttl_seconds=self.cache_ttl_seconds,
            adapters=[
                control_pb2.AdapterArtifact(
                    name=a.get("name", ""), uri=a.get("uri", ""), sha256=a.get("sha256", "")
                )
                for a in self.adapters
            ],
        )

    @classmethod
    def from_json(cls, data: Any) -> AssignedModel:
        """Parse one stored entry strictly: a wrong type is a ValueError, unknown keys are
        ignored (a newer agent may have written them)."""
        if not isinstance(data, dict):
            raise ValueError(f"model entry must be an object, got {type(data).__name__}")

        def text(key: str, required: bool = False) -> str:
            value = data.get(key, "")
            if not isinstance(value, str) or (required and not value):
                raise ValueError(f"model entry field {key!r} must be a non-empty string")
            return value

        options = data.get("options", {})
        if not isinstance(options, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.items()
        ):
            raise ValueError("model entry field 'options' must map strings to strings")
        adapters = data.get("adapters", [])
        if not isinstance(adapters, list) or not all(
            isinstance(a, dict) and all(isinstance(v, str) for v in a.values()) for a in adapters
        ):
            raise ValueError("model entry field 'adapters' must be a list of string maps")
        ttl = data.get("cache_ttl_seconds", 0)
        if not isinstance(ttl, int) or isinstance(ttl, bool):
            raise ValueError("model entry field 'cache_ttl_seconds' must be an integer")
        return cls(
            name=text("name", required=True),
            version=text("version"),
            uri=text("uri", required=True),
            sha256=text("sha256"),
            signature=text("signature"),
            public_key=text("public_key"),
            backend=text("backend"),
            format=text("format"),
            options=dict(options),
            cache_ttl_seconds=ttl,
            adapters=[dict(a) for a in adapters],
        )


class AssignmentStore:
    """Reads and atomically rewrites the assignment file (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[AssignedModel]:
        """The saved assignment; empty when absent or unreadable (never raises)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read assignment file %s: %s; starting empty", self.path, exc)
            return []
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
                raise ValueError("expected an object with a 'models' list")
            if doc.get("version", _FORMAT_VERSION) != _FORMAT_VERSION:
                raise ValueError(f"unknown format version {doc.get('version')!r}")
            return [AssignedModel.from_json(entry) for entry in doc["models"]]
        except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
            log.error("assignment file %s is corrupt (%s); starting empty", self.path, exc)
            self._set_aside()
            return []

    def save(self, models: list[AssignedModel]) -> None:
        """Replace the file with `models` atomically and durably."""
        doc = {"version": _FORMAT_VERSION, "models": [asdict(m) for m in models]}
        data = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)

    def _set_aside(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
        except OSError as exc:
            log.warning("cannot move corrupt assignment file aside: %s", exc)
