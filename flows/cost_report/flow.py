"""The ``cost_report`` flow: CUR parts -> hourly cube -> measures, idle cost, recommendations -> files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flows.common import artifacts
from flows.common.errors import BadInput
from flows.common.runtime import NO_CACHE, flow, get_logger, ops_task
from flows.common.settings import get_settings
from flows.cost_report import measures
from flows.cost_report.idle import EMPTY_DAILY, idle_cost
from flows.cost_report.models import CostPolicy, parse_period
from flows.cost_report.read import Sources, gather
from flows.cost_report.report import Aggregates, aggregate, write_outputs


@ops_task(name="gather-cur", cache_policy=NO_CACHE)  # boto3 retries (adaptive) itself
def gather_task(cur: list[str], workdir: Path) -> Sources:
    s3 = get_settings().s3
    return gather(cur, workdir, region=s3.primary_region, endpoint_url=s3.endpoint_url)


@ops_task(name="aggregate-cur", cache_policy=NO_CACHE)
def aggregate_task(sources: Sources, out: Path, policy: CostPolicy, period: Any, gpu_table: str | None,
                   with_resources: bool) -> Aggregates:
    return aggregate(sources, out, team_tag=policy.team_tag, gpus=measures.load_gpu_table(gpu_table),
                     period=period, with_resources=with_resources)


@ops_task(name="idle-gpu-cost", cache_policy=NO_CACHE)
def idle_task(url: str, agg: Aggregates, policy: CostPolicy) -> Any:
    prom = get_settings().prometheus
    token = prom.bearer_token.get_secret_value() if prom.bearer_token else None
    return idle_cost(url, agg.resource_hours, policy, timeout_s=prom.timeout_s, bearer_token=token)


def _markdown(summary: dict[str, Any]) -> str:
    def rate(v: float | None) -> str:
        return "" if v is None else f"${v:,.3f}"

    rows = "\n".join(f"| {m} | ${v['cost']:,.2f} | {v['instance_hours']:,.1f} | {v['gpu_hours']:,.1f} | "
                     f"{rate(v['effective_cost_per_gpu_hour'])} |" for m, v in summary["by_pricing_model"].items())
    recs = "\n".join(f"- {r['action']}: **${r['projected_savings']:,.2f}** projected savings"
                     for r in summary["recommendations"]) or "- none"
    idle = summary["idle"]
    idle_line = (f"{idle['idle_gpu_hours']:,.1f} idle GPU-hours, ${idle['idle_cost']:,.2f}"
                 if idle.get("status") == "ok" else str(idle.get("status")))
    return (f"# GPU cost report {summary.get('period') or ''}\n\n"
            f"Total amortized cost **${summary['total_cost']:,.2f}**, {summary['gpu_hours']:,.1f} GPU-hours; "
            f"fees and adjustments ${summary['fees_and_adjustments']['total']:,.2f}; "
            f"rejected rows {summary['rejected_rows']}; failed inputs {len(summary['input']['failed'])}.\n\n"
            "| pricing model | cost | instance-hours | GPU-hours | $/GPU-hour |\n|---|---|---|---|---|\n"
            f"{rows}\n\nIdle: {idle_line}\n\n## Recommendations\n{recs}\n")


@flow(name="cost-report", log_prints=False)
def cost_report(cur: list[str], out: str = "cost-report", period: str | None = None,
                prometheus: str | None = None, policy: CostPolicy = CostPolicy(),  # noqa: B008
                gpu_table: str | None = None) -> dict[str, Any]:
    """GPU cost report from AWS CUR parts into ``out``.

    Args:
        cur: CUR files, folders or s3://bucket/prefix (every part below the prefix is read)
        out: output folder: summary.json, report.html, aggregates/daily Parquet, metrics textfile
        period: only this month (YYYY-MM); unset: everything in the CUR
        prometheus: Prometheus URL for idle GPU cost (DCGM); unset: INFEROPS_PROMETHEUS__URL, else skipped
        policy: classification and recommendation policy
        gpu_table: optional CSV (instance_type,gpus,gpu_model) adding to the built-in GPU table
    """
    window = parse_period(period)
    prometheus = prometheus or get_settings().prometheus.url
    if prometheus and not prometheus.startswith(("http://", "https://")):
        raise BadInput(f"bad --prometheus {prometheus!r} (expected http(s)://HOST:PORT)")
    log = get_logger()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferops-cur-") as tmp:
        sources = gather_task(cur, Path(tmp))
        for failure in sources.failed:
            log.warning("CUR input skipped: %s", failure)
        agg = aggregate_task(sources, out_dir, policy, window, gpu_table, with_resources=bool(prometheus))
    summary = measures.summarize(agg.cube, measures.period_hours(agg.cube, window), policy,
                                 sources.missing_columns)
    idle, idle_daily = idle_task(prometheus, agg, policy) if prometheus else ({"status": "not configured"},
                                                                             EMPTY_DAILY)
    if idle.get("status") == "ok" and idle["idle_cost"] > 0:
        summary["recommendations"].append({
            "kind": "idle", "action": "reclaim idle GPU-hours with the nightly idle-GPU flow",
            "projected_savings": idle["idle_cost"],
            "numbers": {"idle_gpu_hours": idle["idle_gpu_hours"], "threshold_pct": idle["threshold_pct"]}})
        summary["recommendations"].sort(key=lambda r: -r["projected_savings"])
    summary.update({
        "period": period, "rejected_rows": agg.rejected_rows, "out_of_period_rows": agg.out_of_period_rows,
        "idle": idle,
        "input": {"files": len(sources.files), "styles": sorted({f.style for f in sources.files}),
                  "failed": sources.failed},
    })
    if agg.rejected_rows:
        log.warning("%d malformed CUR rows quarantined in %s", agg.rejected_rows, out_dir / "quarantine.csv")
    files = write_outputs(out_dir, summary, agg, measures.daily(agg.cube), idle_daily)
    artifacts.markdown("cost-report", _markdown(summary), description="GPU cost report")
    log.info("cost report: $%.2f amortized, %.1f GPU-hours, %d rejected rows -> %s", summary["total_cost"],
             summary["gpu_hours"], agg.rejected_rows, files["summary"])
    return summary
