"""`hatswarm up --nodes-file`: a node may declare the memory it offers (memoryMiB)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hatswarm_operator.local.processes import load_nodes_file


def nodes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nodes.yaml"
    path.write_text(text)
    return path


def test_memory_mib_is_read_and_optional(tmp_path: Path) -> None:
    path = nodes_file(
        tmp_path,
        "- {name: pi-2gb, accelerator: cpu, memoryMiB: 1913}\n- {name: pi-any, accelerator: cpu}\n",
    )
    small, any_ = load_nodes_file(path, {"hatswarm.io/pool": "local"})
    assert (small.name, small.memory_mib) == ("pi-2gb", 1913)
    assert any_.memory_mib is None  # the default budget (3072 MiB), as before


@pytest.mark.parametrize("value", ["2Gi", "0", "-5", "1.5", "true"])
def test_a_bad_memory_mib_names_the_node_and_the_value(tmp_path: Path, value: str) -> None:
    path = nodes_file(tmp_path, f"- {{name: pi-x, accelerator: cpu, memoryMiB: {value}}}\n")
    with pytest.raises(ValueError, match=r"node pi-x: memoryMiB must be a whole number of MiB"):
        load_nodes_file(path, {})
