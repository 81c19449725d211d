"""`hatswarm up -f` with a `task: generate` EdgeModel: the local control loop places the tarball
of a tiny onnxruntime-genai model on the simulated nodes (their CPU, through the backend the
load names) and the openai client gets the runtime's own greedy answer through an HTTP door."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import openai
import pytest
import yaml

from tests.genaimodels import build_genai_model, reference
from tests.polling import poll

pytestmark = pytest.mark.integration

HATSWARM = Path(sys.executable).parent / "hatswarm"
PROMPT = "hello world"


def manifests(tmp: Path) -> tuple[Path, Path]:
    """A pool and a generative EdgeModel whose CPU build is a tarball; (folder, model folder)."""
    folder = build_genai_model(tmp / "models" / "chat", seed=7)
    tar = tmp / "models" / "chat.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        archive.add(folder, arcname="chat")
    pool = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "local", "namespace": "default"},
        "spec": {
            "nodeSelector": {"hatswarm.io/pool": "local"},
            "agent": {"backend": "simulated"},
            "failureDetection": {"probeIntervalSeconds": 0.5, "failureThreshold": 3},
        },
    }
    artifact = {
        "accelerator": "cpu",
        "format": "onnx",
        "uri": tar.resolve().as_uri(),
        "sha256": hashlib.sha256(tar.read_bytes()).hexdigest(),
        "memoryMiB": 512,
    }
    model = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {
            "pool": "local",
            "task": "generate",
            "version": "1",
            "artifacts": [artifact],
            "replicas": {"min": 1, "max": 2, "desired": 2},
        },
    }
    out = tmp / "manifests"
    out.mkdir()
    (out / "pool.yaml").write_text(yaml.safe_dump(pool))
    (out / "chat.yaml").write_text(yaml.safe_dump(model))
    return out, folder


def test_up_places_a_generative_edge_model_and_serves_chats(tmp_path: Path) -> None:
    found, folder = manifests(tmp_path)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [str(HATSWARM), "up", "-f", str(found), "--nodes", "2", "--quiet",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()

    def chat_status() -> dict[str, object]:
        try:
            models = json.loads((state / "status.json").read_text()).get("models", {})
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        chat: dict[str, object] = models.get("chat", {})
        return chat

    try:
        assert poll(lambda: chat_status().get("phase") == "Ready", within=120), "".join(lines)
        placements = chat_status()["placements"]
        assert [p["state"] for p in placements] == ["Ready", "Ready"]  # type: ignore[attr-defined]
        door = next(x for x in lines if "HTTP (OpenAI" in x).rsplit(": ", 1)[1].split(", ")[0]
        token_file = Path(next(x for x in lines if "token in" in x).rsplit(" ", 1)[1].strip())
        client = openai.OpenAI(
            base_url=f"{door.strip()}/v1", api_key=token_file.read_text().strip()
        )
        _, tokens, text = reference(folder, PROMPT, 8, chat=True, do_sample=False)
        answer = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=8,
            temperature=0,
        )
        assert answer.choices[0].message.content == text
        assert answer.usage is not None and answer.usage.completion_tokens == len(tokens)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
