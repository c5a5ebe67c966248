"""The cost report's gauges through the shared publisher (flows/common/metrics.py) to a real Pushgateway:
the report runs in k8s-pool pods, whose textfiles go with the pod, so InferopsGpuCostAnomaly reads the push."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.common.runtime import run_flow
from flows.cost_report.flow import cost_report
from tests.integration.test_metrics_pushgateway import _samples, configured  # noqa: F401 -- the shared setup

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"


def test_daily_cost_is_pushed_and_written(configured, tmp_path):  # noqa: F811 -- the imported fixture
    s = run_flow(cost_report, cur=[str(DATA / "malformed.csv.gz"), str(DATA / "legacy.csv.gz")],
                 out=str(tmp_path / "out"), period="2026-05")
    assert s["metrics"] == {"textfile": str(tmp_path / "out" / "inferops_cost.prom"), "pushgateway": "pushed"}
    daily = pl.read_parquet(tmp_path / "out" / "daily.parquet")
    last = daily.filter(pl.col("date") == daily["date"].max())
    [cost] = _samples(configured, "inferops_cost_daily_usd")
    assert cost.labels["job"] == "inferops_cost_report" and cost.value == pytest.approx(last["cost"].sum())
    by_model = {x.labels["pricing_model"]: x.value for x in _samples(configured, "inferops_cost_daily_by_model_usd")}
    assert by_model == pytest.approx(dict(zip(last["pricing_model"], last["cost"], strict=True)))
    [rejected] = _samples(configured, "inferops_cost_report_rejected_rows")
    assert rejected.value == 5 == s["rejected_rows"]
    # the textfile beside the report holds the same gauges (node_exporter on the ops pool reads it)
    text = (tmp_path / "out" / "inferops_cost.prom").read_text()
    assert {f.name for f in text_string_to_metric_families(text)} == {
        "inferops_cost_daily_usd", "inferops_cost_daily_by_model_usd", "inferops_cost_report_rejected_rows"}
