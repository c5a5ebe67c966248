"""What happened to each job during the window: outcomes, preemptions, GPU-hours. Pure logic.

The flow feeds it what it reads from the cluster (``JobView``/``PodView``) each tick; the tracker
answers with the Jobs to delete. A preempted job is always deleted (its replacement pod would wait,
pinned, for the node inference just took). One that can checkpoint goes back to the queue with what
is left of its estimate, and the planner places it again (``-rN`` attempts); one that cannot is done
for tonight. The pods it is shown include those already gone since the last tick (the cluster side
watches them), so a preemption between two ticks is never missed.

A pod whose container can never start (``CreateContainerConfigError``: e.g. a root image under
``runAsNonRoot``) fails its job at once, and the Job is deleted so its GPUs go back to the pool
instead of being held until the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flows.idle_gpu.models import OfflineJob, Outcome


@dataclass(frozen=True)
class PodView:
    uid: str
    phase: str  # Pending | Running | Succeeded | Failed
    started: datetime | None
    finished: datetime | None
    disrupted: bool  # DisruptionTarget: preempted or evicted
    waiting: str = ""  # a container's waiting reason (ContainerCreating, CreateContainerConfigError, ...)
    message: str = ""  # its message
    # the scheduler found no room for it (PodScheduled False, Unschedulable, nothing nominated to
    # preempt) since then; ``message`` says why
    unschedulable_since: datetime | None = None


# waiting reasons no retry fixes: the job fails and its GPUs are released at once
NEVER_STARTS = frozenset({"CreateContainerConfigError", "CreateContainerError", "InvalidImageName",
                          "ErrImageNeverPull"})


def _stuck(pods: tuple[PodView, ...], now: datetime, after_s: float) -> bool:
    """Every pod of the attempt has waited for a node with room at least ``after_s``, none started."""
    return bool(pods) and all(p.phase == "Pending" and p.started is None and p.unschedulable_since is not None
                              and (now - p.unschedulable_since).total_seconds() >= after_s for p in pods)


@dataclass(frozen=True)
class JobView:
    k8s_name: str
    job: str  # the queue's job name (label inferops.io/job)
    state: str  # active | complete | failed | suspended
    reason: str
    node: str
    pods: tuple[PodView, ...]


@dataclass
class JobRecord:
    job: OfflineJob
    k8s_name: str | None = None  # the current attempt's Job; None: waiting to be (re)submitted
    node: str | None = None
    submitted_at: datetime | None = None
    partial: bool = False  # planned as a tail segment, to be stopped at the window's end
    outcome: Outcome | None = None  # None: pending or active; requeued: preempted, resumes from checkpoint
    preemptions: int = 0
    replans: int = 0  # attempts withdrawn unstarted (their node had no room) and planned again
    attempt: int = 0
    remaining_hours: float | None = None  # estimate left after a checkpoint
    reason: str = ""
    gpu_seconds: float = 0.0  # pods' run time x GPUs, every attempt

    @property
    def waiting(self) -> bool:
        return self.k8s_name is None and self.outcome in (None, Outcome.requeued)

    @property
    def active(self) -> bool:
        return self.k8s_name is not None and self.outcome in (None, Outcome.requeued)

    def to_dict(self) -> dict:
        return {"job": self.job.name, "k8s_job": self.k8s_name, "node": self.node, "gpus": self.job.gpus,
                "checkpointable": self.job.checkpointable, "outcome": (self.outcome or Outcome.not_scheduled).value,
                "preemptions": self.preemptions, "replans": self.replans,
                "attempts": self.attempt + (self.k8s_name is not None),
                "gpu_hours": round(self.gpu_seconds / 3600, 4), "partial": self.partial, "reason": self.reason}


@dataclass
class Tracker:
    jobs: list[OfflineJob]
    records: dict[str, JobRecord] = field(default_factory=dict)
    # pod uid -> (queue job, Kubernetes Job, start, last seen running or finish)
    _pods: dict[str, tuple[str, str, datetime, datetime]] = field(default_factory=dict)
    _retired: set[str] = field(default_factory=set)  # Jobs deleted after a preemption
    api_errors: int = 0  # ticks skipped because the cluster did not answer
    deferred_ticks: int = 0  # ticks that started nothing: pods of other workloads waited for GPUs
    reserved_ticks: int = 0  # ticks that kept GPUs free for an autoscaler's next scale-up waves
    woken_ticks: int = 0  # ticks that came early: the pod watch saw a pod of ours end or be preempted

    def __post_init__(self) -> None:
        self.records = {j.name: JobRecord(j) for j in self.jobs}

    def submitted(self, job: str, k8s_name: str, node: str, at: datetime, partial: bool = False) -> None:
        r = self.records[job]
        r.k8s_name, r.node, r.submitted_at, r.partial = k8s_name, node, at, partial

    def pending(self) -> list[OfflineJob]:
        return [r.job for r in self.records.values() if r.waiting]

    def remaining_hours(self) -> dict[str, float]:
        return {n: r.remaining_hours for n, r in self.records.items() if r.remaining_hours is not None}

    def active(self) -> list[JobRecord]:
        return [r for r in self.records.values() if r.active]

    def skip(self, job: str, reason: str) -> None:
        self.records[job].reason = reason

    def observe(self, views: list[JobView], now: datetime, replan_after_s: float | None = None) -> list[str]:
        """Update from the cluster; returns the Kubernetes Jobs to delete (until they are gone).

        ``replan_after_s``: an attempt whose pods have all been unschedulable this long (its planned
        node no longer has room: inference took the GPUs between the plan and the pod) is withdrawn,
        unstarted, and the job goes back to the queue to be planned again from the live capacity.
        """
        to_delete = []
        for v in views:
            r = self.records.get(v.job)
            if r is None:
                continue
            for p in v.pods:
                self._pod_time(r.job.name, v.k8s_name, p, now)
            if v.k8s_name in self._retired:
                to_delete.append(v.k8s_name)
                continue
            if r.k8s_name is None and r.outcome is None:  # adopted from an earlier run of this window
                r.k8s_name, r.node = v.k8s_name, v.node
            if v.k8s_name != r.k8s_name:
                continue
            broken = next((p for p in v.pods if p.waiting in NEVER_STARTS), None)
            if any(p.disrupted for p in v.pods):
                self._preempted(r, now)
                to_delete.append(v.k8s_name)
            elif broken is not None and r.outcome in (None, Outcome.requeued):
                r.outcome, r.reason = Outcome.failed, f"{broken.waiting}: {broken.message}".strip(": ")
                self._retired.add(v.k8s_name)  # released now, not at its deadline
                to_delete.append(v.k8s_name)
            elif (replan_after_s is not None and v.state == "active" and r.outcome in (None, Outcome.requeued)
                  and _stuck(v.pods, now, replan_after_s)):
                msg = v.pods[0].message
                self._retired.add(v.k8s_name)
                r.reason = f"not placed on {v.node or 'its node'} ({msg or 'Unschedulable'}): planned again"
                r.k8s_name, r.node, r.partial = None, None, False
                r.attempt += 1
                r.replans += 1
                to_delete.append(v.k8s_name)
            elif v.state == "complete":
                r.outcome, r.reason = Outcome.done, ""
            elif v.state == "suspended" and r.outcome in (None, Outcome.requeued) and self._ran(v.k8s_name):
                # (a Job that never ran is suspended by Kueue until admitted: still pending)
                r.outcome, r.reason = Outcome.stopped, "suspended (inferops idle-gpu stop)"
            elif v.state == "failed":
                stopped = v.reason == "DeadlineExceeded"
                r.outcome = Outcome.stopped if stopped else Outcome.failed
                r.reason = "active deadline reached at the window's end" if stopped else v.reason
        return to_delete

    def _preempted(self, r: JobRecord, now: datetime) -> None:
        assert r.k8s_name is not None
        self._retired.add(r.k8s_name)
        r.preemptions += 1
        if not r.job.checkpointable:
            r.outcome, r.reason = Outcome.preempted, "preempted by inference; cannot checkpoint"
            return
        ran_h = sum((last - start).total_seconds() for j, _, start, last in self._pods.values()
                    if j == r.job.name) / 3600
        r.remaining_hours = max(0.0, r.job.estimated_hours - ran_h)
        r.outcome, r.reason = Outcome.requeued, "preempted; resumes from its checkpoint when GPUs free up"
        r.k8s_name, r.node, r.partial = None, None, False
        r.attempt += 1

    def _ran(self, k8s_name: str) -> bool:
        return any(k == k8s_name for _, k, _, _ in self._pods.values())

    def _pod_time(self, job: str, k8s_name: str, p: PodView, now: datetime) -> None:
        if p.started is None:
            return
        end = p.finished or (now if p.phase == "Running" else None)
        if end is None:
            return
        prev = self._pods.get(p.uid)
        self._pods[p.uid] = (job, k8s_name, p.started, max(end, prev[3]) if prev else end)

    def stopped(self, running: set[str]) -> None:
        """Jobs suspended at the window's end: those running are stopped; queued requeued ones stay so."""
        for r in self.records.values():
            if r.k8s_name in running and r.outcome in (None, Outcome.requeued):
                r.outcome = Outcome.stopped
                r.reason = "tail segment: stopped at a checkpoint" if r.partial else "still running at the window's end"

    def report(self, window_start: datetime, window_end: datetime, idle_gpu_hours: float) -> dict:
        for r in self.records.values():
            r.gpu_seconds = 0.0
        for job, _, start, last in self._pods.values():
            r = self.records[job]
            r.gpu_seconds += r.job.gpus * max(0.0, (last - start).total_seconds())
        used = sum(r.gpu_seconds for r in self.records.values()) / 3600
        outcomes = {o.value: 0 for o in Outcome}
        for r in self.records.values():
            outcomes[(r.outcome or Outcome.not_scheduled).value] += 1
        return {
            "window_start": window_start.isoformat(), "window_end": window_end.isoformat(),
            "idle_gpu_hours": round(idle_gpu_hours, 4), "gpu_hours_used": round(used, 4),
            "fill_ratio": round(used / idle_gpu_hours, 4) if idle_gpu_hours else 0.0,
            "outcomes": outcomes, "jobs": [r.to_dict() for r in self.records.values()],
            "ticks_skipped_api_errors": self.api_errors,
            "ticks_deferred_to_waiting_pods": self.deferred_ticks,
            "ticks_reserving_for_scale_up": self.reserved_ticks,
            "ticks_woken_by_pod_events": self.woken_ticks,
            "attempts_replanned_unschedulable": sum(r.replans for r in self.records.values()),
        }
