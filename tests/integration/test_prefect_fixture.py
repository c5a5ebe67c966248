"""The Prefect fixture is a real API: flow runs, task runs and artifacts are recorded there."""

from prefect import flow

from flows.common import artifacts
from flows.common.runtime import get_logger, ops_task, run_flow


@ops_task(retries=1, retry_delay_seconds=0)
def double(x: int) -> int:
    get_logger().info("doubling %s", x)
    return 2 * x


@flow(name="inferops-fixture-probe")
def probe_flow(x: int) -> int:
    y = double(x)
    artifacts.table("fixture-probe", [{"x": x, "y": y}])
    artifacts.markdown("fixture-probe-summary", f"**{y}**")
    return y


def test_flow_run_is_recorded(prefect_client):
    assert run_flow(probe_flow, x=21) == 42
    runs = prefect_client.read_flow_runs()
    mine = [r for r in runs if r.name and r.state and r.state.is_completed()]
    assert mine, "no completed flow run recorded"
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    arts = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fixture-probe", "fixture-probe-summary"])))
    assert {a.key for a in arts} == {"fixture-probe", "fixture-probe-summary"}


def test_offline_run_needs_no_server(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    assert run_flow(probe_flow, x=4) == 8
