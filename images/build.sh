#!/usr/bin/env bash
# Build the hatswarm images: ghcr.io/hatswarm/{operator,agent}:<version>.
#
#   images/build.sh                         # both images, this machine's platform
#   images/build.sh --platform linux/arm64,linux/amd64 --push   # multi-arch (buildx only)
#   images/build.sh --local-base            # offline: a debootstrap'ed bookworm base (buildah)
#   images/build.sh --wheelhouse            # also download every wheel into the context (the
#                                           # build then needs no network; implied by --local-base)
#   images/build.sh --context-only          # just prepare build/images/ (wheels + requirements)
#
# Engines, in order: docker buildx (with a reachable daemon), else buildah
# (`buildah --storage-driver vfs bud --isolation chroot`: no daemon, works as root in a sandbox).
# The build context is build/images/: the two wheels (uv build) and each image's requirements
# exported from uv.lock with hashes (uv export; the operator's with onnxruntime pruned).
#
# Base image: python:3.11-slim-bookworm, pinned by tag (a digest needs a registry to resolve; at
# release pass BASE=python:3.11-slim-bookworm@sha256:...). With --local-base no registry is
# needed: debootstrap builds a minimal Debian bookworm rootfs with python3.11 (the same Python
# as the slim image) from Debian's own mirror, buildah imports it as localhost/hatswarm-base.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' node-agent/pyproject.toml | head -1)"
REGISTRY="${REGISTRY:-ghcr.io/hatswarm}"
BASE="${BASE:-python:3.11-slim-bookworm}"
PLATFORM=""
PUSH=0
LOCAL_BASE=0
WHEELHOUSE=0
CONTEXT_ONLY=0
ENGINE="${ENGINE:-}"
IMAGES=(operator agent)
UV="${UV:-python3 -m uv}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform) PLATFORM="$2"; shift 2 ;;
    --push) PUSH=1; shift ;;
    --local-base) LOCAL_BASE=1; WHEELHOUSE=1; shift ;;
    --wheelhouse) WHEELHOUSE=1; shift ;;
    --context-only) CONTEXT_ONLY=1; shift ;;
    --engine) ENGINE="$2"; shift 2 ;;
    --only) IMAGES=("$2"); shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

CTX=build/images
rm -rf "$CTX" && mkdir -p "$CTX/wheels"

echo "==> wheels and requirements (uv.lock) into $CTX"
$UV build --all-packages --wheel --out-dir "$CTX/wheels" >/dev/null
$UV export --frozen --no-dev --no-emit-workspace --package hatswarm-agent \
  --output-file "$CTX/agent-requirements.txt" >/dev/null
$UV export --frozen --no-dev --no-emit-workspace --package hatswarm-operator --prune onnxruntime \
  --output-file "$CTX/operator-requirements.txt" >/dev/null
if grep -qiE '^(kopf|kubernetes)==' "$CTX/agent-requirements.txt"; then
  echo "build.sh: the agent's requirements carry kopf or the kubernetes client" >&2; exit 1
fi
if grep -qiE '^onnxruntime==' "$CTX/operator-requirements.txt"; then
  echo "build.sh: the operator's requirements carry onnxruntime" >&2; exit 1
fi
if [[ $WHEELHOUSE == 1 ]]; then
  # This machine's platform only (a cross-platform wheelhouse needs pip download --platform).
  echo "==> wheelhouse: every pinned wheel into $CTX/wheels"
  for req in "$CTX"/*-requirements.txt; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
      -r "$req" -d "$CTX/wheels"
  done
fi
[[ $CONTEXT_ONLY == 1 ]] && { ls -l "$CTX" "$CTX/wheels"; exit 0; }

if [[ -z "$ENGINE" ]]; then
  if command -v docker >/dev/null && docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=buildx
  elif command -v buildah >/dev/null; then
    ENGINE=buildah
  else
    echo "build.sh: neither docker buildx (with a daemon) nor buildah is available" >&2; exit 1
  fi
fi
echo "==> engine: $ENGINE"

BUILDAH=(buildah --storage-driver vfs)

local_base() {
  # A Debian bookworm rootfs with python3.11 + venv, imported as localhost/hatswarm-base.
  local rootfs=build/rootfs-bookworm mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  if ! "${BUILDAH[@]}" inspect --type image localhost/hatswarm-base:bookworm >/dev/null 2>&1; then
    if [[ ! -x "$rootfs/usr/bin/python3" ]]; then
      command -v debootstrap >/dev/null || { echo "build.sh: apt-get install -y debootstrap" >&2; exit 1; }
      rm -rf "$rootfs"
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    fi
    tar -C "$rootfs" -cf "$rootfs.tar" .
    local ctr
    ctr="$("${BUILDAH[@]}" from scratch)"
    "${BUILDAH[@]}" add "$ctr" "$rootfs.tar" /  # a local tar is unpacked into /
    rm -f "$rootfs.tar"
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/sh "$ctr"
    "${BUILDAH[@]}" commit --rm "$ctr" localhost/hatswarm-base:bookworm
  fi
  BASE=localhost/hatswarm-base:bookworm
}

REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
for image in "${IMAGES[@]}"; do
  tag="$REGISTRY/$image:$VERSION"
  args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED"
        --build-arg "PIP_NO_INDEX=$WHEELHOUSE")
  echo "==> $tag"
  case "$ENGINE" in
    buildx)
      out=(--load)
      [[ $PUSH == 1 ]] && out=(--push)
      [[ -n "$PLATFORM" && $PUSH == 0 && "$PLATFORM" == *,* ]] && out=()  # multi-arch: cache only
      docker buildx build ${PLATFORM:+--platform "$PLATFORM"} "${out[@]}" "${args[@]}" \
        --build-arg "PYTHON_IMAGE=$BASE" -f "images/$image.Dockerfile" -t "$tag" "$CTX"
      ;;
    buildah)
      [[ $LOCAL_BASE == 1 ]] && local_base
      "${BUILDAH[@]}" bud --isolation chroot --layers=false ${PLATFORM:+--platform "$PLATFORM"} \
        "${args[@]}" --build-arg "PYTHON_IMAGE=$BASE" -f "images/$image.Dockerfile" -t "$tag" "$CTX"
      [[ $PUSH == 1 ]] && "${BUILDAH[@]}" push "$tag"
      ;;
    *) echo "build.sh: unknown engine $ENGINE" >&2; exit 2 ;;
  esac
done
echo "==> built: ${IMAGES[*]} ($VERSION)"
