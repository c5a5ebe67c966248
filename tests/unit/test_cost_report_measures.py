"""Measures and recommendations on the sample fleet (flows/cost_report/sample.py), checked by hand."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from flows.common.runtime import run_flow
from flows.cost_report import measures, sample
from flows.cost_report.flow import cost_report
from flows.cost_report.models import CostPolicy


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost")
    sample.write_athena_parquet(sample.generate("2026-05"), tmp / "cur", parts=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFEROPS_OFFLINE", "1")
        return run_flow(cost_report, cur=[str(tmp / "cur")], out=str(tmp / "out"), period="2026-05"), tmp / "out"


def test_commitment_is_sized_to_the_steady_floor(demo):
    s, _ = demo
    recs = {r["numbers"].get("instance_type", r["kind"]): r for r in s["recommendations"]}
    p4d = recs["p4d.24xlarge"]
    # 3 steady + 3 daytime p4d on demand: the p10 of hourly instances is the 3 steady ones
    assert p4d["numbers"]["instances"] == 3 and p4d["numbers"]["peak_instances"] == 6
    assert p4d["numbers"]["hours"] == 744 and p4d["numbers"]["discount_source"] == "policy default"
    assert p4d["projected_savings"] == pytest.approx(3 * 744 * sample.PRICES["p4d.24xlarge"] * 0.30, abs=0.01)
    # the reserved/SP p5s have no on-demand floor: nothing to recommend there
    assert "p5.48xlarge" not in recs


def test_spot_for_interruptible_batch(demo):
    s, _ = demo
    spot = next(r for r in s["recommendations"] if r["kind"] == "spot")
    batch_od = 4 * 12 * 31 * sample.PRICES["g5.12xlarge"]  # 4 g5s, 12 daytime hours, 31 days
    assert spot["numbers"]["on_demand_cost"] == pytest.approx(batch_od)
    assert spot["numbers"]["spot_discount"] == pytest.approx(1 - sample.SPOT_RATE)  # measured on spot lines
    assert spot["projected_savings"] == pytest.approx(batch_od * (1 - sample.SPOT_RATE), abs=0.01)


def test_utilization_and_daily_trend(demo):
    s, out = demo
    assert s["utilization"]["savings_plan"]["utilization"] == pytest.approx(1 / 1.05, abs=1e-4)
    ri = s["utilization"]["reserved"]
    assert 0.9 < ri["utilization"] < 1 and ri["unused_cost"] > 0
    daily = pl.read_parquet(out / "daily.parquet")
    assert daily["date"].n_unique() == 31
    assert daily["cost"].sum() == pytest.approx(s["total_cost"])
    prom = (out / "inferops_cost.prom").read_text()
    last = daily.filter(pl.col("date") == daily["date"].max())["cost"].sum()
    assert f"inferops_cost_daily_usd {last:.4f}" in prom


def _hourly(counts: list[float]) -> pl.DataFrame:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    hours = [start + timedelta(hours=h) for h, c in enumerate(counts) if c]
    used = [c for c in counts if c]
    return pl.DataFrame({"hour": hours, "pricing_model": "on_demand", "instance_type": "g5.12xlarge",
                         "team": "x", "cost": [5.672 * c for c in used], "instance_hours": used,
                         "gpus": 4, "gpu_hours": [4.0 * c for c in used]})


def test_idle_hours_count_toward_the_floor():
    """Hours without usage are zeros in the percentile: a type used half the time has no floor."""
    assert measures._commitment("g5.12xlarge", _hourly([1, 0] * 50), 100, CostPolicy()) is None
    rec = measures._commitment("g5.12xlarge", _hourly([2] * 95 + [0] * 5), 100, CostPolicy())
    assert rec["numbers"]["instances"] == 2 and rec["numbers"]["floor_instances"] == 2
    assert rec["projected_savings"] == pytest.approx(2 * 100 * 5.672 * 0.30)
    # 15 empty hours of 100 push the p10 to 0
    assert measures._commitment("g5.12xlarge", _hourly([2] * 85 + [0] * 15), 100, CostPolicy()) is None


def test_daily_granularity_cur_takes_the_floor_over_days():
    """Daily CUR: one line per instance and day (24 instance-hours), stamped at midnight."""
    start = datetime(2026, 5, 1, tzinfo=UTC)
    days = [start + timedelta(days=d) for d in range(10)]
    rows = pl.DataFrame({"hour": days, "pricing_model": "on_demand", "instance_type": "g5.12xlarge", "team": "x",
                         "cost": 3 * 24 * 5.672, "instance_hours": 3 * 24.0, "gpus": 4, "gpu_hours": 3 * 96.0})
    rec = measures._commitment("g5.12xlarge", rows, 240, CostPolicy(), bucket=24)
    assert rec["numbers"]["instances"] == 3 and rec["numbers"]["granularity_hours"] == 24
    assert rec["projected_savings"] == pytest.approx(3 * 240 * 5.672 * 0.30, abs=0.01)
    s = measures.recommendations(rows.with_columns(pl.lit(None, pl.String).alias("gpu_model")), [
        start + timedelta(hours=h) for h in range(240)], CostPolicy(), {"discount": None})
    assert s[0]["numbers"]["instances"] == 3  # detected from the midnight stamps
