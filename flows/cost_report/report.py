"""The report pipeline's steps, as plain functions (the flow makes them tasks). No Prefect import.

``aggregate`` streams every CUR part once through polars' streaming engine into the hourly cube
(and, for the idle join, per-instance hours), counting malformed rows on the way; only when there
are some does a second pass write them to ``quarantine.csv``.
``write_outputs`` writes the fixed files of the out folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from flows.cost_report import measures
from flows.cost_report.html import render_html
from flows.cost_report.read import Sources, normalise

SUMMARY = "summary.json"
HTML = "report.html"
QUARANTINE = "quarantine.csv"
AGGREGATES = "aggregates.parquet"
DAILY = "daily.parquet"
TEXTFILE = "inferops_cost.prom"


@dataclass
class Aggregates:
    cube: pl.DataFrame  # measures.CUBE_KEYS + sums, GPU columns joined, inside the period
    resource_hours: pl.DataFrame  # hour, resource_id, instance_type, cost, instance_hours, gpus
    rejected_rows: int
    out_of_period_rows: int


def aggregate(sources: Sources, out: Path, *, team_tag: str, gpus: pl.DataFrame,
              period: tuple[datetime, datetime] | None, with_resources: bool) -> Aggregates:
    parts, rejects = [], []
    for f in sources.files:
        rows, rejected_rows = normalise(f, team_tag, sources.missing_columns)
        parts.append(rows)
        rejects.append(rejected_rows)
    rows = pl.concat(parts, how="vertical")
    queries = [measures.cube(rows)]
    if with_resources:
        queries.append(measures.resource_hours(rows))
    cube, *rest = pl.collect_all(queries)  # one streaming pass; rejected rows are counted in it
    rejected = int(cube.filter(pl.col("rejected"))["lines"].sum())
    cube = cube.filter(~pl.col("rejected")).drop("rejected")
    quarantine = out / QUARANTINE
    quarantine.unlink(missing_ok=True)
    if rejected:  # a second pass only when there is something to quarantine
        partial = out / (QUARANTINE + ".partial")
        pl.concat(rejects, how="vertical").sink_csv(partial)
        partial.replace(quarantine)
    in_period = pl.lit(True) if period is None else pl.col("hour").is_between(*period, closed="left")
    out_rows = int(cube.filter(~in_period)["lines"].sum())
    cube = measures.with_gpus(cube.filter(in_period), gpus)
    res = rest[0].filter(in_period) if rest else pl.DataFrame(
        schema={"hour": pl.Datetime("us", "UTC"), "resource_id": pl.String, "instance_type": pl.String,
                "cost": pl.Float64, "instance_hours": pl.Float64})
    res = measures.with_gpus(res, gpus).filter(pl.col("gpus") > 0).drop("gpu_model", "gpu_hours")
    return Aggregates(cube, res, rejected, out_rows)


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


def write_outputs(out: Path, summary: dict[str, Any], agg: Aggregates, daily: pl.DataFrame,
                  idle_daily: pl.DataFrame) -> dict[str, str]:
    """summary.json, report.html, aggregates.parquet, daily.parquet and the Prometheus textfile."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"summary": out / SUMMARY, "html": out / HTML, "aggregates": out / AGGREGATES,
             "daily": out / DAILY, "textfile": out / TEXTFILE}
    agg.cube.sort(measures.CUBE_KEYS, nulls_last=True).write_parquet(files["aggregates"])
    daily.write_parquet(files["daily"])
    files["textfile"].write_text(textfile(daily, summary))
    files["html"].write_text(render_html(summary, daily, idle_daily), encoding="utf-8")
    if agg.rejected_rows:
        files["quarantine"] = out / QUARANTINE
    summary["files"] = {k: v.name for k, v in files.items()}
    files["summary"].write_text(json.dumps(_clean(summary), indent=2, sort_keys=False) + "\n")
    return {k: str(v) for k, v in files.items()}


def textfile(daily: pl.DataFrame, summary: dict[str, Any]) -> str:
    """node_exporter textfile: the latest day's amortized cost (what the alert rules read)."""
    lines = ["# HELP inferops_cost_daily_usd Amortized cost of all usage lines on the latest day in the CUR (USD).",
             "# TYPE inferops_cost_daily_usd gauge"]
    if not daily.is_empty():
        last = daily["date"].max()
        day = daily.filter(pl.col("date") == last)
        lines.append(f"# day: {last}")
        lines.append(f'inferops_cost_daily_usd {float(day["cost"].sum()):.4f}')
        lines += ["# HELP inferops_cost_daily_by_model_usd The same day's cost per pricing model (USD).",
                  "# TYPE inferops_cost_daily_by_model_usd gauge"]
        lines += [f'inferops_cost_daily_by_model_usd{{pricing_model="{r["pricing_model"]}"}} {r["cost"]:.4f}'
                  for r in day.iter_rows(named=True)]
    lines += ["# HELP inferops_cost_report_rejected_rows Malformed CUR rows quarantined by the last report.",
              "# TYPE inferops_cost_report_rejected_rows gauge",
              f"inferops_cost_report_rejected_rows {summary['rejected_rows']}"]
    return "\n".join(lines) + "\n"
