"""The flow on a real Prefect API with the registry on S3 (moto over HTTP): the source model is
read from s3://, the build is published to s3://, the comparison artifact is recorded, and
``inferops.model.built`` carries the manifest URI for the canary trigger."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from flows.common.runtime import run_flow
from flows.common.settings import reload_settings
from flows.model_build.flow import EVENT, model_build
from model_build.build import BuildSpec, Precision
from model_build.evaluate import Metric

DIGITS = Path(__file__).resolve().parents[2] / "model_build" / "examples" / "digits"


@pytest.mark.slow
def test_flow_publishes_to_s3_and_emits_the_built_event(prefect_client, moto_s3, tmp_path, monkeypatch):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.events.filters import EventFilter, EventNameFilter

    monkeypatch.delenv("INFEROPS_OFFLINE", raising=False)
    bucket = moto_s3.create_bucket(f"models-{uuid.uuid4().hex[:8]}", "us-east-1")
    s3 = moto_s3.client("us-east-1")
    s3.upload_file(str(DIGITS / "digits_cnn.onnx"), bucket, "sources/digits_cnn.onnx")
    monkeypatch.setenv("INFEROPS_S3__MODEL_REGISTRY", f"s3://{bucket}/registry")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()
    try:
        spec = BuildSpec(source=f"s3://{bucket}/sources/digits_cnn.onnx", calib=str(DIGITS / "calib.npz"),
                         eval=str(DIGITS / "eval.npz"), labels=str(DIGITS / "labels.npy"),
                         metric=Metric.accuracy, precision=Precision.fp16, out=str(tmp_path / "out"))
        result = run_flow(model_build, spec=spec)
    finally:
        reload_settings()

    uri = result["manifest_uri"]
    version = result["manifest"]["version"]
    assert uri == f"s3://{bucket}/registry/digits_cnn/{version}/manifest.json"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="registry/")["Contents"]}
    assert keys == {f"registry/digits_cnn/{version}/{f}" for f in ("manifest.json", "config.pbtxt", "1/model.onnx")}
    remote = json.loads(s3.get_object(Bucket=bucket, Key=f"registry/digits_cnn/{version}/manifest.json")["Body"].read())
    assert remote["deployable"] and remote["precision"] == "fp16" and remote["metrics"]["accuracy"]["loss"] <= 0.01

    arts = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["model-build-digits-cnn"])))
    assert arts and arts[-1].type == "markdown"
    table = arts[-1].data
    assert "| FP32 |" in table and "| FP16 |" in table and "| INT8 |" in table and "excluded nodes" in table
    assert prefect_client.read_flow_run(arts[-1].flow_run_id).state.is_completed()

    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline and not events:
        page = prefect_client.read_events(EventFilter(event=EventNameFilter(name=[EVENT])), limit=50)
        events = [e for e in page.events if e.payload.get("manifest_uri") == uri]
        time.sleep(1)
    assert events, f"{EVENT} was not recorded"
    assert events[0].resource.id == "inferops.model.digits_cnn"
    assert events[0].payload == {"manifest_uri": uri, "target": "onnxruntime",
                                 "serving": {"deployment": "", "image": "", "namespace": "inference"}}
