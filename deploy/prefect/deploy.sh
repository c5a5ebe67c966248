#!/usr/bin/env bash
# Create or update the work pools, then register every deployment in prefect.yaml,
# against whatever PREFECT_API_URL points at. Idempotent: safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
if [[ -z "${PREFECT_API_URL:-}" ]] && ! "$PREFECT" config view 2>/dev/null | grep -q '^PREFECT_API_URL'; then
  echo "deploy: PREFECT_API_URL is not set; point it at your Prefect server (make up serves http://127.0.0.1:4200/api)" >&2
  exit 2
fi
"$PREFECT" --no-prompt work-pool create ops  --type process --overwrite
"$PREFECT" --no-prompt work-pool create k8s  --type kubernetes --base-job-template deploy/prefect/k8s.json --overwrite
"$PREFECT" --no-prompt work-pool create a100 --type kubernetes --base-job-template deploy/prefect/a100.json --overwrite
"$PREFECT" --no-prompt deploy --all
