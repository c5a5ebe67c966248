"""Idle GPU cost: DCGM utilization per node and hour, joined to the CUR's instance-hours. No Prefect import.

For each hour H of the report, Prometheus evaluates ``avg_over_time(DCGM_FI_DEV_GPU_UTIL[1h])`` at
H+1h, i.e. over [H, H+1h). A GPU whose mean is under the policy threshold is idle for that hour. The
node label (``policy.node_label``) must carry the EC2 instance id, which is the CUR's resource id.
An instance's idle cost for the hour is its amortized cost x idle GPUs / its GPUs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from flows.common.errors import BackendUnavailable
from flows.common.prom import PrometheusClient, validate_name
from flows.cost_report.measures import EMPTY_IDLE_DAILY as EMPTY_DAILY
from flows.cost_report.models import CostPolicy

METRIC = "DCGM_FI_DEV_GPU_UTIL"
MAX_POINTS = 10_000  # per query_range call (Prometheus refuses more than 11,000)


def _series(client: PrometheusClient, promql: str, label: str, start: float, end: float,
            name: str) -> pl.DataFrame:
    rows = []
    for lo in range(int(start), int(end) + 1, MAX_POINTS * 3600):  # Prometheus caps points per series
        hi = min(end, lo + (MAX_POINTS - 1) * 3600)
        rows += [(labels.get(label), datetime.fromtimestamp(t - 3600, UTC), v)
                 for labels, values in client.query_range(promql, lo, hi, 3600) for t, v in values
                 if v == v]  # NaN is no data
    return pl.DataFrame(rows, schema={"resource_id": pl.String, "hour": pl.Datetime("us", "UTC"),
                                      name: pl.Float64}, orient="row")


def idle_cost(client: PrometheusClient, gpu_hours: pl.DataFrame,
              policy: CostPolicy) -> tuple[dict[str, Any], pl.DataFrame]:
    """(summary, daily idle) for resource-hours ``gpu_hours`` (hour, resource_id, instance_type,
    cost, instance_hours, gpus). Prometheus down is reported in the summary, never silently zero."""
    label = validate_name(policy.node_label)
    result: dict[str, Any] = {"prometheus": client.safe_url, "threshold_pct": policy.idle_util_threshold,
                              "node_label": label}
    if gpu_hours.is_empty():
        return {**result, "status": "no GPU instance-hours with resource ids in the CUR"}, EMPTY_DAILY
    start = gpu_hours["hour"].min() + timedelta(hours=1)  # type: ignore[operator]
    end = gpu_hours["hour"].max() + timedelta(hours=1)  # type: ignore[operator]
    window = f'avg_over_time({METRIC}{{{label}!=""}}[1h])'  # series without the node label can't join
    try:
        seen = _series(client, f"count by ({label}) ({window})", label,
                       start.timestamp(), end.timestamp(), "gpus_reporting")
        idle = _series(client, f"count by ({label}) ({window} < {policy.idle_util_threshold:g})", label,
                       start.timestamp(), end.timestamp(), "idle_gpus")
    except BackendUnavailable as exc:  # its message names the URL without credentials
        return {**result, "status": "unavailable", "error": str(exc)}, EMPTY_DAILY
    joined = (gpu_hours
              .join(seen, on=["resource_id", "hour"], how="left")
              .join(idle, on=["resource_id", "hour"], how="left")
              .with_columns(pl.min_horizontal(pl.col("idle_gpus").fill_null(0), pl.col("gpus")).alias("idle_gpus"))
              .with_columns((pl.col("instance_hours") * pl.col("idle_gpus")).alias("idle_gpu_hours"),
                            (pl.col("cost") * pl.col("idle_gpus") / pl.col("gpus")).alias("idle_cost"),
                            (pl.col("instance_hours") * pl.col("gpus")).alias("gpu_hours")))
    measured = joined.filter(pl.col("gpus_reporting").is_not_null())
    cur_nodes = set(gpu_hours["resource_id"].to_list())
    prom_nodes = set(seen["resource_id"].drop_nulls().to_list())
    daily = (joined.group_by(pl.col("hour").dt.date().alias("date"))
             .agg(pl.col("idle_gpu_hours", "idle_cost").sum()).sort("date"))
    by_type = (joined.group_by("instance_type")
               .agg(pl.col("idle_gpu_hours", "idle_cost").sum().round(4)).sort("idle_cost", descending=True))
    result.update({
        "status": "ok",
        "idle_gpu_hours": round(float(joined["idle_gpu_hours"].sum()), 4),
        "idle_cost": round(float(joined["idle_cost"].sum()), 4),
        "gpu_hours_with_metrics": round(float(measured["gpu_hours"].sum()), 4),
        "gpu_hours_without_metrics": round(float(joined["gpu_hours"].sum() - measured["gpu_hours"].sum()), 4),
        "instances_without_metrics": len(cur_nodes - prom_nodes),
        "prometheus_nodes_not_in_cur": len(prom_nodes - cur_nodes),
        "by_instance_type": by_type.to_dicts(),
    })
    return result, daily
