#!/usr/bin/env bash
# Copy the observability sources (deploy/observability/) into the chart's files/, which the
# PrometheusRule and the dashboard ConfigMap read. tests/unit/chart fails when the copies drift.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p charts/hatswarm/files
cp deploy/observability/hatswarm-rules.yaml charts/hatswarm/files/hatswarm-rules.yaml
cp deploy/observability/hatswarm-dashboard.json charts/hatswarm/files/hatswarm-dashboard.json
