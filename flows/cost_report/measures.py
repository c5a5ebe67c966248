"""Classification (AWS's rules), the hourly cube, and every measure derived from it. No Prefect import.

The expensive part is one streaming group-by over the line items into an hourly "cube"
(hour x line item type x pricing model x instance type x team). Everything else (totals, daily trend,
team and instance-type spend, utilization, coverage, recommendations) is computed from that cube,
which is small (a month of a large fleet is a few hundred thousand rows at most).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from flows.common.errors import BadInput
from flows.cost_report.models import CURRENCY, PRICING_MODELS, CostPolicy
from flows.cost_report.read import currency_code

# EC2 instance usage (the usage amount is instance-hours): on-demand/RI/SP "BoxUsage", spot, dedicated
INSTANCE_USAGE = r"(BoxUsage|SpotUsage|DedicatedUsage|HostUsage)"
GPU_FAMILY = r"^(p\d|g\d|gr\d)"  # EC2 accelerated-computing families with NVIDIA/AMD GPUs
CUBE_KEYS = ("hour", "line_item_type", "pricing_model", "instance_type", "team")
CUBE_SUMS = ("cost", "instance_hours", "public_on_demand_cost", "priced_cost", "ri_unused_cost", "sp_commitment",
             "lines")
RESOURCE_KEYS = ("hour", "resource_id", "instance_type", "currency")
EMPTY_IDLE_DAILY = pl.DataFrame(schema={"date": pl.Date, "idle_gpu_hours": pl.Float64, "idle_cost": pl.Float64})


def load_gpu_table(extra: str | None = None) -> pl.DataFrame:
    """instance_type -> gpus, gpu_model. ``extra`` (a CSV with the same header) adds or overrides rows."""
    base = pl.read_csv(resources.files("flows.cost_report").joinpath("gpu_instances.csv").read_bytes(),
                       schema={"instance_type": pl.String, "gpus": pl.Int64, "gpu_model": pl.String})
    if extra is None:
        return base
    try:
        more = pl.read_csv(Path(extra), schema=base.schema)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise BadInput(f"GPU table {extra}: {' '.join(str(exc).split())[:200]}") from None
    if more.null_count().sum_horizontal().item() or (more["gpus"] <= 0).any():
        raise BadInput(f"GPU table {extra}: every row needs instance_type, gpus > 0 and gpu_model")
    return pl.concat([base.join(more, on="instance_type", how="anti"), more])


def pricing_model() -> pl.Expr:
    """spot / on_demand / reserved / savings_plan for usage lines; null for fees and adjustments."""
    lit = pl.col("line_item_type")
    return (pl.when((lit == "Usage") & pl.col("usage_type").str.contains("SpotUsage", literal=True))
            .then(pl.lit("spot"))
            .when(lit == "Usage").then(pl.lit("on_demand"))
            .when(lit == "DiscountedUsage").then(pl.lit("reserved"))
            .when(lit == "SavingsPlanCoveredUsage").then(pl.lit("savings_plan"))
            .otherwise(pl.lit(None, pl.String)))


_HOUR_US = 3_600 * 1_000_000
_SUMS = ("unblended_cost", "reservation_effective_cost", "sp_effective_cost", "usage_amount",
         "public_on_demand_cost", "priced_cost", "ri_unused_cost", "sp_commitment")


def _line_groups(rows: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """Sum the lines per (rejected, currency, hour, line item type, usage type, instance type, ``key``)
    first: every string rule (classification, instance usage, the currency code) then runs on these few
    groups, not on millions of rows; rejected rows are counted in the same pass and dropped by the caller."""
    hour = pl.col("usage_start").dt.epoch("us") // _HOUR_US  # an integer key: a datetime again in classified()
    return (rows
            .with_columns(hour.alias("hour"),
                          pl.when(pl.col("public_on_demand_cost").is_not_null())
                          .then(pl.col("unblended_cost")).alias("priced_cost"),
                          (pl.col("ri_unused_upfront").fill_null(0) + pl.col("ri_unused_recurring").fill_null(0))
                          .alias("ri_unused_cost"))
            .group_by("rejected", "currency", "hour", "line_item_type", "usage_type", "instance_type", key)
            .agg(*(pl.col(c).sum() for c in _SUMS), pl.len().alias("lines")))


def classified(groups: pl.LazyFrame) -> pl.LazyFrame:
    """Adds pricing_model, cost (amortized for usage, unblended otherwise) and instance_hours."""
    model = pl.col("pricing_model")
    cost = (pl.when(model == "reserved").then(pl.col("reservation_effective_cost"))
            .when(model == "savings_plan").then(pl.col("sp_effective_cost"))
            .otherwise(pl.col("unblended_cost")))
    instance_hours = (pl.when(model.is_not_null() & pl.col("instance_type").is_not_null()
                              & pl.col("usage_type").str.contains(INSTANCE_USAGE))
                      .then(pl.col("usage_amount")).otherwise(0.0))
    blank_is_null = [pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
                     for c in ("usage_type", "instance_type", "team", "resource_id") if c in groups.collect_schema()]
    return (groups
            .with_columns(*blank_is_null, currency_code(pl.col("currency")).alias("currency"),
                          (pl.col("hour") * _HOUR_US).cast(pl.Datetime("us", "UTC")).alias("hour"))
            .with_columns(pricing_model().alias("pricing_model"),
                          pl.col("instance_type").str.strip_prefix("ml."))
            .with_columns(cost.alias("cost"), instance_hours.alias("instance_hours")))


def cube(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The hourly aggregate of every line, keyed also by ``rejected`` and ``currency`` (the caller
    splits off the rejected lines and those in another currency)."""
    return merge_cube(classified(_line_groups(rows, "team")).with_columns(pl.col("team").fill_null("untagged")))


