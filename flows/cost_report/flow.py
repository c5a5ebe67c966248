"""The ``cost_report`` flow: CUR parts -> hourly cube -> measures, idle cost, recommendations -> files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flows.common import artifacts
from flows.common.metrics import publish, pushgateway_url
from flows.common.runtime import NO_CACHE, flow, get_logger, ops_task
from flows.common.settings import get_settings, setting_name
from flows.cost_report import measures
from flows.cost_report.models import CostPolicy, check_url, parse_period
from flows.cost_report.read import Sources, gather
from flows.cost_report.report import (
    JOB,
    TEXTFILE,
    Aggregates,
    add_idle,
    aggregate,
    finish_summary,
    out_folder,
    registry,
    write_outputs,
)


@ops_task(name="gather-cur", cache_policy=NO_CACHE)  # boto3 retries (adaptive) itself
def gather_task(cur: list[str], workdir: Path, team_tag: str) -> Sources:
    s3 = get_settings().s3
    return gather(cur, workdir, region=s3.primary_region, endpoint_url=s3.endpoint_url, team_tag=team_tag)


@ops_task(name="aggregate-cur", cache_policy=NO_CACHE)
def aggregate_task(sources: Sources, out: Path, policy: CostPolicy, period: Any, gpu_table: str | None,
                   with_resources: bool) -> Aggregates:
    return aggregate(sources, out, team_tag=policy.team_tag, gpus=measures.load_gpu_table(gpu_table),
                     period=period, with_resources=with_resources, currency=policy.currency)


@ops_task(name="idle-gpu-cost", cache_policy=NO_CACHE)
def idle_task(url: str, agg: Aggregates, policy: CostPolicy) -> Any:
    from flows.common.prom import client_from_settings
    from flows.cost_report.idle import idle_cost  # Prometheus' HTTP client only when it is asked for

    with client_from_settings(url=url) as client:
        return idle_cost(client, agg.resource_hours, policy)


@ops_task(name="publish-cost-metrics", cache_policy=NO_CACHE)  # side effects: never cached
def metrics_task(summary: dict[str, Any], daily: Any, textfile: Path) -> dict[str, str | None]:
    # a failed push is reported in summary.json and logged; the report itself still stands
    return publish(registry(daily, summary), job=JOB, textfile=textfile, pushgateway=pushgateway_url())


def _markdown(summary: dict[str, Any]) -> str:
    cur = summary["currency"]

    def money(v: float, nd: int = 2) -> str:
        return f"${v:,.{nd}f}" if cur == "USD" else f"{v:,.{nd}f} {cur}"

    def rate(v: float | None) -> str:
        return "" if v is None else money(v, 3)

    rows = "\n".join(f"| {m} | {money(v['cost'])} | {v['instance_hours']:,.1f} | {v['gpu_hours']:,.1f} | "
                     f"{rate(v['effective_cost_per_gpu_hour'])} |" for m, v in summary["by_pricing_model"].items())
    recs = "\n".join(f"- {r['action']}: **{money(r['projected_savings'])}** projected savings"
                     for r in summary["recommendations"]) or "- none"
    idle = summary["idle"]
    idle_line = (f"{idle['idle_gpu_hours']:,.1f} idle GPU-hours, {money(idle['idle_cost'])}"
                 if idle.get("status") == "ok" else str(idle.get("status")))
    others = "".join(f"; {v['lines']} lines in {c} quarantined (not converted)"
                     for c, v in summary["other_currencies"].items())
    return (f"# GPU cost report {summary.get('period') or ''}\n\n"
            f"Total amortized cost **{money(summary['total_cost'])}**, {summary['gpu_hours']:,.1f} GPU-hours "
            f"(currency {cur}); fees and adjustments {money(summary['fees_and_adjustments']['total'])}; "
            f"rejected rows {summary['rejected_rows']}{others}; failed inputs {len(summary['input']['failed'])}.\n\n"
            "| pricing model | cost | instance-hours | GPU-hours | cost/GPU-hour |\n|---|---|---|---|---|\n"
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
        policy: classification, currency and recommendation policy
        gpu_table: optional CSV (instance_type,gpus,gpu_model) adding to the built-in GPU table
    """
    window = parse_period(period)
    if prometheus:
        prometheus = check_url(prometheus)
    else:  # the setting names itself: the user never typed --prometheus
        prometheus = check_url(get_settings().prometheus.url, f"setting {setting_name(('prometheus', 'url'))}",
                               echo=False)
    log = get_logger()
    out_dir = out_folder(out)
    with tempfile.TemporaryDirectory(prefix="inferops-cur-") as tmp:
        sources = gather_task(cur, Path(tmp), policy.team_tag)
        agg = aggregate_task(sources, out_dir, policy, window, gpu_table, with_resources=bool(prometheus))
    for failure in sources.failed:
        log.warning("CUR input skipped: %s", failure)
    summary = measures.summarize(agg.cube, measures.period_hours(agg.cube, window), policy,
                                 sources.missing_columns)
    finish_summary(summary, sources, agg, period)
    idle, idle_daily = idle_task(prometheus, agg, policy) if prometheus else ({"status": "not configured"},
                                                                             measures.EMPTY_IDLE_DAILY)
    add_idle(summary, idle)
    if idle.get("status") == "unavailable":  # asked for, and missing: say so, not only in summary.json
        log.warning("idle GPU cost not computed: %s", idle.get("error"))
    if agg.rejected_rows:
        log.warning("%d CUR rows quarantined in %s (%s)", agg.rejected_rows, out_dir / "quarantine.csv",
                    ", ".join(f"{k} {v}" for k, v in agg.rejected_by_cause.items() if v))
    daily = measures.daily(agg.cube)
    summary["metrics"] = metrics_task(summary, daily, out_dir / TEXTFILE)
    files = write_outputs(out_dir, summary, agg, daily, idle_daily)
    artifacts.markdown("cost-report", _markdown(summary), description="GPU cost report")
    log.info("cost report: %.2f %s amortized, %.1f GPU-hours, %d rejected rows -> %s", summary["total_cost"],
             agg.currency, summary["gpu_hours"], agg.rejected_rows, files["summary"])
    return summary
