"""A generative EdgeModel's time-to-first-token target, judged by the real operator.

One CPU node serves a tiny onnxruntime-genai model (tests/genaimodels) through its agent's
OpenAI door. The real operator (kopf, against the emulated API) reads the agent's measured TTFT
p99, reports SLOMet True against a generous target (no Event: nothing flipped), then False with
a `SLOMissed` Warning naming measured against target once the target drops below what was
measured, and True again with an `SLOMet` Event when it is raised; `kubectl get em -o wide`
shows it in the SLO column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.agentproc import free_port
from tests.genaimodels import build_genai_model
from tests.integration.operator.harness import World, pool_manifest, wait_for
from tests.integration.operator.test_generative import artifact, edge_model, tarball

pytestmark = pytest.mark.integration


def test_slo_met_flips_with_the_target(world: World, tmp_path: Path) -> None:
    port = free_port()
    world.add_node("pi-cpu", agent_args=("--backend", "onnxruntime", "--http-port", str(port)))
    build = tarball(build_genai_model(tmp_path / "tiny", seed=7))
    chat = edge_model("chat", "generate", [artifact("cpu", build, memory_mib=128)], replicas=1)
    chat["spec"]["slo"] = {"ttftP99Ms": 600000}
    world.kube.apply(pool_manifest("floor", agent={"backend": "onnxruntime",
                                                   "image": "hatswarm/agent:test"}), chat)  # fmt: skip
    world.start_operator()
    wait_for(lambda: world.ready_on("chat") == ["pi-cpu"], timeout=120, what="chat ready")

    def slo() -> dict[str, Any]:
        return world.condition("EdgeModel", "chat", "SLOMet")

    assert wait_for(lambda: slo().get("reason") == "NotMeasured", timeout=30, what="Unknown")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    for _ in range(3):
        client.completions.create(model="chat", prompt="hello world", max_tokens=4, seed=1)

    met = wait_for(lambda: slo() if slo().get("status") == "True" else None, timeout=30,
                   what="SLOMet True")  # fmt: skip
    assert "within the target 600000 ms" in met["message"], met
    measured = (world.status("EdgeModel", "chat").get("generation") or {}).get("ttftP99Ms")
    assert measured is not None and measured >= 2, measured  # a target below it can be missed
    assert world.events("chat", "SLOMissed") == [] and world.events("chat", "SLOMet") == []

    chat["spec"]["slo"] = {"ttftP99Ms": 1}
    world.kube.apply(chat)
    missed = wait_for(lambda: slo() if slo().get("status") == "False" else None, timeout=30,
                      what="SLOMet False")  # fmt: skip
    assert missed["reason"] == "TTFTAboveTarget"
    assert "above the target 1 ms" in missed["message"], missed
    warned = wait_for(lambda: world.events("chat", "SLOMissed"), timeout=30, what="the Event")
    assert "above the target 1 ms" in warned[0]["message"] and warned[0]["type"] == "Warning"

    chat["spec"]["slo"] = {"ttftP99Ms": 600000}
    world.kube.apply(chat)
    wait_for(lambda: slo().get("status") == "True", timeout=30, what="SLOMet True again")
    back = wait_for(lambda: world.events("chat", "SLOMet"), timeout=30, what="the SLOMet Event")
    assert back[0]["type"] == "Normal" and "within the target 600000 ms" in back[0]["message"]
    assert len(world.events("chat", "SLOMissed")) == 1

    # kubectl shows the verdict in the wide view (a printer column on the SLOMet condition).
    header, row = world.kube.kubectl("get", "em", "chat", "-o", "wide", check=True).stdout.split(
        "\n"
    )[:2]
    at = header.index(" SLO ") + 1  # columns are aligned; an empty one has no word to split
    assert row[at:].split()[0] == "True", (header, row)
