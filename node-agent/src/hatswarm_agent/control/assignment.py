"""The agent's last assignment, kept on disk so a restart serves without the control plane.

Every successful LoadModel/UnloadModel rewrites the file atomically (temp file, fsync,
`os.replace`, fsync of the directory): after a power cut the file is either the old or the new
assignment, never a torn one. A file that cannot be read is logged and treated as empty (the
operator will send the assignment again); it is kept aside as `<name>.corrupt` for a human.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

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


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file, fsync, `os.replace`, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
        """Replace the file with `models` atomically and durably.

        When that fails (a full disk), the old file is removed before the error propagates:
        it lists what is no longer the assignment (an unloaded model would come back after a
        restart), and starting empty is what the control plane can correct; removing a file
        needs no space.
        """
        doc = {"version": _FORMAT_VERSION, "models": [entry_of(m) for m in models]}
        data = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")
        try:
            write_atomically(self.path, data)
        except OSError:
            self.path.unlink(missing_ok=True)
            raise

    def _set_aside(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
        except OSError as exc:
            log.warning("cannot move corrupt assignment file aside: %s", exc)


class RoutingTableFile:
    """The last routing table the control plane pushed, kept beside the assignment.

    A restarted agent routes by it at once (its models come back from the assignment, its
    peers from here) instead of answering NOT_FOUND for what its peers serve until the control
    plane pushes again; a newer push replaces it as usual. Unreadable: logged, set aside, none.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> control_pb2.RoutingTable | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read routing table file %s: %s", self.path, exc)
            return None
        table = control_pb2.RoutingTable()
        try:
            json_format.Parse(raw, table, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, RecursionError) as exc:
            log.error("routing table file %s is corrupt (%s); ignored", self.path, exc)
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return None
        return table

    def save(self, table: control_pb2.RoutingTable) -> None:
        """Write `table` durably; on failure remove the stale file (see AssignmentStore.save)."""
        data = json_format.MessageToJson(table, preserving_proto_field_name=True).encode()
        try:
            write_atomically(self.path, data)
        except OSError:
            self.path.unlink(missing_ok=True)
            raise


class TableStore(Protocol):
    """Where adopted tables live (routing.table.RoutingTableStore)."""

    table: control_pb2.RoutingTable

    @property
    def generation(self) -> int: ...

    def push(self, table: control_pb2.RoutingTable) -> int: ...


class KeptRoutingTables:
    """SetRoutingTable's target: the store validates and adopts a table, then it is saved (in
    order, off the event loop) and `on_adopt` hears of it (the agent turns SERVING once it can
    route)."""

    def __init__(
        self,
        store: TableStore,
        file: RoutingTableFile | None,
        on_adopt: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._file = file
        self._on_adopt = on_adopt
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="routing-table")

    @property
    def generation(self) -> int:
        return self._store.generation

    def push(self, table: control_pb2.RoutingTable) -> int:
        generation = self._store.push(table)
        if self._store.table is table:
            if self._file is not None:
                self._writer.submit(self._save, self._file, table)
            if self._on_adopt is not None:
                self._on_adopt()
        return generation

    @staticmethod
    def _save(file: RoutingTableFile, table: control_pb2.RoutingTable) -> None:
        try:
            file.save(table)
        except OSError as exc:
            log.error("could not save routing table generation %d: %s", table.generation, exc)

    def close(self) -> None:
        """Finish the pending writes."""
        self._writer.shutdown(wait=True)
