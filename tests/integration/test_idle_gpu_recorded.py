"""idle-gpu with a real Prefect API (artifacts) and the job queue as an S3 object (moto server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from flows.common.errors import BadInput
from flows.common.settings import reload_settings
from flows.idle_gpu.models import Discovery, PlanPolicy
from flows.idle_gpu.queue import load_queue
from flows.standins.kube_emulator.resources import lookup

QUEUE = {"jobs": [
    {"name": "calib-a", "image": "registry.local/model-build:1", "command": ["calibrate"], "gpus": 1,
     "estimated_hours": 1 / 3600, "annotations": {"emulator.inferops.dev/run-seconds": "1"}},
    {"name": "wide", "image": "registry.local/eval:1", "command": ["eval"], "gpus": 8, "estimated_hours": 1 / 3600},
    {"name": "bad", "image": "x", "command": [], "gpus": 1, "estimated_hours": 1},
]}


def test_queue_from_s3(moto_s3):
    s3 = moto_s3.client("us-east-1")
    s3.create_bucket(Bucket="idle-gpu-queues")
    s3.put_object(Bucket="idle-gpu-queues", Key="nightly/queue.yaml", Body=yaml.safe_dump(QUEUE).encode())
    q = load_queue("s3://idle-gpu-queues/nightly/queue.yaml")
    assert [j.name for j in q.jobs] == ["calib-a", "wide"]
    assert [(r.name, r.reason.split(":")[0]) for r in q.rejected] == [("bad", "command")]
    with pytest.raises(BadInput, match="not found"):
        load_queue("s3://idle-gpu-queues/nightly/missing.yaml")
    with pytest.raises(BadInput, match="names a bucket"):
        load_queue("s3://idle-gpu-queues")


@pytest.mark.slow
def test_recorded_run_ends_with_artifacts(prefect_client, kube_clean, monkeypatch, tmp_path):
    from flows.idle_gpu.flow import idle_gpu_nightly

    kube = kube_clean
    monkeypatch.setenv("INFEROPS_KUBE__KUBECONFIG", kube.kubeconfig)
    monkeypatch.delenv("INFEROPS_PROMETHEUS__URL", raising=False)
    reload_settings()
    for name, value in (("offline-batch", -100), ("offline-batch-checkpointable", -200)):
        kube.store.create(lookup("scheduling.k8s.io", "priorityclasses"),
                          {"metadata": {"name": name}, "value": value, "preemptionPolicy": "Never"})
    kube.create_namespace("offline-batch")
    kube.add_node("gpu-a", gpus=4)
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"jobs": QUEUE["jobs"][:1]}))
    metrics = tmp_path / "idle_gpu.prom"
    now = datetime.now(UTC)
    we = now + timedelta(seconds=90)  # the flow ends as soon as its only job is done
    try:
        report = idle_gpu_nightly(queue=str(queue), window_start=now.isoformat(), window_end=we.isoformat(),
                                  timezone="UTC", policy=PlanPolicy(slot_seconds=1, grace_period_s=1),
                                  discovery=Discovery(forecast_nights=0), poll_seconds=0.5,
                                  metrics_textfile=str(metrics))
    finally:
        reload_settings()
    assert {j["job"]: j["outcome"] for j in report["jobs"]} == {"calib-a": "done"}
    gauges = dict(line.rsplit(" ", 1) for line in metrics.read_text().splitlines() if not line.startswith("#"))
    assert float(gauges['inferops_idle_gpu_jobs_running{namespace="offline-batch"}']) == 0
    assert float(gauges['inferops_idle_gpu_window_end_timestamp_seconds{namespace="offline-batch"}']) == \
        pytest.approx(we.timestamp())
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    arts = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(
        key=ArtifactFilterKey(any_=["idle-gpu-report", "idle-gpu-jobs"])))
    by_key = {a.key: a for a in arts}
    assert set(by_key) == {"idle-gpu-report", "idle-gpu-jobs"}
    assert "GPU-hours used" in by_key["idle-gpu-report"].data and "calib-a" in str(by_key["idle-gpu-jobs"].data)
