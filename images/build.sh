#!/usr/bin/env bash
# Build the hatswarm images for linux/amd64 (kind, CI) and linux/arm64 (Raspberry Pi 5):
#   $REGISTRY/{agent,operator}:$VERSION-{amd64,arm64}, plus $REGISTRY/{agent,operator}:$VERSION
#   for this machine's arch; with --push, $REGISTRY/{agent,operator}:$VERSION is a manifest list
#   over both arches (REGISTRY default ghcr.io/hatswarm).
#
#   images/build.sh                          # both images, both arches
#   images/build.sh --platform linux/arm64   # one arch (comma-separated list)
#   images/build.sh --only agent             # one image: agent | operator | agent-hailo
#   images/build.sh --push                   # and push: per-arch images + a manifest list
#   images/build.sh --engine buildx --only agent-hailo --platform linux/arm64 \
#       --build-arg HAILORT_VERSION=4.20.0   # the HailoRT variant (images/README.md)
#   images/build.sh --wheelhouse             # also fetch every target wheel into the context
#                                            # (buildx/bud then build with PIP_NO_INDEX=1)
#   images/build.sh --context-only           # just prepare build/images/ (wheels, requirements)
#   images/build.sh --print-config agent     # the image config the rootfs engine applies
#   images/build.sh --no-gguf                # the agent without llama.cpp (GGUF=0 does the same)
#
# GGUF models: PyPI has llama-cpp-python only as an sdist, so the agent images carry a wheel built
# here once per arch by tools/build_gguf_wheel.py (portable; arm64 cross-compiled, no emulation)
# and cached in .cache/wheels (minutes the first time; needs cmake and, for arm64 on x86-64,
# g++-aarch64-linux-gnu). images/README.md has the cost.
#
# Engines (--engine; default buildx when docker buildx has a daemon, else rootfs):
#   rootfs  no registry, no emulation: a Debian bookworm root filesystem per arch from Debian's
#           packages (images/rootfs.sh: mmdebstrap --variant=extract), the application from each
#           arch's wheels (images/install.py: pip --platform ... --target), committed with
#           `buildah --storage-driver vfs` (from, add, config, commit --format docker). Needs
#           buildah, mmdebstrap, Debian's mirror and PyPI (or a wheelhouse), and root.
#   buildx  images/*.Dockerfile with `docker buildx build --platform ...`: their install stage
#           runs on the build platform (pip --platform) and their final stage has no RUN, so a
#           multi-arch build needs no QEMU either (agent-hailo excepted: apt runs on arm64).
#   bud     the same Dockerfiles with `buildah bud --platform linux/ARCH` (needs the registry for
#           python:3.11-slim-bookworm, or --build-arg PYTHON_IMAGE=<a local image>).
# Images are committed in Docker format, which keeps HEALTHCHECK (OCI image configs have no
# such field; Kubernetes ignores it either way and uses the chart's gRPC/HTTP probes).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' node-agent/pyproject.toml | head -1)"
REGISTRY="${REGISTRY:-ghcr.io/hatswarm}"
PLATFORMS="${PLATFORMS:-linux/amd64,linux/arm64}"
IMAGES=(operator agent)
ENGINE="${ENGINE:-}"
PUSH=0
WHEELHOUSE=0
CONTEXT_ONLY=0
GGUF="${GGUF:-1}"
BUILD_ARGS=()
OLD_IDS=()
REBUILT=""  # the arches whose base this run rebuilt (REBUILD_BASE=1 rebuilds each once)
CTRS=()  # buildah working containers: removed on exit, also when a step fails
trap 'for c in "${CTRS[@]}"; do buildah --storage-driver vfs rm "$c" >/dev/null 2>&1 || true; done' EXIT
UV="${UV:-python3 -m uv}"
PYTHON="${PYTHON:-}"  # runs pip for the target arches: any CPython 3.9+ with pip (uv venvs have none)
CTX=build/images
BUILDAH=(buildah --storage-driver vfs)
export BUILDAH_FORMAT=docker  # working containers in Docker format: HEALTHCHECK survives config
BASE_REPO="${BASE_REPO:-localhost/hatswarm-base}"
BASE_TAG=bookworm-python3.11
SOURCE_URL=https://github.com/hatswarm/hatswarm

