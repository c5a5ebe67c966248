"""Drives a running local stack through its Prefect API, from inside the stack's network namespace.

``python -m tests.integration.localstack_driver loop KUBECONFIG`` runs the loop (run by
tests/integration/test_local_stack.py with ``ip netns exec``, since the stack's loopback is the
namespace's): a model-build run of the digits example from the ``model-build`` deployment → its
``inferops.model.built`` event → the ``canary-on-model-built`` automation starts ``canary-rollout`` → the
run ends; then the same with a candidate image tagged ``:broken``. Prints one JSON line per build.
``ids`` prints the deployments' ids by name (for the UI's run form); ``scheduled SECONDS`` waits for the
first drbd-health run its 5-minute schedule started by itself.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

BROKEN_IMAGE = "registry.local/digits-cnn:broken"


def wait_final(client, run_id, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {run_id} not final after {timeout:g}s (state {run.state and run.state.name})")


def triggered_canary(client, since: datetime, timeout: float) -> Any:
    """The first canary-rollout run created after ``since`` (by the automation)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    dep = client.read_deployment_by_name("canary-rollout/canary-rollout")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=10)
        new = [r for r in runs if r.created and r.created >= since]
        if new:
            return min(new, key=lambda r: r.created)
        time.sleep(1)
    raise TimeoutError(f"no canary-rollout run was triggered within {timeout:g}s")


def stable(kubeconfig: str) -> dict[str, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    apps = client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment("digits-cnn", "inference")
    c = dep.spec.template.spec.containers[0]
    return {"image": c.image, "env": {e.name: e.value for e in c.env or []},
            "deployments": sorted(d.metadata.name for d in apps.list_namespaced_deployment("inference").items)}


def loop(kubeconfig: str, timeout: float = 420.0) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    out = []
    with get_client(sync_client=True) as c:
        build = c.read_deployment_by_name("model-build/model-build")
        for label, image in (("good", ""), ("broken", BROKEN_IMAGE)):
            # the deployment's digits spec, as FP16 without the comparison build: the fastest real build
            spec = {**build.parameters["spec"], "precision": "fp16", "compare": False}
            spec["serving"] = {**spec["serving"], "image": image}
            since, t0 = datetime.now(UTC), time.monotonic()
            run = c.create_flow_run_from_deployment(build.id, parameters={"spec": spec})
            done = wait_final(c, run.id, timeout)
            row: dict[str, Any] = {"build": label, "build_state": done.state.name,
                                   "build_s": round(time.monotonic() - t0, 1)}
            if done.state.is_completed():
                canary = wait_final(c, triggered_canary(c, since, 120).id, timeout)
                row["canary_s"] = round(time.monotonic() - t0 - row["build_s"], 1)
                row.update(canary_state=canary.state.name, canary_type=canary.state.type.value,
                           canary_message=canary.state.message or "", canary_parameters=canary.parameters,
                           created_by=(canary.created_by.type if canary.created_by else None),
                           stable=stable(kubeconfig))
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def scheduled(timeout: float) -> dict[str, Any]:
    """The first drbd-health run its schedule created (no one asked for it), once it is final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as c:
        while time.monotonic() < deadline:
            runs = c.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["drbd-health"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[
                    StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]))))
            auto = [r for r in runs if r.auto_scheduled]
            if auto:
                r = auto[0]
                return {"state": r.state.name, "type": r.state.type.value, "message": r.state.message or "",
                        "expected_start": r.expected_start_time.isoformat(), "parameters": r.parameters}
            time.sleep(5)
    raise TimeoutError(f"no scheduled drbd-health run finished within {timeout:g}s")


def ids() -> dict[str, str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return {d.name: str(d.id) for d in c.read_deployments()}


if __name__ == "__main__":
    if sys.argv[1] == "loop":
        loop(sys.argv[2])
    elif sys.argv[1] == "ids":
        print(json.dumps(ids()))
    elif sys.argv[1] == "scheduled":
        print(json.dumps(scheduled(float(sys.argv[2]))))
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")
