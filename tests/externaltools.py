"""Binaries the tests need from outside PyPI's lock (helm, hadolint, promtool, prometheus).

`make tools` installs them and `make test` then sets HATSWARM_REQUIRE_TOOLS=1: a tool still
missing is a broken setup, and the tests that need it fail. Without the variable (a bare
`pytest` on a laptop) they skip, saying what is missing and how to get it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "HATSWARM_REQUIRE_TOOLS"


def missing(tool: str, how: str) -> NoReturn:
    """Fail when the environment promises the tools, else skip; `how` says how to get `tool`."""
    reason = f"{tool} is missing ({how})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 says `make tools` installed it", pytrace=False)
    pytest.skip(reason)