# --- the image configuration (the Dockerfiles say the same; tests/unit/chart/test_images.py
# --- compares them) -------------------------------------------------------------------------
print_config() {  # ROLE -> "kind<TAB>value" lines
  local role="$1" desc
  case "$role" in
    agent) desc="hatswarm node agent: Open Inference Protocol gRPC for Raspberry Pi 5 + AI HAT+ (Hailo), onnxruntime and a simulated NPU" ;;
    operator) desc="hatswarm operator: EdgeModel and InferencePool on k3s, placement, failover, rollout and cost" ;;
    *) echo "build.sh: no rootfs config for $role" >&2; return 2 ;;
  esac
  printf 'label\t%s\n' \
    "org.opencontainers.image.title=hatswarm-$role" \
    "org.opencontainers.image.description=$desc" \
    "org.opencontainers.image.licenses=Apache-2.0" \
    "org.opencontainers.image.source=$SOURCE_URL" \
    "org.opencontainers.image.url=$SOURCE_URL" \
    "org.opencontainers.image.documentation=$SOURCE_URL/blob/main/images/README.md" \
    "org.opencontainers.image.vendor=hatswarm"
  printf 'env\t%s\n' "PATH=/opt/hatswarm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  printf 'user\t10001:10001\n'
  case "$role" in
    agent)
      printf 'env\tHATSWARM_HEALTH_ADDR=127.0.0.1:8001\n'
      printf 'workingdir\t/var/lib/hatswarm\n'
      printf 'port\t%s\n' 8001 9090
      printf 'healthcheck\t%s\n' "CMD [\"python3\", \"-c\", \"import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;ch=grpc.insecure_channel(os.environ['HATSWARM_HEALTH_ADDR']);sys.exit(g.HealthStub(ch).Check(h.HealthCheckRequest(),timeout=3).status!=h.HealthCheckResponse.SERVING)\"]"
      printf 'entrypoint\t["hatswarm-agent"]\n'
      printf 'cmd\t["--host", "0.0.0.0", "--port", "8001", "--metrics-port", "9090", "--state-dir", "/var/lib/hatswarm"]\n'
      ;;
    operator)
      printf 'workingdir\t/\n'
      printf 'port\t%s\n' 8080 9100
      printf 'healthcheck\t%s\n' "CMD [\"python3\", \"-c\", \"import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/healthz',timeout=3)\"]"
      printf 'entrypoint\t["hatswarm-operator"]\n'
      printf 'cmd\t["--all-namespaces"]\n'
      ;;
  esac
  printf 'healthcheck-%s\n' "interval	15s" "timeout	5s" "start-period	30s" "retries	3"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) PLATFORMS="$2"; shift 2 ;;
    --push) PUSH=1; shift ;;
    --wheelhouse) WHEELHOUSE=1; shift ;;
    --context-only) CONTEXT_ONLY=1; shift ;;
    --gguf) GGUF=1; shift ;;
    --no-gguf) GGUF=0; shift ;;
    --engine) ENGINE="$2"; shift 2 ;;
    --only) IMAGES=("$2"); shift 2 ;;
    --build-arg) BUILD_ARGS+=(--build-arg "$2"); shift 2 ;;
    --print-config) print_config "$2"; exit 0 ;;
    --print-platforms) tr ',' '\n' <<<"$PLATFORMS"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
ARCHES=()
for platform in ${PLATFORMS//,/ }; do
  case "$platform" in
    linux/amd64|linux/arm64) ARCHES+=("${platform#linux/}") ;;
    *) echo "build.sh: unsupported platform $platform (linux/amd64, linux/arm64)" >&2; exit 2 ;;
  esac
done

