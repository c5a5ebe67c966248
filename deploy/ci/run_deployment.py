"""Run a Prefect deployment from CI and pass its outcome through as the exit code.

    run_deployment.py NAME [--param k=v ...] [--timeout SECONDS] [--poll SECONDS]

NAME is ``<flow-name>/<deployment>`` or just the deployment name (looked up; it must be unique). A
``--param`` value is JSON when it parses as JSON, else a string (as ``prefect deployment run``).

Exit codes (one line on stderr says why, for every non-zero one):

* 0   the run ended Completed (including a Completed state named e.g. ``Warning``);
* 1   it ended Failed, Crashed or Cancelled;
* 2   bad usage, no such deployment, or parameters the deployment's schema rejects (no run is created);
* 124 it did not end within ``--timeout`` seconds: the run is cancelled (a run that never started is
      cancelled at once, a running one is asked to stop), so it cannot execute later.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 124


def fail(code: int, message: str) -> int:
    print(f"run-deployment: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code


def parse_params(pairs: list[str]) -> dict:
    params: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def resolve(client, name: str):
    """The deployment called ``flow/deployment``, or the only one named ``name``."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.exceptions import ObjectNotFound

    if "/" in name:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None
    found = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))
    if len(found) > 1:
        raise LookupError(f"{len(found)} deployments are named {name!r}: give FLOW/{name}")
    return found[0] if found else None


def cancel(client, run_id) -> str:
    """Cancel now if the run never started; ask a running one to stop (its worker kills it)."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Cancelling

    state = client.read_flow_run(run_id).state
    if state is not None and state.type in (StateType.RUNNING, StateType.CANCELLING):
        client.set_flow_run_state(run_id, Cancelling(message="run-deployment.sh timed out"), force=True)
        return f"cancelling (was {state.name})"
    client.set_flow_run_state(run_id, Cancelled(message="run-deployment.sh timed out before the run started"),
                              force=True)
    return f"cancelled (was {state.name if state else 'new'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run-deployment.sh", add_help=True)
    ap.add_argument("name")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    ap.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help=argparse.SUPPRESS)
    try:
        args = ap.parse_args(argv)
        params = parse_params(args.param)
        if args.timeout is not None and args.timeout <= 0:
            raise ValueError("--timeout must be > 0 seconds")
    except SystemExit as exc:  # argparse printed its usage line
        return EXIT_USAGE if exc.code else 0
    except ValueError as exc:
        return fail(EXIT_USAGE, str(exc))

    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        return fail(EXIT_USAGE, "PREFECT_API_URL is not set")
    with get_client(sync_client=True) as client:
        try:
            deployment = resolve(client, args.name)
        except LookupError as exc:
            return fail(EXIT_USAGE, str(exc))
        if deployment is None:
            return fail(EXIT_USAGE, f"no deployment named '{args.name}' on {api}")
        try:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
        except PrefectHTTPStatusError as exc:  # enforce_parameter_schema: rejected before any run exists
            detail = exc.response.json().get("detail", "") if exc.response is not None else str(exc)
            return fail(EXIT_USAGE, f"{args.name}: parameters rejected: {detail}")
        print(f"run-deployment: {args.name}: flow run {run.name} ({run.id})", flush=True)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        last = None
        while True:
            run = client.read_flow_run(run.id)
            state = run.state
            if state is not None and state.name != last:
                last = state.name
                print(f"run-deployment: {run.name} is {state.name}", flush=True)
            if state is not None and state.is_final():
                message = f": {state.message}" if state.message else ""
                if state.is_completed():
                    print(f"run-deployment: {run.name} ended {state.name}{message}", flush=True)
                    return 0
                return fail(EXIT_FAILED, f"{args.name}: flow run {run.name} ended {state.name}{message}")
            if deadline is not None and time.monotonic() >= deadline:
                what = cancel(client, run.id)
                return fail(EXIT_TIMEOUT, f"{args.name}: flow run {run.name} did not finish within "
                                          f"{args.timeout:g} s; {what}")
            time.sleep(args.poll)


if __name__ == "__main__":
    sys.exit(main())
