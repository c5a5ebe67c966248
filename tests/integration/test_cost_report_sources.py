"""CUR parts from S3 (moto's real HTTP server) and a flow run recorded by a real Prefect API."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.common.errors import BadInput
from flows.common.runtime import run_flow
from flows.cost_report.flow import cost_report

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"
ONE = 193.3748  # the fixture's amortized total for 2026-05 (tests/unit/test_cost_report_read.py)


def test_s3_prefix_with_many_parts(moto_s3, tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    bucket = moto_s3.create_bucket(f"cur-{uuid.uuid4().hex[:10]}")
    s3 = moto_s3.client()
    body = (DATA / "legacy.csv.gz").read_bytes()
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"cur/gpu/20260501-20260601/part-{i}.csv.gz", Body=body)
    s3.put_object(Bucket=bucket, Key="cur/gpu/20260501-20260601/gpu-Manifest.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="cur/gpu-old/part-0.csv.gz", Body=body)  # a sibling prefix: not ours
    eu = moto_s3.create_bucket(f"cur-eu-{uuid.uuid4().hex[:10]}", region="eu-west-1")  # found via its location
    moto_s3.client("eu-west-1").put_object(Bucket=eu, Key="athena/part-0.parquet",
                                           Body=(DATA / "athena.parquet").read_bytes())

    s = run_flow(cost_report, cur=[f"s3://{bucket}/cur/gpu", f"s3://{eu}/athena/part-0.parquet"],
                 out=str(tmp_path / "out"), period="2026-05")
    assert s["input"]["files"] == 4 and s["input"]["styles"] == ["athena", "legacy"]
    assert s["total_cost"] == pytest.approx(4 * ONE)
    assert s["input"]["failed"] == []

    s = run_flow(cost_report, cur=[f"s3://{bucket}/cur/gpu", f"s3://{bucket}-missing/cur"],
                 out=str(tmp_path / "out2"), period="2026-05")
    assert s["total_cost"] == pytest.approx(3 * ONE)
    assert len(s["input"]["failed"]) == 1 and "-missing/cur: cannot list" in s["input"]["failed"][0]

    with pytest.raises(BadInput, match="no readable CUR"):
        run_flow(cost_report, cur=[f"s3://{bucket}/nothing-here"], out=str(tmp_path / "out3"))


def test_recorded_run_ends_with_a_markdown_artifact(prefect_client, tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    s = run_flow(cost_report, cur=[str(DATA / "cur2.parquet")], out=str(tmp_path / "out"), period="2026-05")
    assert s["total_cost"] == pytest.approx(ONE)
    arts = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cost-report"])))
    assert arts and arts[0].type == "markdown"
    body = arts[-1].data
    assert "Total amortized cost **$193.37**" in body and "| savings_plan | $70.00 |" in body
