#!/usr/bin/env bash
# Run a Prefect deployment from CI and pass its outcome through as the exit code.
#
#   deploy/ci/run-deployment.sh NAME [--param k=v ...] [--timeout SECONDS]
#
# NAME is "<flow-name>/<deployment>" or just the deployment name (e.g. model-build). Exit codes:
#   0   the run ended Completed (a Completed state named Warning included)
#   1   it ended Failed, Crashed or Cancelled
#   2   bad usage, no such deployment, or parameters the deployment rejects (no run is created)
#   124 it did not end within --timeout: the run is cancelled, so it never executes later
# Every non-zero exit prints one line on stderr. The logic is deploy/ci/run_deployment.py, run with the
# Python that has Prefect: $PYTHON, else the one beside $PREFECT, else python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ -n "${PREFECT:-}" ]] && command -v "$PREFECT" >/dev/null 2>&1; then
    candidate="$(dirname "$(command -v "$PREFECT")")/python"
    [[ -x "$candidate" ]] && PYTHON="$candidate"
  fi
fi
exec "$PYTHON" "$here/run_deployment.py" "$@"
