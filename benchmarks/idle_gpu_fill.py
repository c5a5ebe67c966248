"""Replay a generated week of fleet usage through the idle-GPU planner and a preemption simulator.

A 64-GPU fleet (8 nodes x 8) serves inference with a diurnal demand, noise, and spikes inside the
night window. Each night a backlog of offline jobs (evaluation runs, embedding backfills,
calibration runs) is packed by the room's own planner (`flows.idle_gpu.packer.pack`, re-planned
every simulated minute from the fleet's state, with the forecast from `forecast_demand` over the
previous 7 nights), and preempted by inference pods as Kubernetes would: an inference pod that finds
no free GPU evicts the smallest batch pod and waits for its grace period plus scheduling latency.

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
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from flows.idle_gpu.forecast import forecast_demand
from flows.idle_gpu.models import CapacitySnapshot, NodeCapacity, OfflineJob, PlanPolicy
from flows.idle_gpu.packer import Busy, order_jobs, pack

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
    est_s: float  # what the planner believes this run needs
    partial: bool = False  # a planned tail segment: stopped at the window's end by design


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
    t0: float  # window start, unix seconds
    demand: np.ndarray  # per minute of the window
    queue: list[OfflineJob]
    actual_factor: dict[str, float]
    windowed: bool  # True: the room's planner; False: the peer
    policy: PlanPolicy
    forecast: list[float]
    stats: Stats
    pods: list[Pod] = field(default_factory=list)
    inference: np.ndarray = field(default_factory=lambda: np.zeros(NODES, dtype=int))
    remaining: dict[str, float] = field(default_factory=dict)  # estimated hours left (checkpointed)
    done_s: dict[str, float] = field(default_factory=dict)  # actual seconds of work saved so far

    def free(self) -> np.ndarray:
        used = self.inference.copy()
        for p in self.pods:
            used[p.node] += p.job.gpus
        return GPUS_PER_NODE - used

    def run(self) -> None:
        ws = datetime.fromtimestamp(self.t0, UTC)
        we = ws + timedelta(hours=WINDOW[1] - WINDOW[0])
        end = we.timestamp()
        stop_at = end - self.policy.grace_period_s
        pending = {j.name: j for j in self.queue}
        # inference present at the window's start, bin-packed (MostAllocated scoring)
        self._scale_inference(int(self.demand[0]), self.t0, count=False)
        for minute, want in enumerate(self.demand):
            now = self.t0 + minute * STEP_S
            self._finish(now)
            self._scale_inference(int(want), now, count=True, pending=pending)
            self.stats.idle_gpu_s += (TOTAL - int(want)) * STEP_S
            self._submit(pending, now, ws, we)
        if self.windowed:  # the flow stops what still runs, one grace period before the end
            self._finish(stop_at)
            self._stop(stop_at)
        self._finish(end)
        # whatever still runs at the window's end (the peer never stops anything)
        self.stats.past_window += len(self.pods)
        for p in self.pods:
            self._account(p, end)

    def _account(self, p: Pod, now: float) -> float:
        """Book a run cut short (preempted or stopped): only checkpointed work is kept."""
        ran = now - p.started
        saved = (ran // CHECKPOINT_S) * CHECKPOINT_S if p.job.checkpointable else 0.0
        self.stats.busy_gpu_s += ran * p.job.gpus
        self.stats.useful_gpu_s += saved * p.job.gpus
        self.stats.lost_gpu_s += (ran - saved) * p.job.gpus
        return saved

    def _finish(self, now: float) -> None:
        for p in [p for p in self.pods if p.started + p.run_s <= now]:
            self.pods.remove(p)
            self.stats.busy_gpu_s += p.run_s * p.job.gpus
            self.stats.useful_gpu_s += p.run_s * p.job.gpus
            self.stats.completed += 1

    def _stop(self, now: float) -> None:
        for p in self.pods:
            self.stats.stopped += 1
            self.stats.tail_segments += p.partial
            self._account(p, now)
        self.pods.clear()

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
                saved = self._account(victim, now)
                if victim.job.checkpointable and pending is not None:
                    name = victim.job.name
                    self.done_s[name] = self.done_s.get(name, 0.0) + saved
                    self.remaining[name] = max(0.0, (victim.est_s - saved) / 3600)
                    pending[name] = victim.job
                    self.stats.requeued += 1
                self.inference[victim.node] += 1
                wait = self.policy.grace_period_s + SCHED_LATENCY_S
            else:
                break  # inference alone exceeds the fleet: not batch's doing
            if count:
                self.stats.inference_pods_started += 1
                self.stats.delayed += wait > DELAY_LIMIT_S
            have += 1

    def _start(self, job: OfflineJob, node: int, now: float, pending: dict, partial: bool = False) -> None:
        total_actual = job.estimated_hours * 3600 * self.actual_factor[job.name]
        run_s = max(STEP_S, total_actual - self.done_s.get(job.name, 0.0))
        est_s = self.remaining.get(job.name, job.estimated_hours) * 3600
        self.pods.append(Pod(job, node, now, run_s, est_s, partial))
        del pending[job.name]

    def _submit(self, pending: dict, now: float, ws: datetime, we: datetime) -> None:
        free = self.free()
        if not pending or free.max() <= 0:
            return
        if not self.windowed:  # the peer: first fit in priority order, no notion of time
            for job in order_jobs(list(pending.values())):
                fits = np.flatnonzero(free >= job.gpus)
                if fits.size:
                    self._start(job, int(fits[0]), now, pending)
                    free[fits[0]] -= job.gpus
            return
        at = datetime.fromtimestamp(now, UTC)
        busy_until = lambda p: max(p.started + p.est_s * self.policy.runtime_margin,  # noqa: E731
                                   now + self.policy.slot_seconds)
        cap = CapacitySnapshot(
            taken_at=at,
            nodes=[NodeCapacity(name=str(i), allocatable=GPUS_PER_NODE, idle=int(free[i]),
                                requested=GPUS_PER_NODE - int(free[i])) for i in range(NODES)],
            demand_forecast=self.forecast, forecast_slot_seconds=FORECAST_SLOT_S)
        busy = [Busy(str(p.node), p.job.gpus, datetime.fromtimestamp(busy_until(p), UTC)) for p in self.pods]
        plan = pack(list(pending.values()), cap, ws, we, self.policy, now=at, busy=busy,
                    remaining_hours=self.remaining)
        for p in plan.starting_now(at):
            self._start(pending[p.job], int(p.node), now, pending, p.partial)


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
