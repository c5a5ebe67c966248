"""The Prefect shell: a recorded run with artifacts, the textfile metric, and the failure event."""

from __future__ import annotations

import time

import pytest

from flows.common.runtime import run_flow
from flows.log_backup.engine import BackupFailed
from flows.log_backup.flow import METRIC, log_backup
from flows.log_backup.models import BackupPolicy
from flows.standins.faults import FaultProxy
from tests.integration.log_backup_support import bucket_name, make_tree


def _artifact(client, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return arts[-1] if arts else None


def test_flow_run_records_summary_and_metric(prefect_client, moto_s3, tmp_path, monkeypatch):
    monkeypatch.delenv("INFEROPS_OFFLINE", raising=False)
    bucket = moto_s3.create_bucket(bucket_name("flow"), "eu-west-1")
    files = make_tree(tmp_path / "logs", n=5)
    prom = tmp_path / "textfile" / "log_backup.prom"
    prom.parent.mkdir()
    policy = BackupPolicy(source=str(tmp_path / "logs"), dest=f"s3://{bucket}/flow", dest_region="eu-west-1",
                          metrics_textfile=str(prom))

    result = run_flow(log_backup, policy=policy)
    assert result["uploaded_files"] == len(files) and result["failed_files"] == 0

    summary = _artifact(prefect_client, "log-backup-summary")
    assert summary is not None and summary.type == "table"
    rows = {r["measure"]: r["value"] for r in summary.data} if isinstance(summary.data, list) else None
    if rows is None:  # the API stores tables as JSON text
        import json

        rows = {r["measure"]: r["value"] for r in json.loads(summary.data)}
    assert rows["uploaded_files"] == len(files) and rows["failed_files"] == 0
    run = prefect_client.read_flow_run(summary.flow_run_id)
    assert run.state.is_completed()
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    progress = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type=ArtifactFilterType(any_=["progress"])))
    assert [float(a.data) for a in progress] == [100.0]

    text = prom.read_text()
    assert f'{METRIC}{{dest="s3://{bucket}/flow"}}' in text
    value = float(text.split(f'{METRIC}{{dest="s3://{bucket}/flow"}} ')[1].split()[0])
    assert abs(value - time.time()) < 600


def test_failed_run_is_failed_and_emits_event(prefect_client, moto_s3, tmp_path, monkeypatch):
    from prefect.events.filters import EventFilter, EventNameFilter

    monkeypatch.delenv("INFEROPS_OFFLINE", raising=False)
    bucket = moto_s3.create_bucket(bucket_name("flowfail"), "eu-west-1")
    make_tree(tmp_path / "logs", n=4)
    prom = tmp_path / "never.prom"
    policy = BackupPolicy(source=str(tmp_path / "logs"), dest=f"s3://{bucket}/flow", dest_region="eu-west-1",
                          metrics_textfile=str(prom))
    with FaultProxy(moto_s3.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        proxy.fail(-1, 403, "AccessDenied", match=lambda r: r.method == "PUT" and "serve-1.log" in r.path)
        with pytest.raises(BackupFailed) as failed:
            run_flow(log_backup, policy=policy)
    assert failed.value.report.failed_files == 1
    assert not prom.exists()  # no success, no fresh timestamp

    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    runs = prefect_client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["log-backup"])))
    assert any(r.state.is_failed() for r in runs)

    deadline = time.monotonic() + 60
    events = []
    while time.monotonic() < deadline and not events:
        page = prefect_client.read_events(EventFilter(event=EventNameFilter(name=["inferops.backup.failed"])),
                                          limit=50)  # the client default (100) is over the server max
        events = [e for e in page.events if e.resource.id == f"inferops.backup.s3://{bucket}/flow"]
        time.sleep(1)
    assert events, "inferops.backup.failed was not recorded"
    assert events[0].payload["failed_files"] == 1


def test_cli_json_stays_one_object_when_runs_are_recorded(prefect_client, moto_s3, tmp_path, monkeypatch, capsys):
    from tests.integration.log_backup_support import cli_json

    monkeypatch.delenv("INFEROPS_OFFLINE", raising=False)
    bucket = moto_s3.create_bucket(bucket_name("flowcli"), "eu-west-1")
    files = make_tree(tmp_path / "logs", n=3)
    rc, summary = cli_json(capsys, "backup", "run", "--source", str(tmp_path / "logs"),
                           "--dest", f"s3://{bucket}/cli", "--dest-region", "eu-west-1")
    assert rc == 0 and summary["uploaded_files"] == len(files)
