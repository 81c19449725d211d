"""Process memory for the CPU backends: how much a session costs, and giving it back.

Measured here (onnxruntime 1.32, glibc): loading a 17 MB CNN leaves ~34 MB of freed parse and
optimisation buffers in malloc's heap, and an 8-image batch grows the session's arena by
~65 MB that it keeps; `malloc_trim` returns the first, an arena shrink plus `malloc_trim` the
second. One arena shared by every session (`shared_arena`, onnxruntime's environment
allocator, extended by what is asked rather than by powers of two) keeps the working set of
models that run at different times in one place instead of one per model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

import onnxruntime as ort

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")
_lock = threading.Lock()
_shared: bool | None = None  # None: not tried yet


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()
_TRIM = getattr(_LIBC, "malloc_trim", None)


def rss_bytes() -> int:
    """This process's resident set now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def trim() -> None:
    """Return malloc's free heap pages to the system (glibc); a no-op elsewhere."""
    if _TRIM is not None:
        _TRIM(0)


def shared_arena() -> bool:
    """Register one CPU arena for every session that asks for it (once per process); False
    when this onnxruntime cannot, and sessions then keep their own arenas."""
    global _shared
    with _lock:
        if _shared is None:
            try:
                info = ort.OrtMemoryInfo(
                    "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
                )
                # max_mem 0 (no cap), extend by what is requested (1), default chunk sizes.
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
                _shared = True
            except Exception as exc:  # an onnxruntime without environment allocators
                log.info("no shared onnxruntime arena: %s", exc)
                _shared = False
        return _shared
