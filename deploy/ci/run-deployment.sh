#!/usr/bin/env bash
# Run a Prefect deployment from CI and pass its outcome through as the exit code.
#
#   deploy/ci/run-deployment.sh NAME [--param k=v ...] [--timeout SECONDS]
#
# NAME is "<flow-name>/<deployment>" or just the deployment name (e.g. model-build); the flow name is
# looked up. `prefect deployment run --watch` exits non-zero unless the run ends Completed.
set -euo pipefail
usage() { echo "usage: $0 NAME [--param k=v ...] [--timeout SECONDS]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
name="$1"; shift
PREFECT="${PREFECT:-prefect}"
args=() ; timeout_s=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --param) [[ $# -ge 2 && "$2" == *=* ]] || usage; args+=(--param "$2"); shift 2 ;;
    --param=*) args+=(--param "${1#--param=}"); shift ;;
    --timeout) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage; timeout_s="$2"; shift 2 ;;
    *) usage ;;
  esac
done
if [[ "$name" != */* ]]; then
  # deployment names are unique in prefect.yaml: resolve "<flow>/<deployment>"
  # `deployment ls` prints "<flow>/<deployment>" names; a wide COLUMNS keeps rich from cropping them
  full=$(COLUMNS=500 "$PREFECT" deployment ls 2>/dev/null | python3 -c '
import re, sys
want = sys.argv[1]
for line in sys.stdin:
    for flow, dep in re.findall(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)", line):
        if dep == want:
            print(f"{flow}/{dep}")
            sys.exit(0)
' "$name" || true)
  [[ -n "$full" ]] || { echo "run-deployment: no deployment named '$name' on ${PREFECT_API_URL:-the configured API}" >&2; exit 2; }
  name="$full"
fi
watch=(--watch)
[[ -n "$timeout_s" ]] && watch+=(--watch-timeout "$timeout_s")
set +e
"$PREFECT" deployment run "$name" "${args[@]}" "${watch[@]}"
rc=$?
set -e
exit $rc
