"""The night window as a controller: the run loop, busy accounting, and the stop at the window's end.

No Prefect and no Kubernetes client here. A :class:`NightWindow` drives a narrow
:class:`NightCluster` (the Kubernetes adapter in ``cluster.py``; a simulated fleet in
``benchmarks/idle_gpu_fill.py``; in-memory fakes in the unit tests) with a
:class:`~flows.common.clock.Clock`. Every tick it reads the cluster, lets the
:class:`~flows.idle_gpu.tracker.Tracker` book what happened (and delete preempted Jobs), re-plans
the pending jobs from the live capacity with :func:`~flows.idle_gpu.packer.pack`, and submits what
starts now. A tick starts nothing while pods of other workloads wait for GPUs (inference scaling
up), and while an autoscaler of GPU pods is held back by its scale-up rate it keeps free the GPUs its
next waves will want (a job started on them would be preempted within a minute). At the window's end :meth:`NightWindow.stop` suspends what still runs, waits out the
grace period (the jobs checkpoint), then deletes every Job of the window still suspended:
``ttlSecondsAfterFinished`` never applies to a suspended Job, so nothing else would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from flows.common.clock import Clock, utcnow, wait
from flows.common.errors import BackendUnavailable
from flows.idle_gpu.manifest import job_manifest, window_tag
from flows.idle_gpu.models import CapacitySnapshot, NodeCapacity, PlanPolicy
from flows.idle_gpu.packer import Busy, Plan, pack
from flows.idle_gpu.tracker import JobView, Tracker

log = logging.getLogger("inferops")


class NightCluster(Protocol):
    """What a night window needs from the cluster. Failures to reach it are ``BackendUnavailable``."""

    namespace: str

    def nodes(self) -> tuple[list[NodeCapacity], list[str]]:
        """GPU nodes as the scheduler sees them (free = allocatable - requested), and notes."""

    def waiting_gpus(self) -> int:
        """GPUs that pods of other workloads (inference scaling up) waited for at the last ``nodes()``."""

    def scale_up_gpus(self) -> dict[str, int]:
        """GPUs the next scale-up waves of other workloads will want, per autoscaler held back by its
        scale-up rate, at the last ``nodes()``."""

    def views(self, window_tag: str | None = None) -> list[JobView]:
        """This room's Jobs (of one window, if given) and their pods, including pods deleted since
        the last call (their last state: a preemption between two calls is never missed)."""

    def submit(self, manifest: dict[str, Any]) -> bool:
        """Create the Job; False if it already existed (adopted)."""

    def suspend(self, name: str) -> bool:
        """Stop the Job gracefully; False if it is gone."""

    def delete(self, name: str, grace_period_s: int) -> None:
        """Delete the Job and its pods; already gone is success."""

    # optional: ``changes() -> threading.Event | None``, set when a pod of the room ended, was deleted
    # or is being disrupted (a watch); the window then ticks at once instead of at the next poll


@dataclass
class JobSettings:
    """How this room's Jobs are submitted (the flow's parameters)."""

    priority_class: str = "offline-batch"
    kueue_queue: str | None = None
    # checkpointable jobs get a lower class, so the scheduler preempts them first; empty: priority_class
    checkpointable_priority_class: str = ""

    def priority_for(self, checkpointable: bool) -> str:
        return (self.checkpointable_priority_class or self.priority_class) if checkpointable else self.priority_class


def busy(tracker: Tracker, running: Iterable[JobView], policy: PlanPolicy, now: datetime) -> list[Busy]:
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


class NightWindow:
    """One night: re-plan every tick from the live cluster, submit what starts now, react to preemptions.

    ``excluded``: per node, GPUs Kubernetes calls free but DCGM saw busy at discovery; they stay
    out of every re-plan. Between two ticks it waits ``poll_seconds``, or less when the cluster's
    watch says a pod of ours ended, was deleted or is being preempted (at least
    ``min_poll_seconds`` after the last tick, to bound the load on the apiserver). ``on_tick(running, elapsed_s)`` runs after each tick that reached the
    cluster (the flow's gauges and progress artifact).
    """

    def __init__(self, cluster: NightCluster, tracker: Tracker, snapshot: CapacitySnapshot, *,
                 window_start: datetime, window_end: datetime, policy: PlanPolicy, clock: Clock,
                 poll_seconds: float = 30.0, min_poll_seconds: float = 1.0, excluded: dict[str, int] | None = None,
                 jobs: JobSettings | None = None, on_tick: Callable[[int, float], None] | None = None,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.cluster, self.tracker, self.snapshot = cluster, tracker, snapshot
        self.window_start, self.window_end, self.policy, self.clock = window_start, window_end, policy, clock
        self.poll_seconds, self.min_poll_seconds = poll_seconds, min(min_poll_seconds, poll_seconds)
        self.excluded = excluded or {}
        self.jobs, self.on_tick, self.log = jobs or JobSettings(), on_tick, logger or log
        self.tag = window_tag(window_start)
        self.stop_at = window_end - timedelta(seconds=policy.grace_period_s)

    def _changes(self) -> Any:
        changes = getattr(self.cluster, "changes", None)
        return changes() if changes is not None else None

    def _sleep(self) -> None:
        left = max(0.0, min(self.poll_seconds, (self.stop_at - utcnow(self.clock)).total_seconds()))
        event = self._changes()
        if event is None:
            self.clock.sleep(left)
            return
        first = min(self.min_poll_seconds, left)
        self.clock.sleep(first)
        if wait(self.clock, event, left - first):
            self.tracker.woken_ticks += 1

    def run(self) -> tuple[float, Plan | None]:
        """Until the stop time, or until no job is pending or running. Returns the idle GPU-hours
        of the window (GPUs idle or running our jobs, summed tick by tick; extrapolated at the last
        level to the stop time) and the first plan."""
        c, tracker, policy = self.cluster, self.tracker, self.policy
        idle_gpu_s, first_plan = 0.0, None
        last: datetime | None = None
        level = 0
        while True:
            now = utcnow(self.clock)
            if now >= self.stop_at:
                break
            event = self._changes()
            if event is not None:  # what ends from here on wakes the next wait
                event.clear()
            try:
                views = c.views(self.tag)
                jobs = {v.k8s_name: v.job for v in views}
                for name in tracker.observe(views, now, replan_after_s=policy.replan_unschedulable_s):
                    r = tracker.records.get(jobs.get(name, ""))
                    self.log.warning("job %s: %s; deleting it", name, r.reason if r else "retired")
                    c.delete(name, policy.grace_period_s)
                nodes, _ = c.nodes()
            except BackendUnavailable as exc:  # a blip must not end the night; the Jobs' deadlines still hold
                tracker.api_errors += 1
                self.log.warning("tick skipped: %s", exc)
                self._sleep()
                continue
            current = {r.k8s_name for r in tracker.active()}  # not the preempted attempts being deleted
            running = {v.k8s_name: v for v in views
                       if v.k8s_name in current and any(p.phase == "Running" for p in v.pods)}
            elapsed = (now - last).total_seconds() if last is not None else 0.0
            if self.on_tick is not None:
                self.on_tick(len(running), elapsed)
            if not tracker.pending() and not tracker.active():
                break
            nodes = [n.model_copy(update={"idle": max(0, n.idle - self.excluded.get(n.name, 0))}) for n in nodes]
            ours = sum(tracker.records[v.job].job.gpus for v in running.values() if v.job in tracker.records)
            level = sum(n.idle for n in nodes) + ours
            idle_gpu_s += level * elapsed
            last = now
            waiting = c.waiting_gpus()
            if waiting:
                # inference is scaling up: every GPU that frees up is its; a job started now would be
                # preempted within seconds (and a requeued one again and again), and could hold a pod
                # of theirs back for another grace period
                tracker.deferred_ticks += 1
                if tracker.deferred_ticks == 1 or tracker.deferred_ticks % 20 == 0:
                    self.log.info("%d GPUs wanted by pending pods of other workloads: starting nothing until "
                                  "they are placed (%d ticks so far)", waiting, tracker.deferred_ticks)
                self._sleep()
                continue
            coming = c.scale_up_gpus() if policy.keep_free_for_scale_up else {}
            plan_policy = policy
            if coming:  # between two waves of a surge: keep free what the next ones will want
                tracker.reserved_ticks += 1
                plan_policy = policy.model_copy(update={"headroom_gpus": policy.headroom_gpus + sum(coming.values())})
                if tracker.reserved_ticks == 1 or tracker.reserved_ticks % 20 == 0:
                    self.log.info("scaling up faster than their policies let them: %s; keeping their GPUs free "
                                  "(%d ticks so far)", ", ".join(f"{k} ({v} GPUs to come)" for k, v in coming.items()),
                                  tracker.reserved_ticks)
            plan = pack(tracker.pending(), self.snapshot.model_copy(update={"nodes": nodes, "taken_at": now}),
                        self.window_start, self.window_end, plan_policy, now,
                        busy=busy(tracker, running.values(), policy, now), remaining_hours=tracker.remaining_hours())
            first_plan = first_plan or plan
            for u in plan.unplaced:
                tracker.skip(u.job, u.reason)
            for p in plan.starting_now(now):
                self._submit(p, now)
            self._sleep()
        if last is not None:
            # to the stop time: when every job ended early, the rest of the window still counts as idle
            # capacity (at the last observed level), so the fill ratio is not flattered
            idle_gpu_s += level * max(0.0, (self.stop_at - last).total_seconds())
        return idle_gpu_s / 3600, first_plan

    def _submit(self, p: Any, now: datetime) -> None:
        record = self.tracker.records[p.job]
        manifest = job_manifest(record.job, node=p.node, namespace=self.cluster.namespace,
                                window_start=self.window_start, window_end=self.window_end,
                                active_deadline_s=int((self.stop_at - now).total_seconds()),
                                priority_class=self.jobs.priority_for(record.job.checkpointable), grace_period_s=self.policy.grace_period_s,
                                kueue_queue=self.jobs.kueue_queue, attempt=record.attempt)
        created = self.cluster.submit(manifest)
        self.tracker.submitted(p.job, manifest["metadata"]["name"], p.node, now, p.partial)
        self.log.info("job %s %s on %s (%d GPUs) until %s%s", p.job, "submitted" if created else "adopted",
                      p.node, p.gpus, p.end.isoformat(), " (tail segment)" if p.partial else "")

    def stop(self) -> int:
        """Suspend what still runs (SIGTERM, then the grace period), wait for it, book the outcomes,
        then delete every Job of the window still suspended (the ones just stopped, and any a queue
        manager never admitted): a suspended Job never finishes, so its TTL never deletes it.

        Returns how many Jobs were suspended.
        """
        c, tracker = self.cluster, self.tracker
        views = c.views(self.tag)
        active = [v for v in views if v.state == "active"]
        for v in active:
            c.suspend(v.k8s_name)
        tracker.stopped({v.k8s_name for v in active if any(p.phase == "Running" for p in v.pods)})
        deadline = utcnow(self.clock) + timedelta(seconds=self.policy.grace_period_s + 5)
        while True:
            views = c.views(self.tag)
            tracker.observe(views, utcnow(self.clock))
            if utcnow(self.clock) >= deadline or not any(p.phase == "Running" for v in views for p in v.pods):
                break
            self.clock.sleep(1.0)
        suspended = [v.k8s_name for v in views if v.state == "suspended"]
        for name in suspended:
            c.delete(name, self.policy.grace_period_s)
        if active or suspended:
            self.log.info("window end: %d jobs suspended, %d suspended Jobs deleted", len(active), len(suspended))
        return len(active)