# --- the build context: our wheels, requirements exported from uv.lock, the installer --------
rm -rf "$CTX" && mkdir -p "$CTX/wheels"
echo "==> wheels and requirements (uv.lock) into $CTX"
$UV build --all-packages --wheel --out-dir "$CTX/wheels" >/dev/null 2>&1
# tokenizers pulls the Hugging Face Hub client (hf-xet, fsspec, tqdm, httpx2: ~17 MB) for
# `from_pretrained`; the agent never downloads from a hub, so the image leaves it out.
AGENT_EXTRAS=(--extra genai --extra embed)
if [[ "$GGUF" == 1 ]]; then AGENT_EXTRAS+=(--extra gguf); fi
$UV export --frozen --no-dev --no-emit-workspace --package hatswarm-agent "${AGENT_EXTRAS[@]}" \
  --prune huggingface-hub --output-file "$CTX/agent-requirements.txt" >/dev/null
$UV export --frozen --no-dev --no-emit-workspace --package hatswarm-operator --prune onnxruntime \
  --output-file "$CTX/operator-requirements.txt" >/dev/null
if grep -qiE '^(kopf|kubernetes)==' "$CTX/agent-requirements.txt"; then
  echo "build.sh: the agent's requirements carry kopf or the kubernetes client" >&2; exit 1
fi
if grep -qiE '^onnxruntime==' "$CTX/operator-requirements.txt"; then
  echo "build.sh: the operator's requirements carry onnxruntime" >&2; exit 1
fi
cp images/install.py "$CTX/"
if [[ "$GGUF" == 1 ]]; then  # llama-cpp-python per arch: built once, cached (install.py pins it)
  for arch in "${ARCHES[@]}"; do
    machine="${arch/amd64/x86_64}"; machine="${machine/arm64/aarch64}"
    echo "==> llama-cpp-python for $arch (tools/build_gguf_wheel.py; cached in .cache/wheels)"
    wheel="$(python3 tools/build_gguf_wheel.py --arch "$machine" | tail -1)"
    cp "$wheel" "$CTX/wheels/"
  done
fi
for py in "$PYTHON" python3 /usr/bin/python3; do
  if [[ -n "$py" ]] && "$py" -m pip --version >/dev/null 2>&1; then PYTHON="$py"; break; fi
done
if ! "${PYTHON:-false}" -m pip --version >/dev/null 2>&1; then
  echo "build.sh: no python3 with pip found (set PYTHON=/path/to/python3)" >&2; exit 1
fi
if [[ $WHEELHOUSE == 1 ]]; then
  echo "==> wheelhouse: every pinned wheel for ${ARCHES[*]} into $CTX/wheels"
  for arch in "${ARCHES[@]}"; do
    for role in agent operator; do
      "$PYTHON" images/install.py "$role" "$arch" --context "$CTX" --download-only "$CTX/wheels" >/dev/null
    done
  done
fi
if [[ $CONTEXT_ONLY == 1 ]]; then ls -l "$CTX" "$CTX/wheels"; exit 0; fi

if [[ -z "$ENGINE" ]]; then
  if command -v docker >/dev/null && docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=buildx
  elif command -v buildah >/dev/null && command -v mmdebstrap >/dev/null; then
    ENGINE=rootfs
  else
    echo "build.sh: need docker buildx (with a daemon), or buildah + mmdebstrap (apt-get install" \
      "buildah mmdebstrap)" >&2
    exit 1
  fi
fi
echo "==> engine: $ENGINE, platforms: ${ARCHES[*]}"

REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"} +%Y-%m-%dT%H:%M:%SZ)"

