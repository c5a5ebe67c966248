"""Nightly offline jobs on idle GPUs: discover, pack, submit preemptible Jobs, watch, stop, report.

``idle_gpu_nightly`` is the deployment ``idle-gpu-nightly``: a short sequence of tasks around the
night-window controller (:class:`~flows.idle_gpu.controller.NightWindow`), which the benchmark also
drives, with a simulated clock and fleet. ``idle_gpu_plan`` is the cluster-free planner behind
``inferops idle-gpu plan`` and the demo.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

from flows.common import artifacts
from flows.common.clock import Clock, WallClock, utcnow
from flows.common.documents import read_text, write_text
from flows.common.errors import BackendUnavailable, BadInput, bad_input_from
from flows.common.metrics import publish, pushgateway_url
from flows.common.prom import client_from_settings as prometheus
from flows.common.runtime import NO_CACHE, flow, get_logger, ops_task
from flows.idle_gpu.capacity import combine, dcgm_idle_gpus, demand_history, demand_query
from flows.idle_gpu.cluster import Cluster
from flows.idle_gpu.controller import JobSettings, NightWindow
from flows.idle_gpu.forecast import forecast_demand
from flows.idle_gpu.models import CapacitySnapshot, Discovery, PlanPolicy, check_names
from flows.idle_gpu.packer import Plan, pack
from flows.idle_gpu.queue import JobQueue, load_queue
from flows.idle_gpu.tracker import Tracker
from flows.idle_gpu.window import resolve_window

CLOCK: Clock = WallClock()


def _utcnow() -> datetime:
    return utcnow(CLOCK)


def _cluster(namespace: str, discovery: Discovery) -> Cluster:
    from flows.common.kube import client_from_settings

    return Cluster(client_from_settings(), namespace, discovery.product_label)


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
    nodes, notes = cluster.nodes()
    client = prometheus(required=False)
    forecast: list[float] = []
    if client is None:
        notes.append("Prometheus not configured: idle = free in Kubernetes; no demand forecast")
        combined = nodes
    else:
        with client:
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
def run_window(window: NightWindow, metrics_textfile: str | None) -> tuple[float, Plan | None]:
    """The night: re-plan every tick from the live cluster, submit what starts now, react to
    preemptions (the controller's run loop). Returns the window's idle GPU-hours and the first plan."""
    w = window
    progress = artifacts.Progress("idle-gpu window", (w.stop_at - _utcnow()).total_seconds())

    def tick(running: int, elapsed_s: float) -> None:
        _write_metrics(metrics_textfile, w.cluster.namespace, running, w.window_end)
        progress.advance(elapsed_s)

    w.on_tick = tick
    try:
        return w.run()
    finally:
        progress.finish()


@ops_task(name="stop-window", cache_policy=NO_CACHE)
def stop_window(window: NightWindow) -> int:
    """Suspend what still runs (SIGTERM, then the grace period), wait for it, and book the outcomes."""
    return window.stop()


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


def report_markdown(report: dict) -> str:
    """The night's summary as the UI shows it: fill, outcomes, rejections, the ticks that started
    nothing (the API did not answer; pods of other workloads waited for GPUs), those that kept GPUs free
    for an autoscaler's next waves, the Jobs planned again elsewhere, and notes."""
    o = report["outcomes"]
    skipped, deferred = report.get("ticks_skipped_api_errors", 0), report.get("ticks_deferred_to_waiting_pods", 0)
    reserving = report.get("ticks_reserving_for_scale_up", 0)
    replanned = report.get("attempts_replanned_unschedulable", 0)
    return "\n".join([
        f"# Idle GPUs: {report['window_start']} to {report['window_end']}",
        "",
        f"- GPU-hours used: **{report['gpu_hours_used']}** of **{report['idle_gpu_hours']}** idle "
        f"({report['fill_ratio']:.0%})",
        "- jobs: " + ", ".join(f"{k} {v}" for k, v in o.items()),
        f"- queue rejections: {len(report.get('rejected', []))}",
        *([f"- ticks that started nothing: {skipped} (Kubernetes API unreachable), {deferred} (pods of other "
           f"workloads waiting for GPUs: inference scaling up)"] if skipped or deferred else []),
        *([f"- ticks that kept GPUs free for an autoscaler's next scale-up waves: {reserving}"] if reserving else []),
        *([f"- Jobs withdrawn unstarted and planned again (their node's GPUs were taken first): {replanned}"]
          if replanned else []),
        *[f"- note: {n}" for n in report.get("notes", [])],
    ])


def _publish(report: dict, report_path: str | None) -> None:
    artifacts.markdown("idle-gpu-report", report_markdown(report),
                       description="GPU-hours used vs idle, and each job's outcome")
    artifacts.table("idle-gpu-jobs", report["jobs"], description="Offline jobs of the window")
    if report_path:
        write_text(report_path, json.dumps(report, indent=2) + "\n", "--report")


# ---- flows -------------------------------------------------------------------------------------------

MAX_POLL_SECONDS = 3600.0
MAX_WAIT_MINUTES = 7 * 24 * 60


def check_timing(poll_seconds: float, max_wait_minutes: int) -> None:
    """Refuse, before anything is submitted, what would make the window loop spin (0, negative, NaN)
    or overflow a timedelta (a huge wait)."""
    if not 0 < poll_seconds <= MAX_POLL_SECONDS:  # NaN included
        raise BadInput(f"poll_seconds must be > 0 and at most {MAX_POLL_SECONDS:g}")
    if not 0 <= max_wait_minutes <= MAX_WAIT_MINUTES:
        raise BadInput(f"max_wait_minutes must be within 0..{MAX_WAIT_MINUTES}")


@flow(name="idle-gpu-nightly")
def idle_gpu_nightly(
    queue: str = "idle-gpu-queue.yaml",
    window_start: str = "01:00",
    window_end: str = "07:00",
    timezone: str = "local",
    namespace: str = "offline-batch",
    priority_class: str = "offline-batch",
    kueue_queue: str | None = None,
    checkpointable_priority_class: str = "",
    policy: PlanPolicy = PlanPolicy(),  # noqa: B008 (pydantic model: the UI form)
    discovery: Discovery = Discovery(),  # noqa: B008
    poll_seconds: float = 30.0,
    dry_run: bool = False,
    report_path: str | None = None,
    metrics_textfile: str | None = None,
    max_wait_minutes: int = 60,
) -> dict:
    """Fill tonight's idle GPUs with the queue's offline jobs, preemptible by inference at any time.

    Args:
        queue: The job queue, a YAML or JSON file or an s3://bucket/key object: a list of jobs
            (name, image, command, gpus, estimated_hours, priority, checkpointable, deadline...).
        window_start: Start of the night window: a time of day (HH:MM) in the timezone, or an ISO
            datetime for a one-off window.
        window_end: End of the night window, in the same form as window_start.
        timezone: IANA timezone of the window times (e.g. Europe/Paris), or local.
        namespace: Namespace of the batch Jobs.
        priority_class: Low PriorityClass of the Jobs, so that inference preempts them.
        kueue_queue: Kueue LocalQueue for the Jobs (label kueue.x-k8s.io/queue-name); empty: none.
        checkpointable_priority_class: PriorityClass of checkpointable jobs, below priority_class so
            that a surge preempts them first (they resume; the others lose their run); empty (the
            default): the same as priority_class. Opt-in: with it, the rehearsal once saw an inference
            pod wait 36 s, as requeued jobs were resubmitted into GPUs a surge took again.
        policy: How to pack: slot length, headroom, grace period, runtime margin, tail segments.
        discovery: Where idle capacity and the demand forecast come from (DCGM metrics in Prometheus).
        poll_seconds: Seconds between two looks at the cluster during the window.
        dry_run: Discover and plan, submit nothing.
        report_path: Also write the report JSON to this path.
        metrics_textfile: node_exporter textfile for the jobs-running and window-end gauges.
        max_wait_minutes: A run started up to this many minutes before the window waits for it;
            earlier is an error.
    """
    check_names(namespace, priority_class, kueue_queue, checkpointable_priority_class)
    check_timing(poll_seconds, max_wait_minutes)
    pushgateway_url()  # a malformed URL is bad input now, not a warning every tick
    now = _utcnow()
    ws, we = resolve_window(window_start, window_end, timezone, now)
    if we - timedelta(seconds=policy.grace_period_s) <= now:
        raise BadInput(f"window {ws.isoformat()} - {we.isoformat()} is already over")
    if ws - now > timedelta(minutes=max_wait_minutes) and not dry_run:
        raise BadInput(f"the window opens at {ws.isoformat()}, more than {max_wait_minutes} minutes from now")
    q = load_jobs(queue)
    # connected before the window opens (a run scheduled a few minutes early): its first minutes are the jobs'
    cluster = _cluster(namespace, discovery)
    jobs = JobSettings(priority_class, kueue_queue, checkpointable_priority_class)
    try:
        class_notes = cluster.check_priority_classes([jobs.priority_for(False), jobs.priority_for(True)])
        for note in class_notes:
            get_logger().warning(note)
        if ws > _utcnow() and not dry_run:
            get_logger().info("waiting for the window to open at %s", ws.isoformat())
            CLOCK.sleep(max(0.0, (ws - _utcnow()).total_seconds()))
        snap, excluded = discover(cluster, ws, we, discovery, _utcnow())
        if dry_run:
            return _plan_report(pack(q.jobs, snap, ws, we, policy, _utcnow()), snap, q)
        tracker = Tracker(q.jobs)
        window = NightWindow(cluster, tracker, snap, window_start=ws, window_end=we, policy=policy, clock=CLOCK,
                             poll_seconds=poll_seconds, excluded=excluded,
                             jobs=jobs, logger=get_logger())
        idle_gpu_hours, first_plan = run_window(window, metrics_textfile)
        stop_window(window)
    finally:
        cluster.close()
    _write_metrics(metrics_textfile, namespace, 0, we)
    report = tracker.report(ws, we, idle_gpu_hours)
    report["rejected"] = [asdict(r) for r in q.rejected]
    report["notes"] = snap.notes + class_notes
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
        raise bad_input_from(exc, f"capacity snapshot {path}") from None


def take_snapshot(namespace: str, window_start: str, window_end: str, timezone: str,
                  discovery: Discovery) -> CapacitySnapshot:
    """What `inferops idle-gpu snapshot` writes: capacity and forecast for the next window, now."""
    now = _utcnow()
    ws, we = resolve_window(window_start, window_end, timezone, now)
    with _cluster(namespace, discovery) as cluster:
        snap, _ = discover.fn(cluster, ws, we, discovery, now)
    return snap

