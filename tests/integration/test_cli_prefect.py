"""With a Prefect API configured, the runtime's light objects become real Prefect runs: the flow run,
its task runs (retried by Prefect), its artifacts and its logs are recorded, and redacted."""

from __future__ import annotations

import time

from flows.common import artifacts, runtime
from flows.common.errors import BackendUnavailable

SECRET = "hunter2SECRET"
attempts: list[int] = []


def _transient(task, task_run, state) -> bool:
    return isinstance(state.data, BackendUnavailable)


def _fetch(x: int) -> int:
    attempts.append(x)
    if len(attempts) < 2:
        raise BackendUnavailable("s3 down")
    runtime.get_logger().info("fetched from s3://key:%s@bucket/obj", SECRET)
    return x * 2


def _probe(x: int) -> int:
    y = FETCH(x)
    artifacts.markdown("cli-light-probe", f"**{y}** from https://reader:{SECRET}@prom.example:9090")
    artifacts.table("cli-light-probe-table", [{"source": f"s3://key:{SECRET}@bucket/obj", "y": y}])
    return y


# built the way a flow module builds them offline (Prefect not needed at import), then run recorded
FETCH = runtime.LightTask(_fetch, {"name": "cli-light-fetch", "retries": 2, "retry_delay_seconds": 0,
                                   "retry_condition_fn": _transient, "cache_policy": runtime.NO_CACHE})
PROBE = runtime.LightFlow(_probe, {"name": "cli-light-probe"})


def test_light_objects_are_recorded_as_prefect_runs(prefect_client, monkeypatch):
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    monkeypatch.delenv("INFEROPS_OFFLINE", raising=False)
    attempts.clear()
    assert runtime.api_configured()
    assert runtime.run_flow(PROBE, x=21) == 42
    assert len(attempts) == 2  # Prefect retried the task once (the condition said: transient)
    runs = [r for r in prefect_client.read_flow_runs() if r.flow_id and r.state and r.state.is_completed()]
    flows = {prefect_client.read_flow(r.flow_id).name: r for r in runs}
    run = flows["cli-light-probe"]
    tasks = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert [t.name.rsplit("-", 1)[0] for t in tasks] == ["cli-light-fetch"] and tasks[0].run_count == 2
    arts = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=["cli-light-probe", "cli-light-probe-table"])))
    assert {a.key for a in arts} == {"cli-light-probe", "cli-light-probe-table"}
    for a in arts:
        assert SECRET not in str(a.data) and "***@" in str(a.data)
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # run logs are shipped in batches
    text = ""
    for _ in range(50):
        logs = prefect_client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        text = "\n".join(entry.message for entry in logs)
        if "fetched from" in text:
            break
        time.sleep(0.2)
    assert "fetched from s3://***@bucket/obj" in text and SECRET not in text
