"""The rehearsal's scenarios, shared by tests/integration/test_rehearsal_stack.py and the benchmarks:
a canary of llm-server with a traffic surge in the middle, and a night of offline jobs. The cluster
itself is :class:`flows.standins.rehearsal.Rehearsal`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flows.canary import planner
from flows.canary.models import CanaryPolicy
from flows.standins.rehearsal import APP, NS, Rehearsal

STABLE_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"
# the canary analysis as it would run against the shipped PodMonitor (5 s scrapes, 5 s intervals), with
# the shipped progress deadline (1200 s: Triton loads its engines for minutes)
POLICY = CanaryPolicy(steps=[25, 50, 100], interval_s=5, scrape_interval_s=5, samples_per_interval=5,
                      intervals_per_step=2, failure_limit=2, inconclusive_limit=3, readiness_timeout_s=1200)
FAULTS = {"5xx": {"error_rate": 0.08}, "slow": {"latency_s": 0.3}, "silent": {"silent": True}}


@dataclass
class CanaryRun:
    outcome: str
    reason: str
    seconds: float  # the whole flow
    detection_s: float | None  # from the canary serving traffic to the end of the rollback
    replicas_before: int
    hpa_desired_before: int
    hpa_desired_peak: int
    replicas_after: int
    hpa_desired_after: int
    surged: bool
    canary_series: int  # canary pods Prometheus scraped through the PodMonitor
    violations: int
    overrides: int
    notes: list[str] = field(default_factory=list)


def canary_image(tag: str, fault: str | None, rehearsal: Rehearsal) -> str:
    image = f"nvcr.io/nvidia/tritonserver:{tag}"
    assert rehearsal.dataplane is not None
    if fault:
        rehearsal.dataplane.behave(image, **FAULTS[fault])
    return image


def wait_quiet(rehearsal: Rehearsal, seconds: int = 12, timeout: float = 60.0) -> None:
    """Until the last rollout's canary and baseline series are ``seconds`` old.

    The analysis selects series by ``track``, and its rate window (4 scrapes, 20 s) would still hold
    the last samples of the previous rollout's canary pods: a new canary is only judged once they
    have aged out of the window by its first interval (ready and 5 s of traffic later)."""
    assert rehearsal.prom is not None
    q = (f'count(count_over_time(nv_inference_request_success{{namespace="{NS}",deployment="{APP}",'
         f'track=~"canary|baseline"}}[{int(seconds)}s]))')
    rehearsal.prom.wait_for(q, timeout=timeout, predicate=lambda samples: not samples)


def run_canary(rehearsal: Rehearsal, image: str, *, surge_pods: int = 3, policy: CanaryPolicy = POLICY,
               run: Any = None, keep_surge: bool = True) -> CanaryRun:
    """Canary ``image`` on llm-server in the rehearsal's traffic mode; once the canary serves, raise the
    load so that the HPA wants ``surge_pods`` more stable pods (``keep_surge=False``: back to the
    earlier load afterwards, and the HPA scales down in its own time). ``run(policy)`` runs the flow
    and returns ``(outcome, reason)`` (the test's and the benchmark's way of calling it)."""
    assert rehearsal.dataplane is not None and rehearsal.guard is not None
    guard, dp = rehearsal.guard, rehearsal.dataplane
    wait_quiet(rehearsal)
    policy = policy.model_copy(update={"traffic_mode": rehearsal.traffic_mode})
    before = int(rehearsal.stable()["spec"]["replicas"])
    desired_before = int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or before)
    violations, overrides = len(guard.violations), len(guard.overrides)
    dp.stable_rps = rehearsal.load_for(before * 0.8)
    serving: dict[str, float] = {}
    peak = [desired_before]
    done = threading.Event()

    target = before + surge_pods

    def surge() -> None:
        canary = planner.track_name(APP, planner.Track.canary)
        while not done.is_set():
            if "at" not in serving and any(v > 0 for k, v in dp.pod_rps.items() if k.startswith(f"{canary}-")):
                serving["at"] = time.monotonic()
                # the demand on the stable pods rises so that the HPA wants `target` of them, whatever
                # share of the traffic canary and baseline take meanwhile
                dp.stable_rps = rehearsal.load_for(target)
            peak[0] = max(peak[0], int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or 0))
            time.sleep(0.1)

    t = threading.Thread(target=surge, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        outcome, reason = run(policy)
    finally:
        done.set()
        t.join()
    end = time.monotonic()
    series = _canary_series(rehearsal)
    dp.stable_rps = rehearsal.load_for(target if "at" in serving and keep_surge else before)
    after = int(rehearsal.stable()["spec"]["replicas"])
    return CanaryRun(outcome, reason, round(end - t0, 1),
                     round(end - serving["at"], 1) if "at" in serving else None, before, desired_before, peak[0],
                     after, int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or after),
                     "at" in serving, series, len(guard.violations) - violations, len(guard.overrides) - overrides,
                     notes=[f"PDB floor at {v.at}: {v.ready} ready, {v.floor} allowed (replicas {v.desired})"
                            for v in guard.violations[violations:]]
                     + [f"HPA override at {o.at}: {o.manager} {o.before} -> {o.after}" for o in guard.overrides[overrides:]])


def _canary_series(rehearsal: Rehearsal) -> int:
    assert rehearsal.prom is not None
    with rehearsal.prom.client() as c:
        got = c.query(f'count(count_over_time(nv_inference_request_success{{namespace="{NS}",deployment="{APP}",'
                      f'track="canary"}}[2m]))')
    return int(got[0].value) if got else 0


def flow_runner(env: dict[str, str]):
    """``run(policy)`` for :func:`run_canary`: the real canary_rollout flow, inline (offline)."""
    import os

    from flows.canary.flow import canary_rollout
    from flows.common.errors import GateFailed, InferopsError
    from flows.common.runtime import run_flow
    from flows.common.settings import get_settings

    def run_with(image: str):
        def run(policy: CanaryPolicy) -> tuple[str, str]:
            os.environ.update(env, INFEROPS_OFFLINE="1")
            get_settings.cache_clear()
            try:
                out = run_flow(canary_rollout, namespace=NS, deployment=APP, image=image, policy=policy)
                return out["outcome"], out["reason"]
            except GateFailed as exc:
                return "rolled back", str(exc)
            except InferopsError as exc:  # e.g. canary or baseline never ready (the flow rolled back)
                return "failed", f"{type(exc).__name__}: {exc}"
        return run
    return run_with


# ---- the night ---------------------------------------------------------------------------------------

RUN_SECONDS = "emulator.inferops.dev/run-seconds"
SHUTDOWN_SECONDS = "emulator.inferops.dev/shutdown-seconds"
BATCH_NS = "offline-batch"


def night_queue(free_gpus: int, window_s: float, seed: int = 7, fill: float = 1.6,
                checkpoint_s: float = 5.0) -> list[dict[str, Any]]:
    """Offline jobs worth ``fill`` times the GPU-seconds the window offers: evaluation runs, embedding
    backfills, calibration runs (1-8 GPUs, a tenth to a half of the window, two in three checkpointable).
    Each runs about its estimate (+-15 %, ``run-seconds``) and takes ``checkpoint_s`` to stop on SIGTERM."""
    import random

    rng = random.Random(seed)
    jobs, budget, i = [], free_gpus * window_s * fill, 0
    while budget > 0:
        gpus = rng.choice((1, 2, 2, 4, 4, 8))
        est = window_s * rng.uniform(0.1, 0.5)
        jobs.append({"name": f"job-{i}", "image": "registry.local/batch:1", "command": ["run", f"job-{i}"],
                     "gpus": gpus, "estimated_hours": round(est / 3600, 5), "priority": rng.randint(0, 2),
                     "checkpointable": i % 3 != 0, "team": "search", "cost_center": "cc-42",
                     "annotations": {RUN_SECONDS: f"{est * rng.uniform(0.85, 1.0):.0f}",
                                     SHUTDOWN_SECONDS: f"{checkpoint_s:g}"}})
        budget -= gpus * est
        i += 1
    return jobs


@dataclass
class NightRun:
    report: dict[str, Any]
    window_s: float
    inference_pods: int  # created during the window
    inference_waits_s: list[float]  # creation to ready, each (cluster seconds)
    inference_start_waits_s: list[float]  # creation to its container running (waiting for a GPU), each
    inference_unscheduled: int  # created and never ready
    left_running: int  # batch pods still running at the window's end
    left_jobs: int  # Jobs still active or suspended at the window's end
    preempted_batch_pods: int
    violations: int
    overrides: int
    notes: list[str] = field(default_factory=list)
    # inference pods ready more than 20 s after creation: each one's timeline (cluster seconds from creation)
    slow_inference: list[str] = field(default_factory=list)
    # this process's stalls the cluster's clock stood still through during the night (count, wall s)
    clock_stalls: tuple[int, float] = (0, 0.0)


def run_night(rehearsal: Rehearsal, queue: list[dict[str, Any]], *, window_s: float, demand: list[tuple[float, Any]],
              queue_file: Any, poll_s: float = 30.0, grace_s: int = 20, slot_s: int = 60,
              model_load_s: float = 5.0, speed: float | None = None, opens_at: float | None = None,
              flow_params: dict[str, Any] | None = None, policy: dict[str, Any] | None = None) -> NightRun:
    """Run ``idle_gpu_nightly`` on the rehearsal cluster, on its clock, for a window of ``window_s``
    cluster seconds starting now, while inference demand follows ``demand`` ((offset s, stable pods
    the HPA should want), ...). Inference pods load their model in ``model_load_s`` (engines cached on
    the node). ``speed``: the cluster's clock speed during the night (then back). ``opens_at``: the
    cluster time the window opens (default now; later: the flow starts before it, as its schedule
    starts it five minutes early). ``flow_params``: more parameters of the flow, ``policy``: of its PlanPolicy (default: its own). Returns the flow's report and what the cluster saw."""
    import json
    import os
    from datetime import UTC, datetime, timedelta

    import flows.idle_gpu.flow as night_flow
    from flows.common.runtime import offline
    from flows.common.settings import get_settings
    from flows.idle_gpu.models import Discovery, PlanPolicy
    from flows.standins.rehearsal import EmulatedClock

    assert rehearsal.kube is not None and rehearsal.dataplane is not None and rehearsal.guard is not None
    kube, guard = rehearsal.kube, rehearsal.guard
    queue_file.write_text(json.dumps({"jobs": queue}))
    clock = EmulatedClock(kube)
    saved_clock, saved_env = night_flow.CLOCK, dict(os.environ)
    os.environ.update(INFEROPS_KUBE__KUBECONFIG=kube.kubeconfig, INFEROPS_OFFLINE="1")
    os.environ.pop("INFEROPS_PROMETHEUS__URL", None)  # no DCGM exporter here: idle = free in Kubernetes
    get_settings.cache_clear()
    night_flow.CLOCK = clock
    kube.pods.ready_after(NS, APP, model_load_s)
    day_speed = kube.clock.speed
    kube.clock.speed = speed or day_speed
    violations, overrides = len(guard.violations), len(guard.overrides)
    stalls = (kube.clock.stalls, kube.clock.stalled_s)
    pods = rehearsal.pod_clock()
    start = clock.now()
    opens = start if opens_at is None else max(start, opens_at)
    ws = datetime.fromtimestamp(opens, UTC)
    result: dict[str, Any] = {}

    def night() -> None:
        try:
            with offline():
                result["report"] = night_flow.idle_gpu_nightly.fn(
                    queue=str(queue_file), window_start=ws.isoformat(),
                    window_end=(ws + timedelta(seconds=window_s)).isoformat(), timezone="UTC",
                    # the window is compressed: the shortest tail segment keeps the default's share of
                    # a 6-hour window (20 minutes), not 20 minutes
                    policy=PlanPolicy(slot_seconds=slot_s, grace_period_s=grace_s, runtime_margin=1.1,
                                      min_segment_minutes=window_s / 18 / 60, **(policy or {})),
                    discovery=Discovery(forecast_nights=0), poll_seconds=poll_s, **(flow_params or {}))
        except BaseException as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=night, name="rehearsal-night", daemon=True)
    try:
        t.start()
        drive_demand(rehearsal, opens, demand, t.is_alive)
        t.join(timeout=(opens - start + window_s) / kube.clock.speed + 120)
        if t.is_alive() or "error" in result:
            raise RuntimeError(f"the night did not end cleanly: {result.get('error', 'still running')}")
        batch = rehearsal.client()
        from flows.common.kube import JOBS
        from flows.common.kube import PODS as POD_KIND

        left_pods = [p for p in batch.list(POD_KIND, BATCH_NS)
                     if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
        left_jobs = [j for j in batch.list(JOBS, BATCH_NS) if not any(  # unfinished: active or suspended
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (j.get("status") or {}).get("conditions") or [])]
        created = pods.since(start)
        waits = [t.ready - t.created for t in created if t.ready is not None]
        preempted = sum(1 for e in kube.store.list(_events()) if e.get("reason") == "Preempted"
                        and (e.get("involvedObject") or {}).get("namespace") == BATCH_NS
                        and _when(e) >= start - 1)
        notes = [f"left: job {j['metadata']['name']} suspend={j['spec'].get('suspend')} "
                 f"status={(j.get('status') or {}).get('conditions')}" for j in left_jobs]
        notes += [f"left: pod {p['metadata']['name']} {(p.get('status') or {}).get('phase')}" for p in left_pods]
        starts = [t.started - t.created for t in created if t.started is not None]

        def after(v: float | None, t0: float) -> str:
            return "-" if v is None else f"+{v - t0:.1f}"

        slow = [f"{t.name} on {t.node or '?'}: created {t.created - start:.1f} s into the night, scheduled "
                f"{after(t.scheduled, t.created)}, started {after(t.started, t.created)}, ready {after(t.ready, t.created)}"
                + (f" ({'; '.join(t.notes)})" if t.notes else "")
                for t in created if t.ready is not None and t.ready - t.created > 20]
        return NightRun(result["report"], window_s, len(created), waits, starts,
                        sum(1 for t in created if t.ready is None and not t.gone), len(left_pods), len(left_jobs),
                        preempted, len(guard.violations) - violations, len(guard.overrides) - overrides, notes, slow,
                        (kube.clock.stalls - stalls[0], round(kube.clock.stalled_s - stalls[1], 2)))
    finally:
        pods.stop()
        kube.pods.ready_after(NS, APP, rehearsal.model_load_s)
        kube.clock.speed = day_speed
        night_flow.CLOCK = saved_clock
        os.environ.clear()
        os.environ.update(saved_env)
        get_settings.cache_clear()


def drive_demand(rehearsal: Rehearsal, start: float, demand: list[tuple[float, Any]],
                 going: Any = lambda: True) -> None:
    """Play ``demand`` ((offset in cluster seconds from ``start``, stable pods the HPA should want, or a
    function giving that count when the offset comes), ...) as the load on the stable track, on the
    cluster's clock, while ``going()``."""
    from flows.standins.rehearsal import EmulatedClock

    assert rehearsal.kube is not None and rehearsal.dataplane is not None
    clock = EmulatedClock(rehearsal.kube)
    for offset, stable_pods in sorted(demand, key=lambda d: d[0]):
        while clock.now() < start + offset and going():
            time.sleep(0.05)
        if not going():
            return
        rehearsal.dataplane.stable_rps = rehearsal.load_for(stable_pods() if callable(stable_pods) else stable_pods)


def _events():
    from flows.standins.kube_emulator.resources import lookup

    return lookup("", "events")


def _when(event: dict[str, Any]) -> float:
    from datetime import datetime

    stamp = event.get("lastTimestamp") or event.get("firstTimestamp") or event["metadata"]["creationTimestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
