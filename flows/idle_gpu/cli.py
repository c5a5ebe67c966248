"""``inferops idle-gpu plan | run | stop | snapshot``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from flows.common.errors import BadInput, bad_input_from
from flows.idle_gpu.models import PlanPolicy

app = typer.Typer(help="Nightly preemptible jobs on idle GPUs", no_args_is_help=True)

Queue = Annotated[str, typer.Option("--queue", "-q", help="job queue: YAML/JSON file or s3://bucket/key")]
Start = Annotated[str, typer.Option("--window-start", help="HH:MM, or an ISO datetime")]
End = Annotated[str, typer.Option("--window-end", help="HH:MM, or an ISO datetime")]
Zone = Annotated[str, typer.Option("--timezone", help="IANA timezone of the window, or 'local'")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="namespace of the batch Jobs")]
Grace = Annotated[int, typer.Option("--grace-period", help="seconds between SIGTERM and SIGKILL (keep < 30)")]
Headroom = Annotated[int, typer.Option("--headroom-gpus", help="GPUs always left free on top of the forecast")]
Slot = Annotated[int, typer.Option("--slot-seconds", help="time resolution of the plan")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _policy(**fields: Any) -> PlanPolicy:
    try:
        return PlanPolicy(**fields)
    except ValidationError as exc:
        raise bad_input_from(exc, "policy") from None


def _print(report: dict, json_out: bool, title: str, rows: list[dict], columns: list[str]) -> None:
    if json_out:
        print(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r.get(c, "")) for c in columns))
    Console(file=sys.stdout, markup=False).print(t)  # job names and reasons are never markup


@app.command("plan")
def plan(
    queue: Queue,
    capacity: Annotated[str, typer.Option("--capacity", "-c", help="capacity snapshot JSON (see `snapshot`)")],
    window_start: Start = "01:00",
    window_end: End = "07:00",
    timezone: Zone = "local",
    now: Annotated[str | None, typer.Option(help="plan as of this ISO datetime (default: the snapshot's time)")] = None,
    slot_seconds: Slot = 300,
    headroom_gpus: Headroom = 0,
    grace_period: Grace = 20,
    out: Annotated[str | None, typer.Option("--out", "-o", help="also write the plan JSON here")] = None,
    json_out: JsonOut = False,
) -> None:
    """Pack the queue into a capacity snapshot, without a cluster."""
    from flows.common.runtime import run_flow
    from flows.idle_gpu.flow import idle_gpu_plan

    at = None
    if now:
        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            raise BadInput(f"--now {now!r} is not an ISO datetime") from None
    policy = _policy(slot_seconds=slot_seconds, headroom_gpus=headroom_gpus, grace_period_s=grace_period)
    report = run_flow(idle_gpu_plan, queue=queue, capacity=capacity, window_start=window_start,
                      window_end=window_end, timezone=timezone, policy=policy, now=at, out=out)
    p = report["plan"]
    rows = p["placements"] + [{"job": u["job"], "node": "-", "start": "not planned", "end": u["reason"]}
                              for u in p["unplaced"]]
    _print(report, json_out, f"{len(p['placements'])} jobs planned, {p['planned_gpu_hours']} of "
                             f"{p['idle_gpu_hours']} idle GPU-hours", rows, ["job", "node", "gpus", "start", "end"])


@app.command("run")
def run(
    queue: Queue,
    window_start: Start = "01:00",
    window_end: End = "07:00",
    timezone: Zone = "local",
    namespace: Namespace = "offline-batch",
    priority_class: Annotated[str, typer.Option(help="low PriorityClass of the Jobs")] = "offline-batch",
    kueue_queue: Annotated[str | None, typer.Option(help="Kueue LocalQueue (label kueue.x-k8s.io/queue-name)")] = None,
    checkpointable_priority_class: Annotated[str, typer.Option(
        help="PriorityClass of checkpointable jobs, preempted first (e.g. offline-batch-checkpointable); "
             "empty: --priority-class")] = "",
    grace_period: Grace = 20,
    headroom_gpus: Headroom = 0,
    slot_seconds: Slot = 300,
    poll_seconds: Annotated[float, typer.Option(help="seconds between checks of the cluster")] = 30.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="discover and plan, submit nothing")] = False,
    report: Annotated[str | None, typer.Option(help="also write the report JSON here")] = None,
    metrics_textfile: Annotated[str | None, typer.Option(help="node_exporter textfile for the gauges")] = None,
    json_out: JsonOut = False,
) -> None:
    """Run tonight's window: submit preemptible Jobs, watch them, stop them at the end, report."""
    from flows.common.runtime import run_flow
    from flows.idle_gpu.flow import idle_gpu_nightly

    policy = _policy(slot_seconds=slot_seconds, headroom_gpus=headroom_gpus, grace_period_s=grace_period)
    result = run_flow(idle_gpu_nightly, queue=queue, window_start=window_start, window_end=window_end,
                      timezone=timezone, namespace=namespace, priority_class=priority_class,
                      kueue_queue=kueue_queue, checkpointable_priority_class=checkpointable_priority_class,
                      policy=policy, poll_seconds=poll_seconds, dry_run=dry_run,
                      report_path=report, metrics_textfile=metrics_textfile)
    rows = result["plan"]["placements"] if dry_run else result["jobs"]
    cols = ["job", "node", "gpus", "start", "end"] if dry_run else ["job", "outcome", "gpus", "gpu_hours", "reason"]
    title = "dry run: planned jobs" if dry_run else (f"{result['gpu_hours_used']} of {result['idle_gpu_hours']} "
                                                     "idle GPU-hours used")
    _print(result, json_out, title, rows, cols)


@app.command("stop")
def stop(
    namespace: Namespace = "offline-batch",
    window: Annotated[str | None, typer.Option(help="only this window's Jobs (label inferops.io/window)")] = None,
    json_out: JsonOut = False,
) -> None:
    """Stop every running idle-GPU Job now (suspend: SIGTERM and the pods' grace period)."""
    from flows.common.kube import client_from_settings
    from flows.common.runtime import log_to_stderr
    from flows.idle_gpu.cluster import Cluster
    from flows.idle_gpu.models import check_names

    check_names(namespace)
    log_to_stderr()  # the watches' warnings, in the CLI's log format
    with Cluster(client_from_settings(), namespace) as cluster:
        active = [v.k8s_name for v in cluster.views(window) if v.state == "active"]
        stopped = [name for name in active if cluster.suspend(name)]
    _print({"namespace": namespace, "stopped": stopped}, json_out, f"{len(stopped)} jobs stopped",
           [{"job": n} for n in stopped], ["job"])


@app.command("snapshot")
def snapshot(
    out: Annotated[str, typer.Option("--out", "-o", help="capacity snapshot JSON to write")],
    namespace: Namespace = "offline-batch",
    window_start: Start = "01:00",
    window_end: End = "07:00",
    timezone: Zone = "local",
) -> None:
    """Write the cluster's idle capacity and demand forecast for the next window (input of `plan`)."""
    from flows.common.documents import write_text
    from flows.common.runtime import log_to_stderr
    from flows.idle_gpu.flow import take_snapshot
    from flows.idle_gpu.models import Discovery

    log_to_stderr()  # the watches' warnings ("pods watch ...: listing again"), in the CLI's log format
    snap = take_snapshot(namespace, window_start, window_end, timezone, Discovery())
    write_text(out, snap.model_dump_json(indent=2) + "\n", "--out")
    print(f"{out}: {len(snap.nodes)} GPU nodes, {sum(n.idle for n in snap.nodes)} idle GPUs")
