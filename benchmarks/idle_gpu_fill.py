"""Replay a generated week of fleet usage through the idle-GPU night controller and a fleet simulator.

A 64-GPU fleet (8 nodes x 8) serves inference with a diurnal demand, noise, and spikes inside the
night window. Each night a backlog of offline jobs (evaluation runs, embedding backfills,
calibration runs) goes through the room's own controller, the one the flow runs
(`flows.idle_gpu.controller.NightWindow`: tracker, re-plan with `pack` every simulated minute from
the fleet's state with the forecast from `forecast_demand` over the previous 7 nights, submit,
delete preempted Jobs, requeue checkpointable ones, suspend at the window's end). It talks to a
simulated cluster (`SimCluster`: Jobs, pods, nodes) on a simulated clock (`SimClock`, whose sleep
runs the fleet forward). Inference preempts as Kubernetes would: an inference pod that finds no free
GPU evicts the smallest batch pod and waits for its grace period plus scheduling latency.

The peer, in the same run, is a plain batch queue without window awareness: first-fit of the
queue in priority order onto free GPUs, no forecast, nothing stopped at the window's end.

Metrics (per policy): idle GPU-hours filled with useful work (completed runs and checkpointed
progress; lost work does not count) over the idle GPU-hours inference left; inference pods delayed
(> 30 s waiting for a GPU held by batch, grace included); jobs still running after the window;
jobs completed; preemptions.

    python benchmarks/idle_gpu_fill.py [--nights 7] [--seed 7] [--json]
On the rehearsal cluster (``--cluster rehearsal``, the default): the same generated demand and
queues, time-compressed (``--compress 12``: a 6-hour window is 30 cluster minutes), run on
``flows.standins.rehearsal`` (deploy/k8s/overlays/prod on the strict Kubernetes emulator, 8 nodes x 8
GPUs, its clock at ``--speed``): inference is the real llm-server Deployment scaled by its HPA on the
demand, offline work is the real ``idle-gpu-nightly`` flow submitting real Jobs (started five compressed
minutes before the window, as its shipped schedule starts it), preemption is the
emulated scheduler's, and every number comes from watching the cluster (pods' start, end and
``DisruptionTarget``; inference pods' creation and start; the GPUs inference holds), not from the
controller. Its jobs checkpoint every 10 compressed minutes and on SIGTERM (5 s, within the grace
period: the container exits 143), so a checkpointable run stopped or preempted that way keeps its
work up to the SIGTERM; one killed (137) keeps its periodic checkpoints only
(``filled_ratio_periodic_checkpoints_only`` reports the ratio as if no job saved on SIGTERM). The peer, on its own rehearsal cluster in parallel, is a plain batch queue: first-fit
submission of the queue as Jobs the scheduler places, retried by the Job controller after a
preemption, nothing stopped at the window's end. Both report the PodDisruptionBudget violations and
HPA overrides of llm-server the whole time (``pdb_violations``, ``hpa_overrides``: ServingGuard).
``--cluster sim`` replays 7 nights on the simulated fleet above (``--nights 7``), with the forecast.

    python benchmarks/idle_gpu_fill.py [--cluster rehearsal|sim] [--nights N] [--seed 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from flows.common.clock import SimClock
from flows.idle_gpu.controller import NightWindow
from flows.idle_gpu.forecast import forecast_demand
from flows.idle_gpu.manifest import HOSTNAME, JOB_LABEL
from flows.idle_gpu.models import CapacitySnapshot, NodeCapacity, OfflineJob, Outcome, PlanPolicy
from flows.idle_gpu.packer import order_jobs
from flows.idle_gpu.tracker import JobView, PodView, Tracker

NODES, GPUS_PER_NODE = 8, 8
TOTAL = NODES * GPUS_PER_NODE
WINDOW = (1, 7)  # 01:00-07:00 UTC
STEP_S = 60
SCHED_LATENCY_S = 2.0  # scheduler + kubelet start after the victim's GPUs are free
DELAY_LIMIT_S = 30.0
CHECKPOINT_S = 600  # checkpointable jobs save every 10 minutes
FORECAST_SLOT_S = 900
HISTORY_NIGHTS = 7


def inference_demand(days: int, rng: np.random.Generator) -> np.ndarray:
    """GPUs wanted by inference, one value per minute: diurnal + noise + spikes in the night window."""
    minutes = np.arange(days * 1440)
    hour = (minutes % 1440) / 60
    diurnal = 34 + 22 * np.sin((hour - 9) / 24 * 2 * np.pi)  # ~12 at 03:00, ~56 at 15:00
    noise = np.convolve(rng.normal(0, 1.5, minutes.size), np.ones(10) / 10 * 3, mode="same")
    demand = diurnal + noise
    for day in range(days):
        for _ in range(rng.integers(1, 4)):  # 1-3 spikes per night, 10-40 min, +6..+14 GPUs
            start = day * 1440 + int(rng.integers(WINDOW[0] * 60, WINDOW[1] * 60 - 40))
            demand[start:start + int(rng.integers(10, 41))] += rng.integers(6, 15)
    return np.clip(np.round(demand), 0, TOTAL).astype(int)


def night_queue(night: int, rng: np.random.Generator, start: datetime) -> list[OfflineJob]:
    """A backlog larger than a night can hold, shaped like the issue's examples."""
    jobs = []
    kinds = [  # (prefix, gpu choices, hours range, checkpointable, share)
        ("eval", [1, 2, 4, 8], (0.25, 2.0), False, 0.35),
        ("embed", [1, 2], (0.5, 3.0), True, 0.45),
        ("calib", [1], (0.2, 0.6), False, 0.20),
    ]
    for i in range(180):
        k = rng.choice(len(kinds), p=[s for *_, s in kinds])
        prefix, gpus, (lo, hi), ckpt, _ = kinds[k]
        deadline = start + timedelta(hours=float(rng.uniform(3, 6))) if rng.random() < 0.1 else None
        jobs.append(OfflineJob(name=f"{prefix}-{night}-{i}", image="registry.local/batch:1", command=["run"],
                               gpus=int(rng.choice(gpus)), estimated_hours=round(float(rng.uniform(lo, hi)), 2),
                               priority=int(rng.integers(0, 3)), checkpointable=ckpt, deadline=deadline))
    return jobs


