"""Hand-checked totals on the small CURs in tests/data/cur/ (the same 13 lines in every column style).

The lines (see tests/data/cur/build.py), for --period 2026-05:
  on_demand     p5 98.32 (1 h, 8 GPUs) + EBS 0.25 + g6.xlarge 0.8048 (1 h, 1 GPU) = 99.3748, 2 h, 9 GPU-h
  spot          g5.12xlarge 4.00 (2 h x 4 GPUs; public on-demand 11.344)          =  4.00,   2 h, 8 GPU-h
  reserved      p4d effective 20.00 (unblended 0)                                  = 20.00,   1 h, 8 GPU-h
  savings_plan  p5 effective 70.00 (unblended 98.32)                               = 70.00,   1 h, 8 GPU-h
  total 193.3748, 33 GPU-hours
  fees: RIFee 14880, SavingsPlanNegation -98.32, SavingsPlanRecurringFee 75, Tax 12.34, Credit -10,
        Refund -2.5 = 14856.52; RI unused 5.00; SP commitment 75.00
  one g6.xlarge line (0.8048) on 2026-04-30 is outside the period.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from flows.common.errors import BadInput
from flows.common.runtime import run_flow
from flows.cost_report.flow import cost_report
from flows.cost_report.models import CostPolicy

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"
STYLES = {"legacy.csv.gz": "legacy", "athena.parquet": "athena", "cur2.parquet": "cur2", "cur2.csv.gz": "cur2"}


@pytest.fixture(autouse=True)
def _inline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


def report(tmp_path: Path, *cur: str, **kw) -> dict:
    return run_flow(cost_report, cur=[str(DATA / c) for c in cur], out=str(tmp_path / "out"), **kw)


@pytest.mark.parametrize("name", list(STYLES))
def test_hand_checked_totals_in_every_style(tmp_path, name):
    s = report(tmp_path, name, period="2026-05")
    assert s["input"]["styles"] == [STYLES[name]]
    m = s["by_pricing_model"]
    assert m["on_demand"] | {"effective_cost_per_gpu_hour": None} == {
        "cost": 99.3748, "instance_hours": 2.0, "gpu_hours": 9.0, "gpu_instance_cost": 99.1248,
        "effective_cost_per_gpu_hour": None}
    assert m["on_demand"]["effective_cost_per_gpu_hour"] == pytest.approx(99.1248 / 9, abs=1e-6)
    assert (m["spot"]["cost"], m["spot"]["instance_hours"], m["spot"]["gpu_hours"]) == (4.0, 2.0, 8.0)
    assert (m["reserved"]["cost"], m["reserved"]["instance_hours"], m["reserved"]["gpu_hours"]) == (20.0, 1.0, 8.0)
    assert (m["savings_plan"]["cost"], m["savings_plan"]["instance_hours"],
            m["savings_plan"]["gpu_hours"]) == (70.0, 1.0, 8.0)
    assert s["total_cost"] == pytest.approx(193.3748)
    assert s["gpu_hours"] == 33.0
    assert s["rejected_rows"] == 0 and s["out_of_period_rows"] == 1
    assert s["utilization"]["reserved"]["utilization"] == pytest.approx(20 / 25)
    assert s["utilization"]["savings_plan"]["utilization"] == pytest.approx(70 / 75, abs=1e-6)
    assert s["coverage"]["gpu_hours"] == {"reserved": 0.32, "savings_plan": 0.32, "on_demand": 0.36,
                                          "committed": 0.64}
    assert s["spot_savings"]["savings"] == pytest.approx(11.344 - 4.0)
    teams = {t["team"]: t["cost"] for t in s["by_team"]}
    assert teams == {"inference": 118.57, "training": 70.0, "batch": 4.0, "untagged": 0.8048}


@pytest.mark.parametrize("name", list(STYLES))
def test_fees_stay_out_of_usage_but_are_reported(tmp_path, name):
    s = report(tmp_path, name, period="2026-05")
    fees = s["fees_and_adjustments"]
    assert {k: v["cost"] for k, v in fees["by_type"].items()} == {
        "Credit": -10.0, "RIFee": 14880.0, "Refund": -2.5, "SavingsPlanNegation": -98.32,
        "SavingsPlanRecurringFee": 75.0, "Tax": 12.34}
    assert fees["total"] == pytest.approx(14856.52)
    # the usage view is the four models only: RIFee/negation/tax are not in it, nor in any team
    assert sum(t["cost"] for t in s["by_team"]) == pytest.approx(s["total_cost"])
    cube = pl.read_parquet(tmp_path / "out" / "aggregates.parquet")
    assert cube.filter(pl.col("pricing_model").is_null())["line_item_type"].unique().sort().to_list() == [
        "Credit", "RIFee", "Refund", "SavingsPlanNegation", "SavingsPlanRecurringFee", "Tax"]


def test_without_period_every_line_counts_and_parts_add_up(tmp_path):
    s = report(tmp_path, "legacy.csv.gz", "athena.parquet")
    assert s["out_of_period_rows"] == 0
    assert s["total_cost"] == pytest.approx(2 * (193.3748 + 0.8048))
    assert s["input"]["files"] == 2 and s["input"]["styles"] == ["athena", "legacy"]


def test_quarantine_counts_and_keeps_the_rows(tmp_path):
    s = report(tmp_path, "malformed.csv.gz")
    assert s["rejected_rows"] == 5
    assert s["by_pricing_model"]["on_demand"]["cost"] == pytest.approx(2 * 0.8048)
    # a Tax line without usage type or amount is a fee, not a malformed row
    assert s["fees_and_adjustments"]["by_type"]["Tax"] == {"cost": 2.0, "lines": 2}
    q = pl.read_csv(tmp_path / "out" / "quarantine.csv", infer_schema=False)
    assert q["row"].to_list() == ["3", "4", "5", "6", "10"]  # file lines (header is line 1)
    assert q["reason"].to_list() == ["missing or bad unblended_cost", "missing or bad usage_start",
                                     "DiscountedUsage without reservation_effective_cost",
                                     "bad public_on_demand_cost", "usage line without usage_amount"]
    assert q["unblended_cost"][0] == "abc"  # the raw value, as it came
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rejected_rows"] == 5 and summary["files"]["quarantine"] == "quarantine.csv"
    assert "inferops_cost_report_rejected_rows 5" in (tmp_path / "out" / "inferops_cost.prom").read_text()


def test_a_clean_rerun_removes_a_stale_quarantine(tmp_path):
    report(tmp_path, "malformed.csv.gz")
    s = report(tmp_path, "athena.parquet")
    assert s["rejected_rows"] == 0 and not (tmp_path / "out" / "quarantine.csv").exists()


def test_unknown_style_names_the_columns(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("date,cost\n2026-05-01,3\n")
    with pytest.raises(BadInput, match=r"unknown CUR column style in .*odd.csv; columns seen: date, cost"):
        report(tmp_path, str(odd))


def test_unreadable_parts_are_reported_not_fatal(tmp_path):
    folder = tmp_path / "cur"
    folder.mkdir()
    (folder / "part-1.parquet").write_bytes((DATA / "athena.parquet").read_bytes())
    (folder / "part-2.parquet").write_bytes(b"not parquet at all")
    (folder / "manifest.json").write_text("{}")  # not a part: ignored
    s = report(tmp_path, str(folder), str(tmp_path / "missing"), period="2026-05")
    assert s["total_cost"] == pytest.approx(193.3748)
    failed = s["input"]["failed"]
    assert len(failed) == 2
    assert "part-2.parquet: unreadable" in failed[0] and "missing: no such file" in failed[1]


def test_nothing_readable_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no readable CUR"):
        report(tmp_path, str(tmp_path / "nope"))


def test_bad_period_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="bad --period"):
        report(tmp_path, "athena.parquet", period="2026-13")


def test_gpu_table_is_extensible(tmp_path):
    extra = tmp_path / "gpus.csv"
    extra.write_text("instance_type,gpus,gpu_model\ng6.xlarge,2,L4-test\n")
    s = report(tmp_path, "athena.parquet", period="2026-05", gpu_table=str(extra))
    assert s["by_pricing_model"]["on_demand"]["gpu_hours"] == 10.0
    assert {r["instance_type"]: r["gpu_model"] for r in s["by_instance_type"]}["g6.xlarge"] == "L4-test"


def test_team_tag_is_a_policy(tmp_path):
    s = report(tmp_path, "athena.parquet", period="2026-05", policy=CostPolicy(team_tag="owner"))
    assert [t["team"] for t in s["by_team"]] == ["untagged"]
    with pytest.raises(ValueError):
        CostPolicy(team_tag="team) or vector(1")


def test_cur2_instance_type_from_the_product_map(tmp_path):
    """A CUR 2.0 export without the static product_instance_type column: the product map has it."""
    df = pl.read_parquet(DATA / "cur2.parquet")
    product = [[{"key": "instance_type", "value": t}] if t else [] for t in df["product_instance_type"]]
    df.drop("product_instance_type", "product").with_columns(
        pl.Series("product", product).cast(pl.Map(pl.String, pl.String))).write_parquet(tmp_path / "p.parquet")
    s = report(tmp_path, str(tmp_path / "p.parquet"), period="2026-05")
    assert s["input"]["styles"] == ["cur2"]
    assert s["gpu_hours"] == 33.0 and s["total_cost"] == pytest.approx(193.3748)


def test_gpu_family_missing_from_the_table_is_noted(tmp_path):
    df = pl.read_parquet(DATA / "athena.parquet").with_columns(
        pl.col("product_instance_type").str.replace("g6.xlarge", "g9.xlarge", literal=True))
    df.write_parquet(tmp_path / "g9.parquet")
    s = report(tmp_path, str(tmp_path / "g9.parquet"), period="2026-05")
    assert s["gpu_hours"] == 32.0
    assert any("g9.xlarge" in n for n in s["notes"])


def test_athena_empty_strings_are_missing_values(tmp_path):
    """Athena-style Parquet writes "" for absent strings: same totals, "" team is untagged."""
    df = pl.read_parquet(DATA / "athena.parquet")
    df.with_columns(pl.col(pl.String).fill_null("")).write_parquet(tmp_path / "blank.parquet")
    s = report(tmp_path, str(tmp_path / "blank.parquet"), period="2026-05")
    assert s["total_cost"] == pytest.approx(193.3748) and s["gpu_hours"] == 33.0
    assert {t["team"] for t in s["by_team"]} == {"inference", "training", "batch", "untagged"}
    assert s["fees_and_adjustments"]["total"] == pytest.approx(14856.52)
