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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--grace-period-s", type=int, default=20)
    ap.add_argument("--quantile", type=float, default=0.5, help="forecast quantile over past nights")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    policy = PlanPolicy(slot_seconds=300, grace_period_s=args.grace_period_s, runtime_margin=1.1)
    ours = summary(simulate(args.nights, args.seed, policy, True, args.quantile))
    peer = summary(simulate(args.nights, args.seed, policy, False, args.quantile))
    print(f"{'metric':32} {'inferops':>10} {'peer FIFO':>10}")
    for k in ours:
        print(f"{k:32} {ours[k]:>10} {peer[k]:>10}")
    if args.json:
        ratio = (ours["idle_gpu_hours_filled_ratio"] / peer["idle_gpu_hours_filled_ratio"]
                 if peer["idle_gpu_hours_filled_ratio"] else math.nan)
        print(json.dumps({**ours, "nights": args.nights, "gpus": TOTAL, "grace_period_s": args.grace_period_s,
                          "forecast_quantile": args.quantile, "peer": peer,
                          "filled_ratio_vs_peer": round(ratio, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
