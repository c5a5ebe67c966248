"""Pack offline jobs into idle GPU capacity so that every job ends before the window closes.

Time is cut into slots. Each job needs ``gpus`` GPUs on one node for its estimated run time
(times the runtime margin), rounded up to whole slots. Two limits hold in every slot:

* per node: GPUs idle now, plus those that running batch work gives back when it ends;
* per fleet: allocatable GPUs minus the inference demand forecast for that slot minus headroom,
  so that tonight's expected inference growth finds free GPUs without preempting anything.

Jobs go in order (priority, then larger GPU-hours first) to the earliest slot where they fit, on
the node that they fill best (least fragmentation). A checkpointable job that cannot finish before
the window closes may get a *tail segment* instead: it runs until the window closes and is stopped
there at a checkpoint (``partial``), resuming another night. The run loop re-plans at every tick from the
live cluster and submits what starts now; the benchmark does the same against its simulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flows.idle_gpu.models import CapacitySnapshot, OfflineJob, PlanPolicy


@dataclass(frozen=True)
class Busy:
    """Batch GPUs in use on ``node`` until about ``until`` (a running job's estimated end)."""

    node: str
    gpus: int
    until: datetime


@dataclass
class Placement:
    job: str
    node: str
    gpus: int
    start: datetime
    end: datetime  # planned end, runtime margin included
    partial: bool = False  # a checkpointable job's tail segment: stopped at the window's end

    @property
    def gpu_hours(self) -> float:
        return self.gpus * (self.end - self.start).total_seconds() / 3600


@dataclass
class Unplaced:
    job: str
    reason: str


@dataclass
class Plan:
    start: datetime  # max(now, window start)
    end: datetime  # window end
    placements: list[Placement] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)
    idle_gpu_hours: float = 0.0  # what batch may use from `start` on (fleet and node limits)

    @property
    def planned_gpu_hours(self) -> float:
        return sum(p.gpu_hours for p in self.placements)

    def starting_now(self, now: datetime) -> list[Placement]:
        return [p for p in self.placements if p.start <= now]

    def to_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "idle_gpu_hours": round(self.idle_gpu_hours, 3),
            "planned_gpu_hours": round(self.planned_gpu_hours, 3),
            "fill_ratio": round(self.planned_gpu_hours / self.idle_gpu_hours, 4) if self.idle_gpu_hours else 0.0,
            "placements": [
                {"job": p.job, "node": p.node, "gpus": p.gpus, "start": p.start.isoformat(),
                 "end": p.end.isoformat(), "partial": p.partial} for p in self.placements],
            "unplaced": [{"job": u.job, "reason": u.reason} for u in self.unplaced],
        }


def order_jobs(jobs: Sequence[OfflineJob]) -> list[OfflineJob]:
    return sorted(jobs, key=lambda j: (-j.priority, -j.gpu_hours, j.name))


