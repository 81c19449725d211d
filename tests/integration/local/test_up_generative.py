"""`hatswarm up -f` with a `task: generate` EdgeModel: the local control loop places the tarball
of a tiny onnxruntime-genai model on the simulated nodes (their CPU, through the backend the
load names) and the openai client gets the runtime's own greedy answer through an HTTP door."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import openai
import pytest
import yaml

from tests.genaimodels import build_genai_model, reference
from tests.polling import poll
from tests.upproc import Up

pytestmark = pytest.mark.integration

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
    with Up(tmp_path / "state", "-f", str(found), "--nodes", "2") as up:
        assert poll(lambda: up.model("chat").get("phase") == "Ready", within=120), up.output
        placements = up.model("chat")["placements"]
        assert [p["state"] for p in placements] == ["Ready", "Ready"]
        door = up.line("HTTP (OpenAI").rsplit(": ", 1)[1].split(", ")[0]
        client = openai.OpenAI(base_url=f"{door.strip()}/v1", api_key=up.token())
        _, tokens, text = reference(folder, PROMPT, 8, chat=True, do_sample=False)
        answer = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=8,
            temperature=0,
        )
        assert answer.choices[0].message.content == text
        assert answer.usage is not None and answer.usage.completion_tokens == len(tokens)
