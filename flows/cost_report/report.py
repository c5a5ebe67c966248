"""The report pipeline's steps, as plain functions (the flow makes them tasks). No Prefect import.

``aggregate`` streams every CUR part once through polars' streaming engine into the hourly cube
(and, for the idle join, per-instance hours), counting malformed rows on the way. A part that turns
out to be damaged past its footer (a truncated gzip, a corrupt data page) fails that pass; the parts
are then read one by one, the damaged ones are listed in ``Sources.failed`` and the report covers the
rest. The report currency is chosen from the cube (``CostPolicy.currency``); lines in any other
currency are quarantined with the malformed ones, which a second pass (only when there are some)
writes to ``quarantine.csv``.
``write_outputs`` writes the fixed files of the out folder; ``registry`` holds the metrics that
:func:`flows.common.metrics.publish` writes as a textfile and/or pushes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from flows.common.errors import BadInput
from flows.cost_report import measures
from flows.cost_report.html import render_html
from flows.cost_report.models import CURRENCY
from flows.cost_report.read import (
    READ_ERRORS,
    Normalised,
    Sources,
    display,
    normalise,
    nothing_readable,
    reason,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

SUMMARY = "summary.json"
HTML = "report.html"
QUARANTINE = "quarantine.csv"
AGGREGATES = "aggregates.parquet"
DAILY = "daily.parquet"
TEXTFILE = "inferops_cost.prom"
JOB = "inferops_cost_report"  # the Pushgateway job


@dataclass
class Aggregates:
    cube: pl.DataFrame  # currency + measures.CUBE_KEYS + sums, GPU columns joined, in the period and currency
    resource_hours: pl.DataFrame  # hour, resource_id, instance_type, cost, instance_hours, gpus
    rejected_rows: int  # malformed or absurd lines, plus lines in another currency
    out_of_period_rows: int
    currency: str = "USD"
    other_currencies: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> lines, cost
    rejected_by_cause: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def out_folder(out: str | Path) -> Path:
    """``--out`` as a folder we can write: created if absent; BadInput if it is a file or cannot be made."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {_shown(out)} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:  # under a regular file, no permission, a NUL byte, too long
        raise BadInput(f"--out {_shown(out)}: cannot create the folder ({reason(exc)})") from None
    return path


def _shown(out: str | Path) -> str:
    return display(str(out))[:300]


def bound_prefetch() -> None:
    """Polars' Parquet reader decodes row groups ahead of the streaming engine; by default so many that
    a 60M-line CUR peaks near 1 GiB. A few per thread keep both cores busy at about half of that
    (measured: benchmarks/cost_report.py). An explicit POLARS_ROW_GROUP_PREFETCH_SIZE wins."""
    os.environ.setdefault("POLARS_ROW_GROUP_PREFETCH_SIZE", str(max(4, pl.thread_pool_size())))


def _collect(parts: list[Normalised], with_resources: bool) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    bound_prefetch()
    rows = pl.concat([p.rows for p in parts], how="vertical")
    queries = [measures.cube(rows)] + ([measures.resource_hours(rows)] if with_resources else [])
    cube, *rest = pl.collect_all(queries, engine="streaming")  # one streaming pass over every part
    return cube, (rest[0] if rest else None)