def pack(jobs: Sequence[OfflineJob], capacity: CapacitySnapshot, window_start: datetime,
         window_end: datetime, policy: PlanPolicy, now: datetime, busy: Sequence[Busy] = (),
         remaining_hours: dict[str, float] | None = None) -> Plan:
    """Plan ``jobs`` from ``now`` (or the window start) to the window's end, minus the grace period.

    ``remaining_hours`` overrides a job's estimate (a checkpointed job resumes with what is left).
    """
    t0 = max(now, window_start)
    slot = policy.slot_seconds
    usable = (window_end - timedelta(seconds=policy.grace_period_s) - t0).total_seconds()
    n_slots = max(0, int(usable // slot))
    plan = Plan(start=t0, end=window_end)
    names = [n.name for n in capacity.nodes]
    idx = {n: i for i, n in enumerate(names)}
    free = np.zeros((len(names), n_slots), dtype=np.int64)
    for i, node in enumerate(capacity.nodes):
        free[i, :] = node.idle
    running = np.zeros(n_slots, dtype=np.int64)
    for b in busy:
        if b.node not in idx:
            continue
        freed_at = math.ceil(max(0.0, (b.until - t0).total_seconds()) / slot)
        free[idx[b.node], freed_at:] += b.gpus
        running[:freed_at] += b.gpus
    cap = _fleet_cap(capacity, t0, window_start, n_slots, slot, policy.headroom_gpus, free, running)
    plan.idle_gpu_hours = float(np.minimum(cap, free.sum(axis=0) + running).clip(min=0).sum()) * slot / 3600
    used = np.zeros_like(free)
    used_fleet = running.copy()
    largest = int(free.max()) if free.size else 0
    remaining_hours = remaining_hours or {}

    tails: list[tuple[OfflineJob, int, int]] = []

    def place(job: OfflineJob, s: int, n: int, length: int, partial: bool) -> None:
        used[n, s:s + length] += job.gpus
        used_fleet[s:s + length] += job.gpus
        start = t0 + timedelta(seconds=s * slot)
        plan.placements.append(Placement(job.name, names[n], job.gpus, start,
                                         start + timedelta(seconds=length * slot), partial=partial))

    for job in order_jobs(jobs):
        hours = remaining_hours.get(job.name, job.estimated_hours)
        d = max(1, math.ceil(hours * 3600 * policy.runtime_margin / slot))
        limit = n_slots
        if job.deadline is not None:
            limit = min(limit, int((job.deadline - t0).total_seconds() // slot))
        tail_ok = job.checkpointable and policy.tail_segments and limit == n_slots
        d_min = min(d, max(1, math.ceil(policy.min_segment_minutes * 60 / slot)))
        if (d_min if tail_ok else d) > limit:
            why = "deadline" if job.deadline is not None and limit < n_slots else "window end"
            plan.unplaced.append(Unplaced(job.name, f"needs {hours * policy.runtime_margin:.2f} h, "
                                                    f"only {max(limit, 0) * slot / 3600:.2f} h left before the {why}"))
            continue
        if job.gpus > largest:
            plan.unplaced.append(Unplaced(job.name, f"needs {job.gpus} GPUs on one node; "
                                                    f"the most idle on a node is {largest}"))
            continue
        s = None
        if d <= limit:
            s, n = _first_fit(free[:, :limit] - used[:, :limit], cap[:limit] - used_fleet[:limit], job.gpus, d)
        if s is not None:
            place(job, s, n, d, partial=False)
        elif tail_ok:
            tails.append((job, d, d_min))
        else:
            plan.unplaced.append(Unplaced(job.name, "no idle capacity long enough before the window closes"))

    # second pass: checkpointable jobs that cannot finish tonight fill what whole jobs left over
    for job, d, d_min in tails:
        s, n = _tail_fit(free - used, cap - used_fleet, job.gpus, d, d_min)
        if s is None:
            plan.unplaced.append(Unplaced(job.name, "no idle capacity long enough before the window closes"))
        else:
            place(job, s, n, n_slots - s, partial=True)
    return plan


def _first_fit(node_slack: np.ndarray, fleet_slack: np.ndarray, gpus: int, d: int) -> tuple[int | None, int]:
    """Earliest start with ``gpus`` free for ``d`` slots on one node and in the fleet; best-fit node."""
    node_min = sliding_window_view(node_slack, d, axis=1).min(axis=2)
    fleet_min = sliding_window_view(fleet_slack, d).min(axis=1)
    ok = (node_min >= gpus) & (fleet_min >= gpus)[None, :]
    starts = np.flatnonzero(ok.any(axis=0))
    if starts.size == 0:
        return None, 0
    s = int(starts[0])
    fits = np.flatnonzero(ok[:, s])
    return s, int(fits[np.argmin(node_min[fits, s])])


def _tail_fit(node_slack: np.ndarray, fleet_slack: np.ndarray, gpus: int, d: int,
              d_min: int) -> tuple[int | None, int]:
    """Earliest start of a segment from there to the end (shorter than ``d``, at least ``d_min``)."""
    limit = fleet_slack.size
    node_suffix = np.minimum.accumulate(node_slack[:, ::-1], axis=1)[:, ::-1]
    fleet_suffix = np.minimum.accumulate(fleet_slack[::-1])[::-1]
    ok = (node_suffix >= gpus) & (fleet_suffix >= gpus)[None, :]
    ok[:, :max(0, limit - d + 1)] = False  # a full run would fit there: not a tail
    ok[:, max(0, limit - d_min + 1):] = False  # too short to be worth it
    starts = np.flatnonzero(ok.any(axis=0))
    if starts.size == 0:
        return None, 0
    s = int(starts[0])
    fits = np.flatnonzero(ok[:, s])
    return s, int(fits[np.argmin(node_suffix[fits, s])])


def _fleet_cap(capacity: CapacitySnapshot, t0: datetime, window_start: datetime, n_slots: int, slot: int,
               headroom: int, free: np.ndarray, running: np.ndarray) -> np.ndarray:
    """Batch GPUs allowed per slot: allocatable minus forecast inference demand minus headroom."""
    if not capacity.demand_forecast:  # no history: what is idle now is all there is
        return np.full(n_slots, int(free[:, 0].sum() + running[0]) - headroom if n_slots else 0,
                       dtype=np.int64)
    f = capacity.demand_forecast
    offsets = (t0 - window_start).total_seconds() + np.arange(n_slots) * slot
    # a plan slot may straddle two forecast slots: take the larger forecast of both
    lo = np.clip((offsets // capacity.forecast_slot_seconds).astype(int), 0, len(f) - 1)
    hi = np.clip(((offsets + slot - 1) // capacity.forecast_slot_seconds).astype(int), 0, len(f) - 1)
    demand = np.maximum(np.asarray(f)[lo], np.asarray(f)[hi])
    return (capacity.allocatable - np.ceil(demand) - headroom).astype(np.int64)
