#!/usr/bin/env bash
# `make deploy`: create or update the work pools, register every deployment in prefect.yaml, reject
# unknown parameters at submit time, and create the automations (each with a notification block to
# fill in), against whatever PREFECT_API_URL points at. Idempotent: safe to re-run.
# The logic is deploy/prefect/deploy.py (`--local STACK` is what `make up` runs), run with the Python
# beside $PREFECT (the venv's), else python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFECT="${PREFECT:-.venv/bin/prefect}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  PYTHON=python3
  if command -v "$PREFECT" >/dev/null 2>&1; then
    candidate="$(dirname "$(command -v "$PREFECT")")/python"
    [[ -x "$candidate" ]] && PYTHON="$candidate"
  fi
fi
export PREFECT
exec "$PYTHON" deploy/prefect/deploy.py "$@"