@dataclass
class Pod:
    job: OfflineJob
    node: int
    started: float
    run_s: float  # actual seconds this run needs to finish the job
    k8s_name: str = ""  # its Job (the controller's runs; the peer has none)


@dataclass
class SimJob:
    """A Kubernetes Job of the simulated cluster, as the controller sees it through ``views``."""

    name: str
    job: OfflineJob
    node: int
    state: str = "active"  # active | complete | suspended
    pod: PodView | None = None


@dataclass
class Stats:
    idle_gpu_s: float = 0.0
    useful_gpu_s: float = 0.0
    sigterm_saved_gpu_s: float = 0.0  # of useful_gpu_s: progress a job saved on SIGTERM (rehearsal)
    busy_gpu_s: float = 0.0
    delayed: int = 0
    inference_pods_started: int = 0
    past_window: int = 0
    completed: int = 0
    preempted: int = 0
    requeued: int = 0
    stopped: int = 0
    tail_segments: int = 0
    lost_gpu_s: float = 0.0


@dataclass
class Night:
    """The fleet during one window: inference scaling with demand, batch pods, and the ground-truth
    accounting (useful work = completed runs and checkpointed progress; lost work does not count)."""

    t0: float  # window start, unix seconds
    demand: np.ndarray  # per minute of the window
    queue: list[OfflineJob]
    actual_factor: dict[str, float]
    windowed: bool  # True: the room's controller; False: the peer
    policy: PlanPolicy
    forecast: list[float]
    stats: Stats
    pods: list[Pod] = field(default_factory=list)
    inference: np.ndarray = field(default_factory=lambda: np.zeros(NODES, dtype=int))
    done_s: dict[str, float] = field(default_factory=dict)  # actual seconds of work saved so far
    jobs: dict[str, SimJob] = field(default_factory=dict)  # the controller's Kubernetes Jobs
    minute: int = 0  # next minute of the demand series to play

    def free(self) -> np.ndarray:
        used = self.inference.copy()
        for p in self.pods:
            used[p.node] += p.job.gpus
        return GPUS_PER_NODE - used

    def run(self) -> None:
        ws = datetime.fromtimestamp(self.t0, UTC)
        we = ws + timedelta(hours=WINDOW[1] - WINDOW[0])
        end = we.timestamp()
        # inference present at the window's start, bin-packed (MostAllocated scoring)
        self._scale_inference(int(self.demand[0]), self.t0, count=False)
        if self.windowed:
            self._run_controller(ws, we)
        else:
            self._run_peer()
        self._finish(end)
        # whatever still runs at the window's end (the peer never stops anything)
        self.stats.past_window += len(self.pods)
        for p in self.pods:
            self._account(p, end)

    # -- the room's controller, against the simulated cluster and clock ------------------------------
    def _run_controller(self, ws: datetime, we: datetime) -> None:
        self._play_minute(self.t0)  # minute 0 happens as the window opens
        clock = SimClock(self.t0, on_advance=self.advance)
        cluster = SimCluster(self, clock)
        snap = CapacitySnapshot(taken_at=ws, nodes=cluster.nodes()[0], demand_forecast=self.forecast,
                                forecast_slot_seconds=FORECAST_SLOT_S)
        tracker = Tracker(self.queue)
        window = NightWindow(cluster, tracker, snap, window_start=ws, window_end=we, policy=self.policy,
                             clock=clock, poll_seconds=STEP_S, logger=QUIET)
        window.run()
        while self.minute < len(self.demand):  # the controller stopped early: the fleet goes on
            self._play_minute(self.t0 + self.minute * STEP_S)
        window.stop()  # one grace period before the end: suspend what still runs
        self.stats.tail_segments += sum(r.partial and r.outcome is Outcome.stopped for r in tracker.records.values())

    def advance(self, old: float, new: float) -> None:
        """The fleet from ``old`` to ``new``: every minute boundary in between is played."""
        while self.minute < len(self.demand) and self.t0 + self.minute * STEP_S <= new:
            self._play_minute(self.t0 + self.minute * STEP_S)

    def _play_minute(self, now: float) -> None:
        want = int(self.demand[self.minute])
        self.minute += 1
        self._finish(now)
        self._scale_inference(want, now, count=True)
        self.stats.idle_gpu_s += (TOTAL - want) * STEP_S
        self._start_pending(now)

    def _start_pending(self, now: float) -> None:
        """Jobs whose pod waits for GPUs (the plan was made on a fleet that changed since) start."""
        free = self.free()
        for j in self.jobs.values():
            if j.state == "active" and j.pod is not None and j.pod.phase == "Pending" and free[j.node] >= j.job.gpus:
                self._start(j, now)
                free[j.node] -= j.job.gpus

    def _start(self, j: SimJob, now: float) -> None:
        total_actual = j.job.estimated_hours * 3600 * self.actual_factor[j.job.name]
        run_s = max(STEP_S, total_actual - self.done_s.get(j.job.name, 0.0))
        self.pods.append(Pod(j.job, j.node, now, run_s, j.name))
        j.pod = PodView(f"{j.name}-pod", "Running", _dt(now), None, False)

    # -- the peer: a plain batch queue, first fit in priority order, no notion of time -----------------
    def _run_peer(self) -> None:
        pending = {j.name: j for j in self.queue}
        for minute, want in enumerate(self.demand):
            now = self.t0 + minute * STEP_S
            self._finish(now)
            self._scale_inference(int(want), now, count=True, pending=pending)
            self.stats.idle_gpu_s += (TOTAL - int(want)) * STEP_S
            free = self.free()
            for job in order_jobs(list(pending.values())) if free.max() > 0 else []:
                fits = np.flatnonzero(free >= job.gpus)
                if fits.size:
                    total_actual = job.estimated_hours * 3600 * self.actual_factor[job.name]
                    run_s = max(STEP_S, total_actual - self.done_s.get(job.name, 0.0))
                    self.pods.append(Pod(job, int(fits[0]), now, run_s))
                    del pending[job.name]
                    free[fits[0]] -= job.gpus

    # -- the fleet ---------------------------------------------------------------------------------
    def _account(self, p: Pod, now: float) -> float:
        """Book a run cut short (preempted or stopped): only checkpointed work is kept."""
        ran = now - p.started
        saved = (ran // CHECKPOINT_S) * CHECKPOINT_S if p.job.checkpointable else 0.0
        self.stats.busy_gpu_s += ran * p.job.gpus
        self.stats.useful_gpu_s += saved * p.job.gpus
        self.stats.lost_gpu_s += (ran - saved) * p.job.gpus
        name = p.job.name
        self.done_s[name] = self.done_s.get(name, 0.0) + saved
        return saved

    def _finish(self, now: float) -> None:
        for p in [p for p in self.pods if p.started + p.run_s <= now]:
            self.pods.remove(p)
            self.stats.busy_gpu_s += p.run_s * p.job.gpus
            self.stats.useful_gpu_s += p.run_s * p.job.gpus
            self.stats.completed += 1
            if p.k8s_name in self.jobs:
                j = self.jobs[p.k8s_name]
                j.state = "complete"
                j.pod = PodView(j.pod.uid, "Succeeded", j.pod.started, _dt(p.started + p.run_s), False)

    def stop_job(self, name: str, now: float) -> None:
        """Suspend: the pod gets SIGTERM and stops at its last checkpoint."""
        self._finish(now)
        j = self.jobs[name]
        for p in [p for p in self.pods if p.k8s_name == name]:
            self.pods.remove(p)
            self.stats.stopped += 1
            self._account(p, now)
            j.pod = PodView(j.pod.uid, "Failed", j.pod.started, _dt(now), False)
        j.state = "suspended"

    def _scale_inference(self, want: int, now: float, count: bool, pending: dict | None = None) -> None:
        have = int(self.inference.sum())
        while have > want:  # scale down from the least loaded node
            n = int(np.argmin(np.where(self.inference > 0, self.inference, 10**6)))
            self.inference[n] -= 1
            have -= 1
        while have < want:
            free = self.free()
            if free.max() > 0:
                cands = np.flatnonzero(free > 0)
                n = int(cands[np.argmax(self.inference[cands])])
                self.inference[n] += 1
                wait = 0.0
            elif self.pods:
                # preemption: the smallest batch pod, the most recently started among equals
                victim = min(self.pods, key=lambda p: (p.job.gpus, -p.started))
                self.pods.remove(victim)
                self.stats.preempted += 1
                self._account(victim, now)
                if victim.k8s_name in self.jobs:  # DisruptionTarget: the controller deletes and requeues
                    j = self.jobs[victim.k8s_name]
                    j.pod = PodView(j.pod.uid, "Failed", j.pod.started, _dt(now), True)
                    self.stats.requeued += victim.job.checkpointable
                elif victim.job.checkpointable and pending is not None:  # the peer's queue takes it back
                    pending[victim.job.name] = victim.job
                    self.stats.requeued += 1
                self.inference[victim.node] += 1
                wait = self.policy.grace_period_s + SCHED_LATENCY_S
            else:
                break  # inference alone exceeds the fleet: not batch's doing
            if count:
                self.stats.inference_pods_started += 1
                self.stats.delayed += wait > DELAY_LIMIT_S
            have += 1


class SimCluster:
    """The controller's view of the simulated fleet (``flows.idle_gpu.controller.NightCluster``)."""

    namespace = "offline-batch"

    def __init__(self, night: Night, clock: SimClock) -> None:
        self.night, self.clock = night, clock

    def nodes(self) -> tuple[list[NodeCapacity], list[str]]:
        free = self.night.free()
        return [NodeCapacity(name=str(i), allocatable=GPUS_PER_NODE, requested=GPUS_PER_NODE - int(free[i]),
                             idle=int(free[i])) for i in range(NODES)], []

    def waiting_gpus(self) -> int:
        return 0  # the simulated fleet places inference at once (preempting): nothing waits between ticks

    def scale_up_gpus(self) -> dict[str, int]:
        return {}  # and scales it to the demand at once: no autoscaler waves

    def views(self, window_tag: str | None = None) -> list[JobView]:
        self.night._finish(self.clock.now())
        return [JobView(j.name, j.job.name, j.state, "", str(j.node), (j.pod,) if j.pod else ())
                for j in self.night.jobs.values()]

    def submit(self, manifest: dict) -> bool:
        name = manifest["metadata"]["name"]
        if name in self.night.jobs:
            return False
        job = next(q for q in self.night.queue if q.name == manifest["metadata"]["labels"][JOB_LABEL])
        node = int(manifest["spec"]["template"]["spec"]["nodeSelector"][HOSTNAME])
        j = self.night.jobs[name] = SimJob(name, job, node, pod=PodView(f"{name}-pod", "Pending", None, None, False))
        if self.night.free()[node] >= job.gpus:
            self.night._start(j, self.clock.now())
        return True

    def suspend(self, name: str) -> bool:
        if name not in self.night.jobs:
            return False
        self.night.stop_job(name, self.clock.now())
        return True

    def delete(self, name: str, grace_period_s: int) -> None:
        self.night.jobs.pop(name, None)


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


QUIET = logging.getLogger("idle_gpu_fill")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def simulate(nights: int, seed: int, policy: PlanPolicy, windowed: bool, quantile: float) -> Stats:
    rng = np.random.default_rng(seed)
    days = HISTORY_NIGHTS + nights + 1
    demand = inference_demand(days, rng)
    epoch = datetime(2026, 11, 1, tzinfo=UTC)
    times = [(epoch + timedelta(minutes=int(m))).timestamp() for m in range(demand.size)]
    stats = Stats()
    for night in range(nights):
        day = HISTORY_NIGHTS + night
        ws = epoch + timedelta(days=day, hours=WINDOW[0])
        we = ws + timedelta(hours=WINDOW[1] - WINDOW[0])
        lo = day * 1440 + WINDOW[0] * 60
        history = list(zip(times[:lo], demand[:lo].tolist(), strict=True))
        forecast = forecast_demand(history, ws, we, FORECAST_SLOT_S, nights=HISTORY_NIGHTS, quantile=quantile)
        queue = night_queue(night, rng, ws)
        factor = {j.name: float(rng.uniform(0.8, 1.08)) if rng.random() < 0.95 else 1.3 for j in queue}
        Night(ws.timestamp(), demand[lo:lo + (WINDOW[1] - WINDOW[0]) * 60], queue, factor, windowed, policy,
              forecast, stats).run()
    return stats


def summary(s: Stats) -> dict:
    return {
        "idle_gpu_hours": round(s.idle_gpu_s / 3600, 1),
        "idle_gpu_hours_filled": round(s.useful_gpu_s / 3600, 1),
        "idle_gpu_hours_filled_ratio": round(s.useful_gpu_s / s.idle_gpu_s, 4),
        # the same without the checkpoints written on SIGTERM: whole periodic checkpoints only
        "filled_ratio_periodic_checkpoints_only": round((s.useful_gpu_s - s.sigterm_saved_gpu_s) / s.idle_gpu_s, 4),
        "gpu_hours_lost_to_preemption": round(s.lost_gpu_s / 3600, 1),
        "inference_pods_started": s.inference_pods_started,
        "inference_pods_delayed": s.delayed,
        "jobs_past_window": s.past_window,
        "jobs_completed": s.completed,
        "jobs_preempted": s.preempted,
        "jobs_requeued": s.requeued,
        "jobs_stopped_at_window_end": s.stopped,
        "of_which_planned_tail_segments": s.tail_segments,
    }


# ---- on the rehearsal cluster --------------------------------------------------------------------------

@dataclass
class PodRun:
    job: str
    gpus: int
    checkpointable: bool
    started: float | None = None
    ended: float | None = None
    phase: str = "Pending"
    disrupted: bool = False
    exit_code: int | None = None


class Ledger:
    """Every offline pod's run as the cluster shows it (a watch on the batch namespace), and the GPUs
    inference holds over time (sampled on the cluster's clock): the ground truth of a night."""

    def __init__(self, rehearsal, since: float) -> None:
        from flows.common.kube import PODS as POD_KIND
        from flows.standins.rehearsal.observers import Informer

        self.r, self.runs, self.since = rehearsal, {}, since  # idle GPUs count from the window's start
        self.idle_gpu_s = 0.0
        self._informer = Informer(rehearsal.client(), POD_KIND, "offline-batch", self._pod)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> Ledger:
        self._informer.start()
        self._sampler.start()
        return self

    def stop(self, settle_s: float = 10.0) -> None:
        """Stop watching, once the watch has delivered the end of every pod that has ended: it lags
        behind the cluster under load (at 20x, a second late is 20 cluster seconds), and a pod whose
        end it has not delivered yet would count as past the window (its end time is the kubelet's
        ``finishedAt``, so waiting changes no figure, only whether it is seen). A pod still running,
        or one whose end never arrives within ``settle_s`` (real seconds), still counts."""
        import time

        from flows.standins.kube_emulator.resources import lookup

        self._stop.set()  # idle GPUs count to the window's end, not while the watch settles
        self._sampler.join(timeout=5)
        pods, until = lookup("", "pods"), time.monotonic() + settle_s
        while time.monotonic() < until:
            live = {p["metadata"]["uid"] for p in self.r.kube.store.peek(pods, "offline-batch")
                    if (p.get("status") or {}).get("phase") in ("Pending", "Running")}
            if all(run.ended is not None or uid in live for uid, run in self.runs.items() if run.started is not None):
                break
            time.sleep(0.05)
        self._informer.stop()

    def _pod(self, kind: str, pod: dict) -> None:
        from flows.idle_gpu.capacity import pod_gpu_request

        meta, status = pod["metadata"], pod.get("status") or {}
        labels = meta.get("labels") or {}
        run = self.runs.setdefault(meta["uid"], PodRun(labels.get(JOB_LABEL, meta["name"]), pod_gpu_request(pod),
                                                      labels.get("inferops.io/checkpointable") == "true"))
        run.phase = status.get("phase") or run.phase
        run.disrupted = run.disrupted or any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
                                             for c in status.get("conditions") or [])
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            if (state.get("running") or {}).get("startedAt") and run.started is None:
                run.started = _ts(state["running"]["startedAt"])
            term = state.get("terminated") or {}
            if term.get("finishedAt"):
                run.ended = _ts(term["finishedAt"])
                run.exit_code = term.get("exitCode")
                run.started = run.started or _ts(term.get("startedAt") or term["finishedAt"])

    def _sample(self) -> None:
        from flows.idle_gpu.capacity import pod_gpu_request
        from flows.standins.kube_emulator.resources import lookup

        kube, pods = self.r.kube, lookup("", "pods")
        last = kube.clock.time()
        while not self._stop.wait(0.05):
            now = kube.clock.time()
            held = sum(pod_gpu_request(p) for p in kube.store.peek(pods, "inference")
                       if p["spec"].get("nodeName") and (p.get("status") or {}).get("phase") in ("Pending", "Running"))
            self.idle_gpu_s += max(0, TOTAL - held) * max(0.0, now - max(last, self.since))
            last = now

    def book(self, stats: Stats, window_end: float) -> None:
        """Useful work (completed runs, checkpointed progress) and lost work, up to the window's end."""
        for run in self.runs.values():
            if run.started is None:
                continue
            end = min(run.ended if run.ended is not None else window_end, window_end)
            ran = max(0.0, end - run.started)
            stats.busy_gpu_s += ran * run.gpus
            if run.phase == "Succeeded" and end == run.ended:
                stats.useful_gpu_s += ran * run.gpus
                stats.completed += 1
                continue
            saved = (ran // CHECKPOINT_S_REHEARSAL) * CHECKPOINT_S_REHEARSAL if run.checkpointable else 0.0
            if run.checkpointable and run.exit_code == SIGTERM_EXIT and end == run.ended:
                # it exited on SIGTERM within its grace period: it wrote a checkpoint of everything up to
                # the SIGTERM (the last SHUTDOWN_S of the run were spent writing it); a SIGKILL (137)
                # keeps the periodic checkpoints only
                at_sigterm = max(saved, ran - SHUTDOWN_S)
                stats.sigterm_saved_gpu_s += (at_sigterm - saved) * run.gpus
                saved = at_sigterm
            stats.useful_gpu_s += saved * run.gpus
            stats.lost_gpu_s += (ran - saved) * run.gpus
            if run.disrupted:
                stats.preempted += 1
                stats.requeued += run.checkpointable
            elif run.ended is None or run.ended > window_end:
                stats.past_window += 1
                print(f"past the window: {run.job} ({run.phase}, started {run.started}, ended {run.ended}, window "
                      f"end {window_end}, exit {run.exit_code})", file=sys.stderr)  # the parent repeats it
            else:
                stats.stopped += 1


CHECKPOINT_S_REHEARSAL = CHECKPOINT_S / 12  # checkpointable jobs save every 10 minutes, compressed
SHUTDOWN_S = 5.0  # and on SIGTERM, which takes them 5 s (the emulated container then exits 143)
SIGTERM_EXIT = 143


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _queue_for_cluster(jobs: list[OfflineJob], factor: dict[str, float], ws: datetime, compress: float) -> list[dict]:
    """The night's queue, compressed: estimates, run times and deadlines / ``compress``; each job takes
    5 s to checkpoint on SIGTERM."""
    from flows.standins.rehearsal.scenarios import RUN_SECONDS, SHUTDOWN_SECONDS

    out = []
    for j in jobs:
        d = j.model_dump(mode="json", exclude_none=True)
        d["estimated_hours"] = round(j.estimated_hours / compress, 6)
        if j.deadline is not None:
            d["deadline"] = (ws + (j.deadline - ws) / compress).isoformat()
        d["annotations"] = {RUN_SECONDS: f"{j.estimated_hours * 3600 * factor[j.name] / compress:.0f}",
                            SHUTDOWN_SECONDS: f"{SHUTDOWN_S:g}"}
        out.append(d)
    return out


def fifo_peer(rehearsal, jobs: list[dict], window_s: float, demand: list[tuple[float, int]], grace_s: int) -> float:
    """The plain batch queue on the cluster: every 30 cluster seconds, submit queued jobs (priority, then
    larger first) while the fleet has GPUs free for them, as Jobs the scheduler places; a preemption is
    retried by the Job controller (podFailurePolicy Ignore); nothing is stopped at the window's end.
    Returns the window's end (cluster time)."""
    from flows.common.kube import JOBS as JOB_KIND
    from flows.common.kube import NODES as NODE_KIND
    from flows.common.kube import PODS as POD_KIND
    from flows.idle_gpu.capacity import kube_nodes
    from flows.idle_gpu.manifest import job_manifest
    from flows.standins.rehearsal import EmulatedClock
    from flows.standins.rehearsal.scenarios import drive_demand

    kube, clock = rehearsal.client(), EmulatedClock(rehearsal.kube)
    start = clock.now()
    end = start + window_s
    ws = datetime.fromtimestamp(start, UTC)
    pending = order_jobs([OfflineJob.model_validate(j) for j in jobs])
    done = threading.Event()
    driver = threading.Thread(target=drive_demand, args=(rehearsal, start, demand, lambda: not done.is_set()),
                              daemon=True)
    driver.start()
    try:
        while clock.now() < end:
            nodes, _ = kube_nodes(kube.list(POD_KIND), kube.list(NODE_KIND))
            free = sum(n.idle for n in nodes)
            largest = max((n.idle for n in nodes), default=0)
            for job in list(pending):
                if job.gpus <= min(free, largest):
                    m = job_manifest(job, node="", namespace="offline-batch", window_start=ws,
                                     window_end=ws + timedelta(days=1), active_deadline_s=7 * 86400,
                                     priority_class="offline-batch", grace_period_s=grace_s)
                    m["spec"]["template"]["spec"].pop("nodeSelector")
                    m["spec"]["backoffLimit"] = 6
                    kube.create(JOB_KIND, m, "offline-batch")
                    pending.remove(job)
                    free -= job.gpus
            clock.sleep(min(30.0, end - clock.now()))
    finally:
        done.set()
        driver.join(timeout=5)
    return end


def _cleanup(rehearsal) -> None:
    from flows.common.kube import JOBS as JOB_KIND
    from flows.common.kube import PODS as POD_KIND

    kube = rehearsal.client()
    for j in kube.list(JOB_KIND, "offline-batch"):
        kube.delete(JOB_KIND, "offline-batch", j["metadata"]["name"], grace_period_s=0)
    for p in kube.list(POD_KIND, "offline-batch"):  # a Job deleted through the API orphans its pods by default
        kube.delete(POD_KIND, "offline-batch", p["metadata"]["name"], grace_period_s=0)
    rehearsal.wait(lambda: not kube.list(POD_KIND, "offline-batch"), "offline pods gone", 60)


def rehearsal_nights(kind: str, nights: int, seed: int, compress: float, speed: float, grace_s: int,
                     flow_params: dict | None = None, policy: dict | None = None) -> dict:
    """``nights`` compressed windows on one rehearsal cluster, for ``kind`` (ours | peer)."""
    import tempfile

    from flows.standins.rehearsal import EmulatedClock, Rehearsal
    from flows.standins.rehearsal.scenarios import run_night

    rng = np.random.default_rng(seed)
    days = HISTORY_NIGHTS + nights + 1
    demand = inference_demand(days, rng)
    epoch = datetime(2026, 11, 1, tzinfo=UTC)
    hours = WINDOW[1] - WINDOW[0]
    window_s = hours * 3600 / compress
    stats = Stats()
    with Rehearsal(speed=speed, model_load_s=5.0) as r, tempfile.TemporaryDirectory() as tmp:
        for night in range(nights):
            day = HISTORY_NIGHTS + night
            ws = epoch + timedelta(days=day, hours=WINDOW[0])
            lo = day * 1440 + WINDOW[0] * 60
            queue = night_queue(night, rng, ws)
            factor = {j.name: float(rng.uniform(0.8, 1.08)) if rng.random() < 0.95 else 1.3 for j in queue}
            wanted = [(m * 60 / compress, int(min(50, max(3, d)))) for m, d in enumerate(demand[lo:lo + hours * 60])]
            jobs = _queue_for_cluster(queue, factor, ws, compress)
            clocks = r.pod_clock()
            # ours: the flow starts 5 minutes (compressed) before the window, as the shipped schedule starts it
            lead = 300 / compress if kind == "ours" else 0.0
            start = EmulatedClock(r.kube).now() + lead
            ledger = Ledger(r, since=start).start()
            if kind == "ours":
                # the controller's tick and slot compressed like the window (the flow's defaults: 30 s, 5 min)
                run = run_night(r, jobs, window_s=window_s, demand=wanted, queue_file=Path(tmp) / f"q{night}.json",
                                grace_s=grace_s, poll_s=30 / compress, slot_s=max(1, round(300 / compress)),
                                speed=speed, opens_at=start, flow_params=flow_params, policy=policy)
                end = start + window_s
                stats.tail_segments += sum(j["partial"] and j["outcome"] == "stopped" for j in run.report["jobs"])
            else:
                end = fifo_peer(r, jobs, window_s, wanted, grace_s)
            r.wait(lambda end=end: EmulatedClock(r.kube).now() >= end, "the window's end", 60)
            ledger.stop()
            clocks.stop()
            ledger.book(stats, end)
            stats.idle_gpu_s += ledger.idle_gpu_s
            created = [t for t in clocks.since(start) if t.created < end]
            stats.inference_pods_started += len(created)
            stats.delayed += sum(1 for t in created if (t.started or end) - t.created > DELAY_LIMIT_S)
            _cleanup(r)
        guard = r.guard
        problems = r.problems()
    return {**summary(stats), "pdb_violations": len(guard.violations), "hpa_overrides": len(guard.overrides),
            "problems": problems}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", choices=("rehearsal", "sim"), default="rehearsal")
    ap.add_argument("--nights", type=int, default=None, help="default: 2 on the rehearsal cluster, 7 simulated")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--grace-period-s", type=int, default=20)
    ap.add_argument("--quantile", type=float, default=0.5, help="forecast quantile over past nights (sim)")
    ap.add_argument("--compress", type=float, default=12.0, help="rehearsal: window time compression")
    ap.add_argument("--speed", type=float, default=20.0, help="rehearsal: the cluster's clock speed (the flow runs "
                    "in real time: at a higher speed its latency weighs more in cluster time)")
    ap.add_argument("--checkpointable-priority-class", default=None,
                    help="rehearsal: the flow's parameter (default: the flow's own, one class for all)")
    ap.add_argument("--no-keep-free-for-scale-up", action="store_true",
                    help="rehearsal: start jobs on the GPUs an HPA held back by its rate will want")
    ap.add_argument("--child", choices=("ours", "peer"), help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        cls = args.checkpointable_priority_class
        print(json.dumps(rehearsal_nights(
            args.child, args.nights, args.seed, args.compress, args.speed, args.grace_period_s,
            flow_params=None if cls is None else {"checkpointable_priority_class": cls},
            policy={"keep_free_for_scale_up": False} if args.no_keep_free_for_scale_up else None)))
        return 0
    if args.cluster == "sim":
        nights = args.nights or 7
        policy = PlanPolicy(slot_seconds=300, grace_period_s=args.grace_period_s, runtime_margin=1.1)
        ours = summary(simulate(nights, args.seed, policy, True, args.quantile))
        peer = summary(simulate(nights, args.seed, policy, False, args.quantile))
        extra = {"forecast_quantile": args.quantile, "pdb_violations": None, "hpa_overrides": None}
    else:
        nights = args.nights or 2
        ours, peer = _children(args, nights)
        extra = {"cluster": "rehearsal", "compression": args.compress, "speed": args.speed,
                 "checkpointable_priority_class": args.checkpointable_priority_class or "",
                 "keep_free_for_scale_up": not args.no_keep_free_for_scale_up,
                 "pdb_violations": ours["pdb_violations"] + peer["pdb_violations"],
                 "hpa_overrides": ours["hpa_overrides"] + peer["hpa_overrides"],
                 "problems": ours.pop("problems") + peer.pop("problems")}
    keys = [k for k in ours if k not in ("pdb_violations", "hpa_overrides", "problems")]
    print(f"{'metric':32} {'inferops':>10} {'peer FIFO':>10}")
    for k in keys:
        print(f"{k:32} {ours[k]:>10} {peer[k]:>10}")
    if args.json:
        ratio = (ours["idle_gpu_hours_filled_ratio"] / peer["idle_gpu_hours_filled_ratio"]
                 if peer["idle_gpu_hours_filled_ratio"] else math.nan)
        print(json.dumps({**{k: ours[k] for k in keys}, "nights": nights, "gpus": TOTAL,
                          "grace_period_s": args.grace_period_s, "peer": {k: peer[k] for k in keys},
                          "filled_ratio_vs_peer": round(ratio, 4), **extra}))
    return 0


def _children(args, nights: int) -> tuple[dict, dict]:
    """ours and the peer, each on its own rehearsal cluster, in parallel child processes."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    repo = Path(__file__).resolve().parents[1]

    def run(kind: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--nights", str(nights), "--seed",
                              str(args.seed), "--compress", str(args.compress), "--speed", str(args.speed),
                              "--grace-period-s", str(args.grace_period_s),
                              *(["--checkpointable-priority-class", args.checkpointable_priority_class]
                                if args.checkpointable_priority_class is not None else []),
                              *(["--no-keep-free-for-scale-up"] if args.no_keep_free_for_scale_up else [])],
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo)}, cwd=repo)
        if out.returncode != 0:
            raise SystemExit(f"idle_gpu_fill: {kind} failed:\n{out.stderr[-3000:]}")
        if kind == "ours":  # a job of ours past the window is a defect: say which
            for line in out.stderr.splitlines():
                if "past the window" in line:
                    print(f"ours: {line}", file=sys.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:
        ours, peer = pool.map(run, ("ours", "peer"))
    return ours, peer


if __name__ == "__main__":
    sys.exit(main())
