"""A realistic sample CUR for a GPU inference fleet (the demo and the benchmark). No Prefect import.

One month of hourly line items: reserved p5s, a Savings Plan, steady and diurnal on-demand p4ds,
spot g6e batch, on-demand g5 batch (a spot candidate), bursty g6 research boxes, EBS volumes under
every instance, and the fees (RIFee, SavingsPlanRecurringFee, SavingsPlanNegation, Tax, Credit).
Prices are us-east-1 public on-demand list prices (USD/hour). ``scale`` multiplies the fleet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

PRICES = {"p5.48xlarge": 98.32, "p4d.24xlarge": 32.7726, "g6e.12xlarge": 10.49264,
          "g5.12xlarge": 5.672, "g6.xlarge": 0.8048}
RI_RATE, SP_RATE, SPOT_RATE = 0.60, 0.72, 0.35  # share of the public on-demand price
# (count, instance type, team, pricing model, duty: steady | diurnal | random | partial)
FLEET = [
    (4, "p5.48xlarge", "inference", "reserved", "steady"),
    (1, "p5.48xlarge", "inference", "reserved", "partial"),  # an RI that sits partly unused
    (2, "p5.48xlarge", "inference", "savings_plan", "steady"),
    (3, "p4d.24xlarge", "inference", "on_demand", "steady"),
    (3, "p4d.24xlarge", "inference", "on_demand", "diurnal"),
    (6, "g6e.12xlarge", "batch", "spot", "random"),
    (4, "g5.12xlarge", "batch", "on_demand", "diurnal"),
    (8, "g6.xlarge", "research", "on_demand", "random"),
]
EBS_RATE = 0.08 / 730 * 2000  # a 2 TB gp3 volume per instance, per hour
ATHENA_COLUMNS = {
    "line_item_usage_start_date": pl.Datetime("us", "UTC"), "line_item_line_item_type": pl.String,
    "line_item_usage_type": pl.String, "line_item_resource_id": pl.String,
    "product_instance_type": pl.String, "line_item_usage_amount": pl.Float64,
    "line_item_unblended_cost": pl.Float64, "pricing_public_on_demand_cost": pl.Float64,
    "reservation_effective_cost": pl.Float64,
    "reservation_unused_amortized_upfront_fee_for_billing_period": pl.Float64,
    "reservation_unused_recurring_fee": pl.Float64, "savings_plan_savings_plan_effective_cost": pl.Float64,
    "savings_plan_total_commitment_to_date": pl.Float64, "resource_tags_user_team": pl.String,
    "line_item_currency_code": pl.String,
}


def _running(duty: str, hours: int, rng: np.random.Generator) -> np.ndarray:
    hour_of_day = np.arange(hours) % 24
    if duty == "steady":
        return np.ones(hours, bool)
    if duty == "diurnal":
        return (hour_of_day >= 8) & (hour_of_day < 20)
    if duty == "partial":
        return rng.random(hours) < 0.8
    return rng.random(hours) < 0.45


def generate(month: str = "2026-05", *, scale: int = 1, seed: int = 7, first_serial: int = 0) -> pl.DataFrame:
    """The sample CUR in the Athena Parquet column style (one row per line item), billed in USD.
    ``first_serial`` offsets the resource ids, so separately generated chunks are separate fleets."""
    rng = np.random.default_rng(seed)
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    hours = int((end - start).total_seconds() // 3600)
    stamps = pl.datetime_range(start, end, "1h", closed="left", time_unit="us", eager=True)
    blocks: list[pl.DataFrame] = []
    serial = first_serial
    ri_unused_hours: dict[str, float] = {}
    sp_used = np.zeros(hours)
    for count, itype, team, model, duty in FLEET:
        price = PRICES[itype]
        for _ in range(count * scale):
            serial += 1
            rid = f"i-{serial:017x}"
            run = _running(duty, hours, rng)
            n = int(run.sum())
            if model == "reserved":
                ri_unused_hours[rid] = float(hours - n)
            if model == "savings_plan":
                sp_used[run] += price * SP_RATE
            line_type, usage_prefix = {"on_demand": ("Usage", "BoxUsage"), "spot": ("Usage", "SpotUsage"),
                                       "reserved": ("DiscountedUsage", "BoxUsage"),
                                       "savings_plan": ("SavingsPlanCoveredUsage", "BoxUsage")}[model]
            unblended = {"on_demand": price, "spot": price * SPOT_RATE, "reserved": 0.0,
                         "savings_plan": price}[model]
            blocks.append(pl.DataFrame({
                "line_item_usage_start_date": stamps.filter(run), "line_item_line_item_type": [line_type] * n,
                "line_item_usage_type": [f"USE1-{usage_prefix}:{itype}"] * n,
                "line_item_resource_id": [rid] * n, "product_instance_type": [itype] * n,
                "line_item_usage_amount": np.ones(n), "line_item_unblended_cost": np.full(n, unblended),
                "pricing_public_on_demand_cost": np.full(n, price),
                "reservation_effective_cost": np.full(n, price * RI_RATE if model == "reserved" else 0.0),
                "savings_plan_savings_plan_effective_cost":
                    np.full(n, price * SP_RATE if model == "savings_plan" else 0.0),
                "resource_tags_user_team": [team] * n,
            }))
            if model == "savings_plan":
                blocks.append(pl.DataFrame({
                    "line_item_usage_start_date": stamps.filter(run),
                    "line_item_line_item_type": ["SavingsPlanNegation"] * n,
                    "line_item_usage_type": [f"USE1-BoxUsage:{itype}"] * n, "line_item_resource_id": [rid] * n,
                    "line_item_usage_amount": np.ones(n), "line_item_unblended_cost": np.full(n, -price),
                    "resource_tags_user_team": [team] * n}))
            blocks.append(pl.DataFrame({  # the instance's EBS volume: usage, but not instance-hours
                "line_item_usage_start_date": stamps.filter(run), "line_item_line_item_type": ["Usage"] * n,
                "line_item_usage_type": ["USE1-EBS:VolumeUsage.gp3"] * n,
                "line_item_resource_id": [f"vol-{serial:017x}"] * n,
                "line_item_usage_amount": np.full(n, 2000 / 730), "line_item_unblended_cost": np.full(n, EBS_RATE),
                "resource_tags_user_team": [team] * n}))
    blocks.append(_fees(stamps, ri_unused_hours, sp_used))
    missing = {c: pl.lit("USD" if c == "line_item_currency_code" else None, t) for c, t in ATHENA_COLUMNS.items()}
    return pl.concat([b.select(pl.col(c).cast(t) if c in b.columns else missing[c].alias(c)
                               for c, t in ATHENA_COLUMNS.items()) for b in blocks])


def _fees(stamps: pl.Series, ri_unused_hours: dict[str, float], sp_used: np.ndarray) -> pl.DataFrame:
    hours = len(stamps)
    ri_rate = PRICES["p5.48xlarge"] * RI_RATE
    commitment = 1.05 * float(np.median(sp_used))  # an hourly commitment a little above the use
    rows = []
    for rid, unused in ri_unused_hours.items():  # no-upfront RIs: the recurring fee, billed monthly
        rows.append({"line_item_usage_start_date": stamps[0], "line_item_line_item_type": "RIFee",
                     "line_item_usage_type": "USE1-HeavyUsage:p5.48xlarge", "line_item_resource_id": rid,
                     "line_item_usage_amount": float(hours), "line_item_unblended_cost": ri_rate * hours,
                     "reservation_unused_recurring_fee": ri_rate * unused,
                     "reservation_unused_amortized_upfront_fee_for_billing_period": 0.0})
    for h in range(hours):
        rows.append({"line_item_usage_start_date": stamps[h],
                     "line_item_line_item_type": "SavingsPlanRecurringFee",
                     "line_item_usage_type": "ComputeSP:1yrNoUpfront", "line_item_usage_amount": 1.0,
                     "line_item_unblended_cost": commitment,
                     "savings_plan_total_commitment_to_date": commitment})
    rows.append({"line_item_usage_start_date": stamps[-1], "line_item_line_item_type": "Tax",
                 "line_item_usage_type": "Tax", "line_item_usage_amount": 0.0, "line_item_unblended_cost": 4210.55})
    rows.append({"line_item_usage_start_date": stamps[0], "line_item_line_item_type": "Credit",
                 "line_item_usage_type": "Credit", "line_item_usage_amount": 0.0,
                 "line_item_unblended_cost": -1500.0})
    return pl.DataFrame(rows, schema={c: t for c, t in ATHENA_COLUMNS.items() if c != "line_item_currency_code"})


def write_athena_parquet(df: pl.DataFrame, folder: Path, parts: int = 4) -> list[Path]:
    """The CUR as Athena-style Parquet parts, the way AWS delivers them (several files per month)."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-df.height // parts)
    paths = []
    for i in range(parts):
        path = folder / f"cur-{i + 1:05d}.snappy.parquet"
        df.slice(i * size, size).write_parquet(path, compression="snappy")
        paths.append(path)
    return paths
