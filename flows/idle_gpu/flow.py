"""Nightly offline jobs on idle GPUs: discover, pack, submit preemptible Jobs, watch, stop, report.

``idle_gpu_nightly`` is the deployment ``idle-gpu-nightly``; ``idle_gpu_plan`` is the cluster-free
planner behind ``inferops idle-gpu plan`` and the demo.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.common import artifacts
from flows.common.documents import read_text, write_text
from flows.common.errors import BackendUnavailable, BadInput
from flows.common.metrics import publish, pushgateway_url
from flows.common.runtime import NO_CACHE, flow, get_logger, ops_task
from flows.idle_gpu.capacity import combine, dcgm_idle_gpus, demand_history, demand_query, kube_nodes
from flows.idle_gpu.cluster import Cluster
from flows.idle_gpu.forecast import forecast_demand
from flows.idle_gpu.manifest import job_manifest, window_tag
from flows.idle_gpu.models import CapacitySnapshot, Discovery, PlanPolicy, check_names
from flows.idle_gpu.packer import Busy, Plan, pack
from flows.idle_gpu.queue import JobQueue, load_queue
from flows.idle_gpu.tracker import Tracker
from flows.idle_gpu.window import resolve_window


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ---- tasks -------------------------------------------------------------------------------------------

def _transient(task, task_run, state) -> bool:
    """Retry only what may heal (an unreachable backend), never bad input."""
    return isinstance(getattr(state, "data", None), BackendUnavailable)


@ops_task(name="load-queue", retries=2, retry_delay_seconds=5, retry_condition_fn=_transient,
          cache_policy=NO_CACHE)
def load_jobs(source: str) -> JobQueue:
    q = load_queue(source)
    log = get_logger()
    log.info("queue %s: %d jobs, %d rejected", source, len(q.jobs), len(q.rejected))
    for r in q.rejected:
        log.warning("queue %s: job %s (#%d) rejected: %s", source, r.name, r.index, r.reason)
    return q


@ops_task(name="discover-capacity", retries=2, retry_delay_seconds=10, retry_condition_fn=_transient,
          cache_policy=NO_CACHE)
def discover(cluster: Cluster, window_start: datetime, window_end: datetime, discovery: Discovery,
             now: datetime) -> tuple[CapacitySnapshot, dict[str, int]]:
    """Idle GPUs per node (Kubernetes and DCGM) and the demand forecast for the window.

    Also returns, per node, GPUs Kubernetes calls free but DCGM calls busy: the run loop keeps
    them out of later (Kubernetes-only) re-plans.
    """
    from flows.common.prom import PrometheusClient
    from flows.common.settings import get_settings

    nodes, notes = kube_nodes(cluster.core, discovery.product_label)
    prom = get_settings().prometheus
    forecast: list[float] = []
    if not prom.url:
        notes.append("Prometheus not configured: idle = free in Kubernetes; no demand forecast")
        combined = nodes
    else:
        token = prom.bearer_token.get_secret_value() if prom.bearer_token else None
        with PrometheusClient(prom.url, timeout_s=prom.timeout_s, bearer_token=token) as client:
            dcgm = dcgm_idle_gpus(client, lookback=discovery.lookback, util_below=discovery.util_below,
                                  fb_used_below_mib=discovery.fb_used_below_mib, node_label=discovery.node_label)
            combined, more = combine(nodes, dcgm)
            notes += more
            if discovery.forecast_nights:
                history = demand_history(client, demand_query(cluster.namespace, discovery.util_below),
                                         window_start, window_end, discovery.forecast_nights,
                                         step_s=max(15, discovery.forecast_slot_seconds // 15))
                forecast = forecast_demand(history, window_start, window_end, discovery.forecast_slot_seconds,
                                           discovery.forecast_nights, discovery.forecast_quantile)
        if not forecast:
            notes.append("no demand history for these hours: planning on current idle capacity only")
    for n in notes:
        get_logger().warning("capacity: %s", n)
    excluded = {n.name: n.idle - c.idle for n, c in zip(nodes, combined, strict=True)}
    snap = CapacitySnapshot(taken_at=now, nodes=combined, demand_forecast=forecast,
                            forecast_slot_seconds=discovery.forecast_slot_seconds, notes=notes)
    return snap, excluded


@ops_task(name="run-window", cache_policy=NO_CACHE)
def run_window(cluster: Cluster, tracker: Tracker, snap: CapacitySnapshot, excluded: dict[str, int],
               window_start: datetime, window_end: datetime, policy: PlanPolicy, discovery: Discovery,
               priority_class: str, kueue_queue: str | None, poll_seconds: float,
               metrics_textfile: str | None) -> tuple[float, Plan | None]:
    """Re-plan every tick from the live cluster, submit what starts now, react to preemptions.

    Returns the idle GPU-hours of the window (GPUs idle or running our jobs, summed tick by tick;
    extrapolated at the last level if all jobs ended early) and the first plan.
    """
    log = get_logger()
    tag = window_tag(window_start)
    stop_at = window_end - timedelta(seconds=policy.grace_period_s)
    progress = artifacts.Progress("idle-gpu window", (stop_at - _utcnow()).total_seconds())
    idle_gpu_s, first_plan, last = 0.0, None, None
    while True:
        now = _utcnow()
        if now >= stop_at:
            break
        try:
            views = cluster.views(tag)
            for name in tracker.observe(views, now):
                log.warning("job %s was preempted: deleting it", name)
                cluster.delete(name, policy.grace_period_s)
            nodes, _ = kube_nodes(cluster.core, discovery.product_label)
        except BackendUnavailable as exc:  # a blip must not end the night; the Jobs' deadlines still hold
            tracker.api_errors += 1
            log.warning("tick skipped: %s", exc)
            time.sleep(max(0.0, min(poll_seconds, (stop_at - _utcnow()).total_seconds())))
            continue
        current = {r.k8s_name for r in tracker.active()}  # not the preempted attempts being deleted
        running = {v.k8s_name: v for v in views
                   if v.k8s_name in current and any(p.phase == "Running" for p in v.pods)}
        _write_metrics(metrics_textfile, cluster.namespace, len(running), window_end)
        if not tracker.pending() and not tracker.active():
            break
        nodes = [n.model_copy(update={"idle": max(0, n.idle - excluded.get(n.name, 0))}) for n in nodes]
        ours = sum(tracker.records[v.job].job.gpus for v in running.values() if v.job in tracker.records)
        if last is not None:
            idle_gpu_s += (sum(n.idle for n in nodes) + ours) * (now - last).total_seconds()
            progress.advance((now - last).total_seconds())
        last = now
        plan = pack(tracker.pending(), snap.model_copy(update={"nodes": nodes, "taken_at": now}), window_start,
                    window_end, policy, now, busy=_busy(tracker, running.values(), policy, now),
                    remaining_hours=tracker.remaining_hours())
        first_plan = first_plan or plan
        for u in plan.unplaced:
            tracker.skip(u.job, u.reason)
        for p in plan.starting_now(now):
            record = tracker.records[p.job]
            manifest = job_manifest(record.job, node=p.node, namespace=cluster.namespace, window_start=window_start,
                                    window_end=window_end,
                                    active_deadline_s=int((stop_at - now).total_seconds()),
                                    priority_class=priority_class, grace_period_s=policy.grace_period_s,
                                    kueue_queue=kueue_queue, attempt=record.attempt)
            created = cluster.submit(manifest)
            tracker.submitted(p.job, manifest["metadata"]["name"], p.node, now, p.partial)
            log.info("job %s %s on %s (%d GPUs) until %s%s", p.job, "submitted" if created else "adopted",
                     p.node, p.gpus, p.end.isoformat(), " (tail segment)" if p.partial else "")
        time.sleep(max(0.0, min(poll_seconds, (stop_at - _utcnow()).total_seconds())))
    if last is not None:
        # to the window's end: when every job ended early, the rest of the window still counts as
        # idle capacity (at the last observed level), so the fill ratio is not flattered
        idle_gpu_s += (sum(n.idle for n in nodes) + ours) * max(0.0, (stop_at - last).total_seconds())
    progress.finish()
    return idle_gpu_s / 3600, first_plan


def _busy(tracker: Tracker, running, policy: PlanPolicy, now: datetime) -> list[Busy]:
    """Our running jobs hold their GPUs until their estimated end (never before the next slot)."""
    out = []
    for v in running:
        r = tracker.records.get(v.job)
        if r is None:
            continue
        started = min((p.started for p in v.pods if p.phase == "Running" and p.started), default=now)
        hours = r.job.estimated_hours if r.remaining_hours is None else r.remaining_hours
        until = started + timedelta(hours=hours * policy.runtime_margin)
        out.append(Busy(v.node, r.job.gpus, max(until, now + timedelta(seconds=policy.slot_seconds))))
    return out


@ops_task(name="stop-window", cache_policy=NO_CACHE)
def stop_window(cluster: Cluster, tracker: Tracker, window_start: datetime, grace_period_s: int) -> int:
    """Suspend what still runs (SIGTERM, then the grace period), wait for it, and book the outcomes."""
    tag = window_tag(window_start)
    views = cluster.views(tag)
    active = [v for v in views if v.state == "active"]
    for v in active:
        cluster.suspend(v.k8s_name)
    tracker.stopped({v.k8s_name for v in active if any(p.phase == "Running" for p in v.pods)})
    deadline = _utcnow() + timedelta(seconds=grace_period_s + 5)
    while True:
        views = cluster.views(tag)
        tracker.observe(views, _utcnow())
        if _utcnow() >= deadline or not any(p.phase == "Running" for v in views for p in v.pods):
            break
        time.sleep(1.0)
    if active:
        get_logger().info("window end: %d jobs suspended", len(active))
    return len(active)


def _write_metrics(path: str | None, namespace: str, running: int, window_end: datetime) -> None:
    """Gauges for InferopsIdleGpuJobsPastWindow (deploy/prometheus): a node_exporter textfile and/or
    the configured Pushgateway (this flow runs in k8s-pool pods, whose files go with the pod)."""
    pushgateway = pushgateway_url()
    if not path and not pushgateway:
        return
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    Gauge("inferops_idle_gpu_jobs_running", "Offline jobs running on idle GPUs", ["namespace"],
          registry=reg).labels(namespace=namespace).set(running)
    Gauge("inferops_idle_gpu_window_end_timestamp_seconds", "End of the current idle-GPU window (Unix seconds)",
          ["namespace"], registry=reg).labels(namespace=namespace).set(window_end.timestamp())
    publish(reg, job="inferops_idle_gpu", textfile=path, pushgateway=pushgateway, grouping={"namespace": namespace})


def _publish(report: dict, report_path: str | None) -> None:
    o = report["outcomes"]
    artifacts.markdown("idle-gpu-report", "\n".join([
        f"# Idle GPUs: {report['window_start']} to {report['window_end']}",
        "",
        f"- GPU-hours used: **{report['gpu_hours_used']}** of **{report['idle_gpu_hours']}** idle "
        f"({report['fill_ratio']:.0%})",
        "- jobs: " + ", ".join(f"{k} {v}" for k, v in o.items()),
        f"- queue rejections: {len(report.get('rejected', []))}",
        *[f"- note: {n}" for n in report.get("notes", [])],
    ]), description="GPU-hours used vs idle, and each job's outcome")
    artifacts.table("idle-gpu-jobs", report["jobs"], description="Offline jobs of the window")
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=2) + "\n")


# ---- flows -------------------------------------------------------------------------------------------

@flow(name="idle-gpu-nightly")
def idle_gpu_nightly(
    queue: str = "idle-gpu-queue.yaml",
    window_start: str = "01:00",
    window_end: str = "07:00",
    timezone: str = "local",
    namespace: str = "offline-batch",
    priority_class: str = "offline-batch",
    kueue_queue: str | None = None,
    policy: PlanPolicy = PlanPolicy(),  # noqa: B008 (pydantic model: the UI form)
    discovery: Discovery = Discovery(),  # noqa: B008
    poll_seconds: float = 30.0,
    dry_run: bool = False,
    report_path: str | None = None,
    metrics_textfile: str | None = None,
    max_wait_minutes: int = 60,
) -> dict:
    """Fill tonight's idle GPUs with the queue's offline jobs, preemptible by inference at any time.

    `queue` is a YAML/JSON file or s3:// object. The window is `window_start`-`window_end` in
    `timezone` (times of day, or ISO datetimes for a one-off window); a run started up to
    `max_wait_minutes` early waits for it. `dry_run` plans and stops.
    """
    from flows.common.kube import from_settings

    check_names(namespace, priority_class, kueue_queue)
    pushgateway_url()  # a malformed URL is bad input now, not a warning every tick
    now = _utcnow()
    ws, we = resolve_window(window_start, window_end, timezone, now)
    if we - timedelta(seconds=policy.grace_period_s) <= now:
        raise BadInput(f"window {ws.isoformat()} - {we.isoformat()} is already over")
    if ws - now > timedelta(minutes=max_wait_minutes) and not dry_run:
        raise BadInput(f"the window opens at {ws.isoformat()}, more than {max_wait_minutes} minutes from now")
    q = load_jobs(queue)
    if ws > now and not dry_run:
        get_logger().info("waiting for the window to open at %s", ws.isoformat())
        time.sleep((ws - now).total_seconds())
    cluster = Cluster(from_settings(), namespace)
    snap, excluded = discover(cluster, ws, we, discovery, _utcnow())
    if dry_run:
        return _plan_report(pack(q.jobs, snap, ws, we, policy, _utcnow()), snap, q)
    tracker = Tracker(q.jobs)
    idle_gpu_hours, first_plan = run_window(cluster, tracker, snap, excluded, ws, we, policy, discovery,
                                            priority_class, kueue_queue, poll_seconds, metrics_textfile)
    stop_window(cluster, tracker, ws, policy.grace_period_s)
    _write_metrics(metrics_textfile, namespace, 0, we)
    report = tracker.report(ws, we, idle_gpu_hours)
    report["rejected"] = [asdict(r) for r in q.rejected]
    report["notes"] = snap.notes
    report["planned_gpu_hours_at_start"] = round(first_plan.planned_gpu_hours, 4) if first_plan else 0.0
    _publish(report, report_path)
    return report


def _plan_report(plan: Plan, snap: CapacitySnapshot, q: JobQueue) -> dict:
    """The plan as JSON, and as a table artifact."""
    artifacts.table("idle-gpu-plan", plan.to_dict()["placements"] or [{"job": "-", "node": "-"}],
                    description=f"{len(plan.placements)} jobs planned, {len(plan.unplaced)} not")
    return {
        "window_start": plan.start.isoformat(), "window_end": plan.end.isoformat(),
        "capacity": {"nodes": len(snap.nodes), "allocatable_gpus": snap.allocatable,
                     "idle_gpus_now": sum(n.idle for n in snap.nodes),
                     "forecast_peak_gpus": max(snap.demand_forecast, default=None)},
        "plan": plan.to_dict(),
        "rejected": [asdict(r) for r in q.rejected],
        "notes": snap.notes,
    }


@flow(name="idle-gpu-plan")
def idle_gpu_plan(queue: str, capacity: str, window_start: str = "01:00", window_end: str = "07:00",
                  timezone: str = "local", policy: PlanPolicy = PlanPolicy(),  # noqa: B008
                  now: datetime | None = None, out: str | None = None) -> dict:
    """Plan the queue into a capacity snapshot file, without a cluster (what `inferops idle-gpu plan` runs)."""
    snap = read_snapshot(capacity)
    at = now or snap.taken_at
    if at.tzinfo is None:
        raise BadInput("--now needs a timezone (e.g. 2026-11-28T00:30:00+00:00)")
    ws, we = resolve_window(window_start, window_end, timezone, at)
    q = load_jobs(queue)
    plan = pack(q.jobs, snap, ws, we, policy, at)
    report = _plan_report(plan, snap, q)
    if out:
        write_text(out, json.dumps(report, indent=2) + "\n", "--out")
    return report


def read_snapshot(path: str) -> CapacitySnapshot:
    from pydantic import ValidationError

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"capacity snapshot {path} not found")
    try:
        return CapacitySnapshot.model_validate_json(read_text(p, "capacity snapshot"))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "document"
        raise BadInput(f"capacity snapshot {path}: {where}: {err['msg']}") from None


def take_snapshot(namespace: str, window_start: str, window_end: str, timezone: str,
                  discovery: Discovery) -> CapacitySnapshot:
    """What `inferops idle-gpu snapshot` writes: capacity and forecast for the next window, now."""
    from flows.common.kube import from_settings

    now = _utcnow()
    ws, we = resolve_window(window_start, window_end, timezone, now)
    snap, _ = discover.fn(Cluster(from_settings(), namespace), ws, we, discovery, now)
    return snap