# --- rootfs engine ------------------------------------------------------------------------
base_image() {  # ARCH -> BASE_REF: a Debian bookworm + python3.11 base, built once per arch
  local arch="$1" ref="$BASE_REPO:$BASE_TAG-$1" dir="$CTX/rootfs-$1" ctr
  if [[ "${REBUILD_BASE:-0}" == 1 && " $REBUILT " != *" $arch "* ]] \
      || ! "${BUILDAH[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
    REBUILT+=" $arch"
    echo "==> $ref (images/rootfs.sh)"
    images/rootfs.sh "$arch" "$dir"
    tar -C "$dir" --numeric-owner -cf "$dir.tar" .
    ctr="$("${BUILDAH[@]}" from scratch)"; CTRS+=("$ctr")
    "${BUILDAH[@]}" add "$ctr" "$dir.tar" / >/dev/null  # a local tar is unpacked into /
    rm -rf "$dir" "$dir.tar"
    "${BUILDAH[@]}" config --arch "$arch" --os linux \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --label "org.opencontainers.image.title=hatswarm-base" \
      --label "org.opencontainers.image.description=Debian bookworm $arch, python3.11 and its standard library from Debian's packages (no shell)" \
      --label "org.opencontainers.image.created=$CREATED" \
      --label "org.opencontainers.image.source=$SOURCE_URL" \
      --label "org.opencontainers.image.base.name=scratch" "$ctr"
    OLD_IDS+=("$("${BUILDAH[@]}" images --quiet --no-trunc "$ref" 2>/dev/null | head -1 || true)")
    "${BUILDAH[@]}" commit --quiet --format docker --rm "$ctr" "$ref" >/dev/null
  fi
  BASE_REF="$ref"
}

rootfs_image() {  # ROLE ARCH
  local role="$1" arch="$2" base digest stage ctr kind value tag="$REGISTRY/$1:$VERSION-$2"
  local cfg=(--arch "$arch" --os linux --created-by "images/build.sh (rootfs engine)")
  base_image "$arch"
  base="$BASE_REF"
  digest="$("${BUILDAH[@]}" images --no-trunc --digests --format '{{.Digest}}' "$base" | head -1)"
  stage="$CTX/stage-$role-$arch"
  rm -rf "$stage"
  "$PYTHON" images/install.py "$role" "$arch" "$stage/opt/hatswarm" --prefix-in-image /opt/hatswarm \
    --python /usr/bin/python3.11 --context "$CTX"
  if [[ "$role" == agent ]]; then
    install -d -o 10001 -g 10001 -m 0750 "$stage/var/lib/hatswarm"
  fi
  tar -C "$stage" --numeric-owner -cf "$stage.tar" .
  ctr="$("${BUILDAH[@]}" from --pull=never "$base")"; CTRS+=("$ctr")
  "${BUILDAH[@]}" add "$ctr" "$stage.tar" / >/dev/null
  rm -rf "$stage" "$stage.tar"
  while IFS=$'\t' read -r kind value; do
    if [[ "$kind" == healthcheck ]]; then  # buildah splits it shell-style, not as JSON
      value="CMD $("$PYTHON" -c 'import json,shlex,sys; print(shlex.join(json.loads(sys.argv[1][4:])))' "$value")"
    fi
    cfg+=("--$kind" "$value")
  done < <(print_config "$role")
  cfg+=(--label "org.opencontainers.image.version=$VERSION"
        --label "org.opencontainers.image.revision=$REVISION"
        --label "org.opencontainers.image.created=$CREATED"
        --label "org.opencontainers.image.base.name=$base"
        --label "org.opencontainers.image.base.digest=$digest")
  "${BUILDAH[@]}" config "${cfg[@]}" "$ctr"
  OLD_IDS+=("$("${BUILDAH[@]}" images --quiet --no-trunc "$tag" 2>/dev/null | head -1 || true)")
  "${BUILDAH[@]}" commit --quiet --format docker --rm "$ctr" "$tag" >/dev/null
  echo "==> $tag ($("${BUILDAH[@]}" images --format '{{.Size}}' "$tag" | head -1))"
}

