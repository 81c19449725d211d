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
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from hatswarm_agent.control.artifacts import fsync_dir
from hatswarm_agent.protocol.v1 import control_pb2

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def entry_of(request: control_pb2.LoadModelRequest) -> dict[str, Any]:
    """One stored entry: every LoadModelRequest field under its proto name (format version 1).

    `cache_ttl_seconds` stays a JSON number, as version 1 files have always had it (proto JSON
    would write an int64 as a string, which the agents before this one refuse).
    """
    entry = json_format.MessageToDict(
        request, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    entry["cache_ttl_seconds"] = request.cache_ttl_seconds
    return entry


def request_of(entry: Any) -> control_pb2.LoadModelRequest:
    """Parse one stored entry strictly: a wrong type is a ValueError, unknown keys are
    ignored (a newer agent may have written them)."""
    if not isinstance(entry, dict):
        raise ValueError(f"model entry must be an object, got {type(entry).__name__}")
    request = control_pb2.LoadModelRequest()
    try:
        json_format.ParseDict(entry, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ValueError(f"model entry: {exc}") from None
    if not request.name or not request.uri:
        missing = "name" if not request.name else "uri"
        raise ValueError(f"model entry field {missing!r} must be a non-empty string")
    return request


class AssignmentStore:
    """Reads and atomically rewrites the assignment file (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[control_pb2.LoadModelRequest]:
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
            return [request_of(entry) for entry in doc["models"]]
        except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
            log.error("assignment file %s is corrupt (%s); starting empty", self.path, exc)
            self._set_aside()
            return []

    def save(self, models: list[control_pb2.LoadModelRequest]) -> None:
        """Replace the file with `models` atomically and durably."""
        doc = {"version": _FORMAT_VERSION, "models": [entry_of(m) for m in models]}
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