def _collect_each(parts: list[Normalised], sources: Sources,
                  with_resources: bool) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Part by part: a damaged part is failed, the others add up to the same cube."""
    cubes, res = [], []
    for part in list(parts):
        try:
            c, r = _collect([part], with_resources)
        except READ_ERRORS as exc:
            sources.fail(part.file, exc)
            parts.remove(part)
            continue
        cubes.append(c)
        res.append(r)
    if not cubes:
        raise nothing_readable(sources)
    cube = measures.merge_cube(pl.concat(cubes)).collect()
    return cube, (measures.merge_resource_hours(pl.concat(res)).collect() if with_resources else None)


def aggregate(sources: Sources, out: Path, *, team_tag: str, gpus: pl.DataFrame,
              period: tuple[datetime, datetime] | None, with_resources: bool,
              currency: str = "auto") -> Aggregates:
    parts = [normalise(f, team_tag, sources.missing_columns) for f in sources.files]
    try:
        cube, res = _collect(parts, with_resources)
    except READ_ERRORS:  # some part is damaged past its footer: find it
        cube, res = _collect_each(parts, sources, with_resources)
    malformed = int(cube.filter(pl.col("rejected"))["lines"].sum())
    cube = cube.filter(~pl.col("rejected")).drop("rejected")
    in_period = pl.lit(True) if period is None else pl.col("hour").is_between(*period, closed="left")
    out_rows = int(cube.filter(~in_period)["lines"].sum())
    cube = cube.filter(in_period)
    chosen = measures.report_currency(cube, currency)
    mine = pl.col("currency").is_not_null() & (pl.col("currency") == chosen)
    code = pl.col("currency")
    named = (pl.when(code.is_null()).then(pl.lit("(missing)"))  # hostile codes never reach a report as text
             .when(code.str.contains(f"^{CURRENCY.pattern}$")).then(code).otherwise(pl.lit("(invalid)")))
    other = (cube.filter(~mine).group_by(named.alias("currency"))
             .agg(pl.col("lines").sum(), pl.col("cost").sum().round(4)).sort("currency"))
    others = {r["currency"]: {"lines": r["lines"], "cost": r["cost"]} for r in other.iter_rows(named=True)}
    other_lines = int(other["lines"].sum())
    agg = Aggregates(measures.with_gpus(cube.filter(mine), gpus), _resources(res, period, chosen, gpus),
                     malformed + other_lines, out_rows, chosen, others,
                     {"malformed": malformed, "other_currency": other_lines})
    quarantine = out / QUARANTINE
    quarantine.unlink(missing_ok=True)
    if agg.rejected_rows:  # a second pass only when there is something to quarantine
        partial = out / (QUARANTINE + ".partial")
        try:
            pl.concat([p.quarantine(chosen, period) for p in parts], how="vertical").sink_csv(
                partial, engine="streaming")
            partial.replace(quarantine)
        except READ_ERRORS as exc:  # the rows are counted; only their copy is missing
            partial.unlink(missing_ok=True)
            agg.notes.append(f"quarantine.csv not written: {reason(exc)}")
    return agg


def _resources(res: pl.DataFrame | None, period: tuple[datetime, datetime] | None, currency: str,
               gpus: pl.DataFrame) -> pl.DataFrame:
    if res is None:
        res = pl.DataFrame(schema={"hour": pl.Datetime("us", "UTC"), "resource_id": pl.String,
                                   "instance_type": pl.String, "currency": pl.String,
                                   "cost": pl.Float64, "instance_hours": pl.Float64})
    if period is not None:
        res = res.filter(pl.col("hour").is_between(*period, closed="left"))
    res = res.filter(pl.col("currency") == currency).drop("currency")
    return measures.with_gpus(res, gpus).filter(pl.col("gpus") > 0).drop("gpu_model", "gpu_hours")


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become null, dates become ISO strings."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return x


def finish_summary(summary: dict[str, Any], sources: Sources, agg: Aggregates, period: str | None) -> dict[str, Any]:
    """The measures of ``summary`` plus what the run saw: currency, rejected and failed inputs, notes."""
    notes = summary.setdefault("notes", [])
    if agg.other_currencies:
        notes.append(f"lines in other currencies than {agg.currency} quarantined, not converted or summed: "
                     + ", ".join(f"{c} ({v['lines']} lines)" for c, v in agg.other_currencies.items()))
    if "currency" in sources.missing_columns:
        notes.append("some CUR files have no currency column: their lines are taken as USD")
    if agg.currency != "USD":
        notes.append(f"the report is in {agg.currency}: no USD metrics are published")
    notes += agg.notes
    summary.update({
        "period": period, "currency": agg.currency, "rejected_rows": agg.rejected_rows,
        "rejected_by_cause": agg.rejected_by_cause, "other_currencies": agg.other_currencies,
        "out_of_period_rows": agg.out_of_period_rows,
        "input": {"files": len(sources.files), "styles": sorted({f.style for f in sources.files}),
                  "failed": sources.failed},
    })
    return summary


def add_idle(summary: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """The idle-GPU result in ``summary``, and its recommendation when GPU-hours were idle."""
    summary["idle"] = idle
    if idle.get("status") == "ok" and idle["idle_cost"] > 0:
        summary["recommendations"].append({
            "kind": "idle", "action": "reclaim idle GPU-hours with the nightly idle-GPU flow",
            "projected_savings": idle["idle_cost"],
            "numbers": {"idle_gpu_hours": idle["idle_gpu_hours"], "threshold_pct": idle["threshold_pct"]}})
        summary["recommendations"].sort(key=lambda r: -r["projected_savings"])
    return summary


def registry(daily: pl.DataFrame, summary: dict[str, Any]) -> CollectorRegistry:
    """The report's gauges: the latest day's amortized cost (what InferopsGpuCostAnomaly reads), per
    pricing model, and the rejected rows. The ``_usd`` gauges only for a report in USD."""
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    if summary["currency"] == "USD" and not daily.is_empty():
        day = daily.filter(pl.col("date") == daily["date"].max())
        Gauge("inferops_cost_daily_usd", "Amortized cost of all usage lines on the latest day in the CUR (USD)",
              registry=reg).set(round(float(day["cost"].sum()), 4))
        by_model = Gauge("inferops_cost_daily_by_model_usd", "The same day's amortized cost per pricing model (USD)",
                         ["pricing_model"], registry=reg)
        for r in day.iter_rows(named=True):
            by_model.labels(pricing_model=r["pricing_model"]).set(round(r["cost"], 4))
    Gauge("inferops_cost_report_rejected_rows", "CUR rows quarantined by the last report (malformed, absurd "
          "or in another currency)", registry=reg).set(summary["rejected_rows"])
    return reg


def write_outputs(out: Path, summary: dict[str, Any], agg: Aggregates, daily: pl.DataFrame,
                  idle_daily: pl.DataFrame) -> dict[str, str]:
    """summary.json, report.html, aggregates.parquet and daily.parquet (the metrics textfile beside them
    is :func:`flows.common.metrics.publish`'s)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"summary": out / SUMMARY, "html": out / HTML, "aggregates": out / AGGREGATES,
             "daily": out / DAILY, "textfile": out / TEXTFILE}
    agg.cube.sort(measures.CUBE_KEYS, nulls_last=True).write_parquet(files["aggregates"])
    daily.write_parquet(files["daily"])
    files["html"].write_text(render_html(summary, daily, idle_daily), encoding="utf-8")
    if agg.rejected_rows and (out / QUARANTINE).exists():
        files["quarantine"] = out / QUARANTINE
    summary["files"] = {k: v.name for k, v in files.items()}
    files["summary"].write_text(json.dumps(_clean(summary), indent=2, sort_keys=False) + "\n")
    return {k: str(v) for k, v in files.items()}