publish() {  # ROLE: $REGISTRY/ROLE:$VERSION is the host arch's image here; pushed, a manifest list
  local tag="$REGISTRY/$1:$VERSION" list="localhost/hatswarm-push/$1:$VERSION" arch host i
  host="$(uname -m)"; host="${host/x86_64/amd64}"; host="${host/aarch64/arm64}"
  for arch in "${ARCHES[@]}"; do
    if [[ "$arch" == "$host" ]]; then "${BUILDAH[@]}" tag "$tag-$arch" "$tag"; fi
  done
  for ((i = ${#OLD_IDS[@]} - 1; i >= 0; i--)); do  # what a rebuild replaced, newest first
    if [[ -n "${OLD_IDS[i]}" ]]; then "${BUILDAH[@]}" rmi "${OLD_IDS[i]}" >/dev/null 2>&1 || true; fi
  done
  OLD_IDS=()
  if [[ $PUSH == 1 ]]; then
    "${BUILDAH[@]}" manifest rm "$list" >/dev/null 2>&1 || true
    "${BUILDAH[@]}" manifest create "$list" >/dev/null
    for arch in "${ARCHES[@]}"; do
      "${BUILDAH[@]}" push "$tag-$arch" "docker://$tag-$arch"
      "${BUILDAH[@]}" manifest add --arch "$arch" --os linux "$list" "docker://$tag-$arch" >/dev/null
    done
    "${BUILDAH[@]}" manifest push --all "$list" "docker://$tag"
    echo "==> pushed $tag (manifest list: ${ARCHES[*]})"
  fi
}

# --- Dockerfile engines -------------------------------------------------------------------
dockerfile_image() {  # IMAGE (agent | operator | agent-hailo)
  local image="$1" tag="$REGISTRY/$1:$VERSION"
  local args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
              --build-arg "CREATED=$CREATED" --build-arg "PIP_NO_INDEX=$WHEELHOUSE" "${BUILD_ARGS[@]}")
  echo "==> $tag ($ENGINE, $PLATFORMS)"
  case "$ENGINE" in
    buildx)
      if [[ $PUSH == 1 ]]; then
        docker buildx build --platform "$PLATFORMS" --push "${args[@]}" \
          -f "images/$image.Dockerfile" -t "$tag" "$CTX"
      else  # one --load per arch (a multi-arch build cannot be loaded): TAG-ARCH, TAG = host arch
        for arch in "${ARCHES[@]}"; do
          docker buildx build --platform "linux/$arch" --load "${args[@]}" \
            -f "images/$image.Dockerfile" -t "$tag-$arch" "$CTX"
          if [[ "$(docker version --format '{{.Server.Arch}}')" == "$arch" ]]; then
            docker tag "$tag-$arch" "$tag"
          fi
        done
      fi
      ;;
    bud)  # like the rootfs engine: TAG-ARCH per arch, TAG = host arch, a manifest list on push
      for arch in "${ARCHES[@]}"; do
        OLD_IDS+=("$("${BUILDAH[@]}" images --quiet --no-trunc "$tag-$arch" 2>/dev/null | head -1 || true)")
        "${BUILDAH[@]}" bud --isolation chroot --layers=false --format docker \
          --platform "linux/$arch" "${args[@]}" -f "images/$image.Dockerfile" -t "$tag-$arch" "$CTX"
      done
      publish "$image"
      ;;
  esac
}

case "$ENGINE" in
  rootfs)
    command -v buildah >/dev/null || { echo "build.sh: apt-get install -y buildah" >&2; exit 1; }
    for image in "${IMAGES[@]}"; do
      if [[ "$image" == agent-hailo ]]; then
        echo "build.sh: agent-hailo needs Raspberry Pi's apt repository: --engine buildx|bud" >&2
        exit 2
      fi
      for arch in "${ARCHES[@]}"; do rootfs_image "$image" "$arch"; done
      publish "$image"
    done
    ;;
  buildx|bud)
    for image in "${IMAGES[@]}"; do dockerfile_image "$image"; done
    ;;
  *) echo "build.sh: unknown engine $ENGINE (rootfs, buildx, bud)" >&2; exit 2 ;;
esac
echo "==> built: ${IMAGES[*]} $VERSION for ${ARCHES[*]}"