def merge_cube(parts: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Cubes (or finer groups) summed to one cube: parts of the CUR read one by one add up."""
    return parts.lazy().group_by("rejected", "currency", *CUBE_KEYS).agg(*(pl.col(c).sum() for c in CUBE_SUMS))


def resource_hours(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Amortized cost and instance-hours per (instance, hour, currency) of valid lines: what idle GPU
    time joins to."""
    return merge_resource_hours(
        classified(_line_groups(rows.filter(~pl.col("rejected")), "resource_id"))
        .filter((pl.col("instance_hours") > 0) & pl.col("resource_id").is_not_null()))


def merge_resource_hours(parts: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    return parts.lazy().group_by(*RESOURCE_KEYS).agg(pl.col("cost").sum(), pl.col("instance_hours").sum())


def report_currency(valid_cube: pl.DataFrame, wanted: str) -> str:
    """``wanted``, or with ``auto`` the ISO 4217 code of most valid lines (USD on a tie, or when no line
    names a currency)."""
    if wanted != "auto":
        return wanted
    lines = valid_cube.group_by("currency").agg(pl.col("lines").sum()).drop_nulls("currency")
    counts = {r["currency"]: r["lines"] for r in lines.iter_rows(named=True) if CURRENCY.fullmatch(r["currency"])}
    if not counts:
        return "USD"
    return max(sorted(counts), key=lambda c: (counts[c], c == "USD"))


def with_gpus(df: pl.DataFrame, gpus: pl.DataFrame) -> pl.DataFrame:
    return (df.join(gpus, on="instance_type", how="left")
            .with_columns(pl.col("gpus").fill_null(0),
                          (pl.col("instance_hours") * pl.col("gpus").fill_null(0)).alias("gpu_hours")))


def period_hours(cube_df: pl.DataFrame, period: tuple[datetime, datetime] | None) -> list[datetime]:
    """Every hour of the report: the whole month with --period, else first to last usage hour."""
    if period is not None:
        start, end = period
    else:
        usage = cube_df.filter(pl.col("pricing_model").is_not_null())["hour"]
        if usage.is_empty():
            return []
        start, end = usage.min(), usage.max() + timedelta(hours=1)  # type: ignore[operator]
    n = int((end - start).total_seconds() // 3600)
    return [start + timedelta(hours=i) for i in range(n)]


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None when there is no b or the quotient is not a number (finite / 5e-324 is inf)."""
    q = a / b if b else math.nan
    return round(q, 6) if math.isfinite(q) else None


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def summarize(c: pl.DataFrame, hours: list[datetime], policy: CostPolicy,
              missing_columns: set[str]) -> dict[str, Any]:
    """Totals, per-model measures, fees, utilization, coverage and recommendations from the cube."""
    usage = c.filter(pl.col("pricing_model").is_not_null())
    fees = c.filter(pl.col("pricing_model").is_null())
    per_model = {m: {"cost": 0.0, "instance_hours": 0.0, "gpu_hours": 0.0} for m in PRICING_MODELS}
    sums = usage.group_by("pricing_model").agg(
        pl.col("cost", "instance_hours", "gpu_hours").sum(),
        pl.col("cost").filter(pl.col("gpus") > 0).sum().alias("gpu_instance_cost"))
    for row in sums.iter_rows(named=True):
        per_model[row.pop("pricing_model")] = row
    for m in per_model.values():
        # $/GPU-hour of GPU instances only: their EBS, transfer etc. stay in cost but not in this rate
        m["effective_cost_per_gpu_hour"] = _ratio(m.get("gpu_instance_cost", 0.0), m["gpu_hours"])
        for k in ("cost", "instance_hours", "gpu_hours", "gpu_instance_cost"):
            m[k] = round(m.get(k, 0.0), 4)
    by_fee = fees.group_by("line_item_type").agg(pl.col("cost").sum(), pl.col("lines").sum()).sort("line_item_type")
    notes: list[str] = []
    summary: dict[str, Any] = {
        "total_cost": round(sum(m["cost"] for m in per_model.values()), 4),
        "gpu_hours": round(sum(m["gpu_hours"] for m in per_model.values()), 4),
        "instance_hours": round(sum(m["instance_hours"] for m in per_model.values()), 4),
        "by_pricing_model": per_model,
        "fees_and_adjustments": {
            "total": round(float(by_fee["cost"].sum()), 4),
            "by_type": {r["line_item_type"]: {"cost": round(r["cost"], 4), "lines": r["lines"]}
                        for r in by_fee.iter_rows(named=True)},
        },
        "utilization": _utilization(c, missing_columns, notes),
        "coverage": {basis: _coverage(per_model, basis) for basis in ("instance_hours", "gpu_hours")},
        "spot_savings": _spot_savings(usage),
        "by_team": _top(usage, "team"),
        "by_instance_type": _by_instance_type(usage),
        "hours_in_period": len(hours),
    }
    summary["recommendations"] = recommendations(usage, hours, policy, summary["spot_savings"])
    unknown = (usage.filter((pl.col("gpus") == 0) & (pl.col("instance_hours") > 0)
                            & pl.col("instance_type").str.contains(GPU_FAMILY))["instance_type"].unique().sort())
    if len(unknown):
        notes.append(f"GPU-family instance types not in the GPU table (counted as 0 GPUs): "
                     f"{', '.join(unknown)}; add them with gpu_table")
    summary["notes"] = notes
    return summary


def _utilization(c: pl.DataFrame, missing: set[str], notes: list[str]) -> dict[str, Any]:
    def total(expr: pl.Expr, col: str) -> float:
        return float(c.filter(expr)[col].sum())

    ri_used = total(pl.col("pricing_model") == "reserved", "cost")
    ri_unused = total(pl.col("line_item_type") == "RIFee", "ri_unused_cost")
    sp_used = total(pl.col("pricing_model") == "savings_plan", "cost")
    sp_commit = total(pl.col("line_item_type") == "SavingsPlanRecurringFee", "sp_commitment")
    reserved: dict[str, Any] = {"used_cost": round(ri_used, 4), "unused_cost": round(ri_unused, 4),
                                "utilization": _ratio(ri_used, ri_used + ri_unused)}
    if {"ri_unused_upfront", "ri_unused_recurring"} <= missing and (c["line_item_type"] == "RIFee").any():
        reserved["utilization"] = None
        notes.append("RI utilization unknown: the CUR has no reservation unused-fee columns")
    sp: dict[str, Any] = {"used_commitment": round(sp_used, 4), "total_commitment": round(sp_commit, 4),
                          "utilization": _ratio(sp_used, sp_commit)}
    if "sp_commitment" in missing and sp_used:
        notes.append("Savings Plan utilization unknown: the CUR has no savingsPlan/TotalCommitmentToDate")
    return {"reserved": reserved, "savings_plan": sp,
            "basis": "amortized cost used / (used + unused) for RIs; used / total commitment for SPs"}


def _coverage(per_model: dict[str, dict[str, Any]], basis: str) -> dict[str, Any]:
    # as in Cost Explorer: share of on-demand-eligible hours (spot excluded) covered by commitments
    eligible = sum(per_model[m][basis] for m in ("on_demand", "reserved", "savings_plan"))
    return {"reserved": _ratio(per_model["reserved"][basis], eligible),
            "savings_plan": _ratio(per_model["savings_plan"][basis], eligible),
            "on_demand": _ratio(per_model["on_demand"][basis], eligible),
            "committed": _ratio(per_model["reserved"][basis] + per_model["savings_plan"][basis], eligible)}


def _spot_savings(usage: pl.DataFrame) -> dict[str, Any]:
    spot = usage.filter(pl.col("pricing_model") == "spot")
    public = float(spot["public_on_demand_cost"].sum())
    priced = float(spot["priced_cost"].sum())
    return {"public_on_demand_cost": round(public, 4), "spot_cost_priced": round(priced, 4),
            "savings": round(public - priced, 4), "discount": _ratio(public - priced, public),
            "spot_cost_without_public_price": round(float(spot["cost"].sum()) - priced, 4)}


def _top(usage: pl.DataFrame, key: str) -> list[dict[str, Any]]:
    return (usage.group_by(key).agg(pl.col("cost", "instance_hours", "gpu_hours").sum().round(4))
            .sort("cost", descending=True).to_dicts())


def _by_instance_type(usage: pl.DataFrame) -> list[dict[str, Any]]:
    df = (usage.filter(pl.col("instance_type").is_not_null())
          .group_by("instance_type", "gpu_model", "gpus")
          .agg(pl.col("cost", "instance_hours", "gpu_hours").sum().round(4))
          .sort("cost", descending=True))
    return df.to_dicts()


def daily(c: pl.DataFrame) -> pl.DataFrame:
    """Per day and pricing model: amortized cost and GPU-hours (the trend charts and the textfile)."""
    return (c.filter(pl.col("pricing_model").is_not_null())
            .group_by(pl.col("hour").dt.date().alias("date"), "pricing_model")
            .agg(pl.col("cost", "instance_hours", "gpu_hours").sum())
            .sort("date", "pricing_model"))


def recommendations(usage: pl.DataFrame, hours: list[datetime], policy: CostPolicy,
                    spot: dict[str, Any]) -> list[dict[str, Any]]:
    recs: list[dict[str, Any]] = []
    gpu_usage = usage.filter(pl.col("gpus") > 0)
    n_hours = len(hours)
    # a daily-granularity CUR stamps every line at midnight: the floor is then taken over days
    stamps = usage["hour"].unique()
    bucket = 24 if len(stamps) > 1 and (stamps.dt.hour() == 0).all() else 1
    for itype, rows in gpu_usage.group_by("instance_type"):
        rec = _commitment(itype[0], rows, n_hours, policy, bucket)
        if rec:
            recs.append(rec)
    batch = gpu_usage.filter((pl.col("pricing_model") == "on_demand") & pl.col("team").is_in(policy.batch_teams))
    batch_cost = float(batch["cost"].sum())
    if batch_cost > 0:
        discount, source = ((spot["discount"], "observed on this CUR's spot lines")
                            if spot["discount"] and 0 < spot["discount"] < 1
                            else (policy.default_spot_discount, "policy default"))
        recs.append({
            "kind": "spot",
            "action": f"run interruptible batch work of teams {', '.join(policy.batch_teams)} on spot",
            "projected_savings": round(batch_cost * discount, 2),
            "numbers": {"on_demand_cost": round(batch_cost, 4),
                        "on_demand_gpu_hours": round(float(batch["gpu_hours"].sum()), 4),
                        "spot_discount": round(discount, 4), "discount_source": source},
        })
    return sorted(recs, key=lambda r: -r["projected_savings"])


def _commitment(itype: str, rows: pl.DataFrame, n_hours: int, policy: CostPolicy,
                bucket: int = 1) -> dict[str, Any] | None:
    """Reserve the steady floor of on-demand instances: the p-th percentile of the hourly instance
    count (of the daily mean count when ``bucket`` is 24, i.e. a daily-granularity CUR)."""
    od = rows.filter(pl.col("pricing_model") == "on_demand")
    od_hours = float(od["instance_hours"].sum())
    if not n_hours or od_hours <= 0:
        return None
    per_bucket = od.group_by("hour").agg(pl.col("instance_hours").sum())["instance_hours"] / bucket
    slots = -(-n_hours // bucket)
    series = pl.concat([per_bucket, pl.zeros(max(0, slots - len(per_bucket)), pl.Float64, eager=True)])  # idle: 0
    floor = float(series.quantile(policy.floor_percentile / 100, interpolation="linear"))  # numpy's default
    count = math.floor(floor + 1e-9)
    if count < 1:
        return None
    od_rate = float(od["cost"].sum()) / od_hours
    if not math.isfinite(od_rate):  # a vanishing number of hours: no rate to price a commitment at
        return None
    committed = rows.filter(pl.col("pricing_model").is_in(["reserved", "savings_plan"]))
    c_hours = float(committed["instance_hours"].sum())
    observed = 1 - float(committed["cost"].sum()) / c_hours / od_rate if c_hours and od_rate else None
    discount, source = ((observed, "observed: this CUR's RI/SP rate for the type vs on-demand")
                        if observed is not None and 0 < observed < 1
                        else (policy.default_commitment_discount, "policy default"))
    gpus = int(rows["gpus"][0])
    return {
        "kind": "commitment",
        "action": f"reserve {count} x {itype} (RI or Savings Plan) for the steady on-demand floor",
        "projected_savings": round(count * n_hours * od_rate * discount, 2),
        "numbers": {"instance_type": itype, "floor_percentile": policy.floor_percentile,
                    "floor_instances": round(floor, 4), "instances": count, "gpus": count * gpus,
                    "hours": n_hours, "granularity_hours": bucket,
                    "on_demand_rate_per_hour": round(od_rate, 4),
                    "on_demand_rate_per_gpu_hour": round(od_rate / gpus, 4),
                    "discount": round(discount, 4), "discount_source": source,
                    "peak_instances": round(float(series.max()), 4)},
    }
