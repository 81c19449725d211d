"""Serve the emulated Kubernetes API on its own: ``python -m tests.kubeemu``.

For a benchmark or a demo that needs a cluster in another process (the fleet benchmark runs
the operator, the emulator and the simulated agents as separate processes, so each one's CPU
is its own). Prints ``kubeemu ready on <url> kubeconfig <path>`` once serving, then serves
until its stdin closes or it gets SIGTERM/SIGINT. Manifests given with ``--load`` (YAML, many
documents per file) are put straight into the store, status kept (Ready Nodes, Running Pods).

    python -m tests.kubeemu --kubeconfig /tmp/kubeemu.yaml --load crds/ --load nodes.yaml
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import threading
from pathlib import Path

import yaml

from .fixture import write_kubeconfig
from .server import ApiServer
from .store import Store


def _manifests(path: Path) -> list[dict[str, object]]:
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    docs = []
    for f in files:
        docs += [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
    return docs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.kubeemu", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", type=Path, required=True, help="where to write a kubeconfig")
    p.add_argument("--load", type=Path, action="append", default=[], help="YAML file or folder")
    p.add_argument("--bookmark-interval", type=float, default=60.0, help="seconds (real: ~60)")
    p.add_argument("--history", type=int, default=10_000, help="watch events kept (410 after)")
    args = p.parse_args(argv)
    store = Store(history_size=args.history)
    for path in args.load:
        if not path.exists():
            p.error(f"--load {path}: no such file or folder")
        for doc in _manifests(path):
            store.put(doc)
    token = secrets.token_hex(16)
    server = ApiServer(store, token=token, bookmark_interval=args.bookmark_interval)
    server.start()
    write_kubeconfig(args.kubeconfig, server.url, token)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print(f"kubeemu ready on {server.url} kubeconfig {args.kubeconfig}", flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
