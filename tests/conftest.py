"""Suite-wide pytest setup: the repository root on sys.path and shared fixture plugins."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

pytest_plugins = ["tests.kubeemu.fixture"]
