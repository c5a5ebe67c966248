"""The idle-GPU room's Kubernetes side, over the shared adapter (:mod:`flows.common.kube`), on dicts.

It implements :class:`~flows.idle_gpu.controller.NightCluster`: GPU capacity, this room's Jobs and
their pods as :class:`~flows.idle_gpu.tracker.JobView`, and submit (create or adopt), suspend (a
merge patch of ``spec.suspend``) and delete (already gone is success).

Pods are *watched*, not polled (:class:`PodWatch`, an informer: list once, then a watch from that
version, list again on 410 Gone). A preempted pod is deleted once its grace period is over, which
can fall between two ticks of the night window; the watch keeps the last state of every deleted pod
(a tombstone) until its Job is gone, so the tracker always sees the ``DisruptionTarget`` condition
and requeues a checkpointable job every time. The watch also wakes the night window
(:meth:`Cluster.changes`) when a pod ends, is deleted or is marked for disruption, so freed GPUs are
refilled and a preempted job requeued at once, not at the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flows.common.errors import BadInput, InferopsError
from flows.common.kube import (
    HORIZONTAL_POD_AUTOSCALERS,
    JOBS,
    NODES,
    PODS,
    PRIORITY_CLASSES,
    Expired,
    Forbidden,
    Kind,
    Kube,
    NotFound,
    WatchCancel,
)
from flows.idle_gpu.capacity import PRODUCT_LABEL, kube_nodes, scale_up_gpus, waiting_gpus
from flows.idle_gpu.manifest import JOB_LABEL, SELECTOR, WINDOW_LABEL
from flows.idle_gpu.models import NodeCapacity
from flows.idle_gpu.tracker import JobView, PodView

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
log = logging.getLogger("inferops")


class PodWatch:
    """The pods of one label selector, kept current by a watch on a background thread.

    :meth:`pods` returns the live pods and the tombstones (last state of pods deleted since), and
    :meth:`forget` drops tombstones whose Job is gone. Until the first list succeeds, and after the
    watch thread died, :meth:`synced` is False and the caller lists pods itself. :attr:`ended` (a watch
    of pods only) is set whenever a pod ends (Succeeded, Failed), is deleted, or gets a ``DisruptionTarget`` condition:
    GPUs are free or about to be, and whoever waits on it clears it.
    """

    def __init__(self, kube: Kube, namespace: str | None, selector: str | None, *, watch_timeout_s: int = 60,
                 tombstones: bool = True, kind: Kind = PODS) -> None:
        self.kube, self.namespace, self.selector, self.watch_timeout_s = kube, namespace, selector, watch_timeout_s
        self.kind = kind  # pods, or any kind listed the same way (nodes, autoscalers: a cache, no tombstones)
        self.tombstones = tombstones  # False: a deleted pod is simply gone (a cache of live pods)
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, Any]] = {}
        self._gone: dict[str, dict[str, Any]] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._cancel = WatchCancel()
        self.ended = threading.Event()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"{kind.plural}-watch-{namespace or 'all'}", daemon=True)

    def start(self, timeout_s: float = 10.0) -> PodWatch:
        """Start watching; wait until the first list is in (or the watch gave up: not allowed)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._synced.wait(0.02) and self._thread.is_alive() and time.monotonic() < deadline:
            pass
        return self

    def stop(self) -> None:
        """End the watch thread: a watch it is reading is shut down, not left to the server's timeout."""
        self._stop.set()
        self._cancel.cancel()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def synced(self) -> bool:
        return self._synced.is_set() and self._thread.is_alive()

    def pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return [*self._live.values(), *self._gone.values()]

    def forget(self, job_uids: set[str]) -> None:
        """Drop tombstones of pods whose Job is not among ``job_uids`` (deleted: nothing to learn)."""
        with self._lock:
            for uid in [u for u, p in self._gone.items() if _job_uid(p) not in job_uids]:
                del self._gone[uid]

    def _relist(self) -> str:
        items, version = self.kube.list_at(self.kind, self.namespace, labels=self.selector)
        with self._lock:
            fresh = {p["metadata"]["uid"]: p for p in items}
            for uid, pod in self._live.items():  # gone while we were not watching: keep what we knew
                if uid not in fresh and self.tombstones:
                    self._gone[uid] = pod
            self._live = fresh
        self._synced.set()
        return version

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._relist()
                for kind, pod in self.kube.watch(self.kind, self.namespace, version, labels=self.selector,
                                                 timeout_s=self.watch_timeout_s, cancel=self._cancel):
                    version = pod["metadata"].get("resourceVersion") or version
                    uid = pod["metadata"]["uid"]
                    with self._lock:
                        if kind == "DELETED":
                            self._live.pop(uid, None)
                            if self.tombstones:
                                self._gone[uid] = pod
                        else:
                            self._live[uid] = pod
                    if self.kind == PODS and (kind == "DELETED" or _ending(pod)):
                        self.ended.set()
                    if self._stop.is_set():
                        return
            except Expired:
                version = ""
            except Forbidden as exc:  # credentials that may list but not watch: the callers list instead
                log.warning("%s watch in %s: %s; listing every tick instead", self.kind.plural,
                            self.namespace or "all namespaces", exc)
                return
            except InferopsError as exc:  # unreachable, or a 5xx: list again after a pause
                if self._stop.is_set():
                    return
                self.errors += 1
                log.warning("%s watch in %s: %s; listing again", self.kind.plural, self.namespace or "all namespaces", exc)
                version = ""
                self._stop.wait(min(30.0, 0.5 * 2 ** min(self.errors, 6)))


def _ending(pod: dict[str, Any]) -> bool:
    """The pod has ended or is being disrupted (preempted, evicted): its GPUs are, or soon will be, free."""
    status = pod.get("status") or {}
    return status.get("phase") in ("Succeeded", "Failed") or _disrupted(status.get("conditions") or [])


def _disrupted(conditions: list[dict[str, Any]]) -> bool:
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions)


def _job_uid(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("labels") or {}).get(CONTROLLER_UID, "")


class Cluster:
    def __init__(self, kube: Kube, namespace: str, product_label: str = PRODUCT_LABEL) -> None:
        self.kube, self.namespace, self.product_label = kube, namespace, product_label
        self._watch: PodWatch | None = None
        self._caches: dict[str, PodWatch | None] = {}  # cluster-wide pods, nodes, autoscalers (None: list)
        self._waiting = 0
        self._coming: dict[str, int] = {}
        self._hpas_readable = True

    def nodes(self) -> tuple[list[NodeCapacity], list[str]]:
        """GPU nodes as Kubernetes sees them (free = allocatable - requested), and notes."""
        pods = self._cached(PODS)
        self._waiting = waiting_gpus(pods, self.namespace)
        self._coming = scale_up_gpus(self._hpas(), pods, self.namespace)
        nodes, notes = kube_nodes(pods, self._cached(NODES), self.product_label)
        if not self._hpas_readable:
            notes.append("HorizontalPodAutoscalers not read (the credentials may not list them): a night does "
                         "not wait for an autoscaler's next scale-up wave; apply deploy/k8s (base/rbac.yaml)")
        return nodes, notes

    def _cached(self, kind: Kind) -> list[dict[str, Any]]:
        """Every object of ``kind`` in the cluster, from a cluster-wide watch (an informer: one list,
        then changes) rather than a list of the whole cluster every tick; listed while the watch has
        not synced, and from the first time it could not run on (watch not allowed)."""
        cache = self._caches.get(kind.plural, ...)
        if cache is ...:
            cache = self._caches[kind.plural] = PodWatch(self.kube, None, None, tombstones=False, kind=kind).start()
        elif cache is not None and not cache.alive:
            cache = self._caches[kind.plural] = None
        if cache is not None and cache.synced:
            return cache.pods()
        return self.kube.list(kind)

    def _hpas(self) -> list[dict[str, Any]]:
        if not self._hpas_readable:
            return []
        try:
            return self._cached(HORIZONTAL_POD_AUTOSCALERS)
        except Forbidden as exc:  # older RBAC: go on without the signal, and say so once
            log.warning("cannot list HorizontalPodAutoscalers (%s): not waiting for scale-up waves", exc)
            self._hpas_readable = False
            return []

    def check_priority_classes(self, names: Iterable[str]) -> list[str]:
        """Every PriorityClass the Jobs will name exists: a missing one makes the Job controller's every
        pod creation fail admission, and the night would fill nothing. Raises :class:`BadInput` naming
        it; returns a note for each class the credentials may not read (not checked)."""
        notes = []
        for name in dict.fromkeys(names):
            try:
                self.kube.get(PRIORITY_CLASSES, None, name)
            except NotFound:
                raise BadInput(f"PriorityClass {name!r} does not exist: apply deploy/k8s "
                               f"(base/priorityclasses.yaml) or name another one") from None
            except Forbidden:
                notes.append(f"PriorityClass {name!r} not checked: the credentials may not get priorityclasses")
        return notes

    def waiting_gpus(self) -> int:
        """GPUs pods of other workloads waited for at the last :meth:`nodes` (``capacity.waiting_gpus``)."""
        return self._waiting

    def scale_up_gpus(self) -> dict[str, int]:
        """GPUs the next waves of autoscalers held back by their scale-up rate will want, at the last
        :meth:`nodes` (``capacity.scale_up_gpus``)."""
        return self._coming

    def submit(self, manifest: dict[str, Any]) -> bool:
        """Create the Job; False if it already exists (a re-run adopts it: idempotent)."""
        return self.kube.create_or_adopt(JOBS, manifest, self.namespace)[1]

    def watch(self, selector: str) -> PodWatch:
        """The pod watch of ``selector``, started on first use (a new selector starts a new one)."""
        if self._watch is None or self._watch.selector != selector or not self._watch.synced:
            if self._watch is not None:
                self._watch.stop()
            self._watch = PodWatch(self.kube, self.namespace, selector).start()
        return self._watch

    def changes(self) -> threading.Event | None:
        """Set when a pod of this room ended, was deleted or is being disrupted since it was last
        cleared (see :class:`PodWatch`); None until the watch has started (then only ticks poll)."""
        return self._watch.ended if self._watch is not None and self._watch.synced else None

    def close(self) -> None:
        """Stop every watch this cluster started, and wait (briefly) for their threads to end."""
        watches = [w for w in (self._watch, *self._caches.values()) if w is not None]
        for w in watches:
            w.stop()
        for w in watches:
            w.join(5.0)
        self._watch, self._caches = None, {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def views(self, window_tag: str | None = None) -> list[JobView]:
        selector = SELECTOR + (f",{WINDOW_LABEL}={window_tag}" if window_tag else "")
        jobs = self.kube.list(JOBS, self.namespace, labels=selector)
        watch = self.watch(selector)
        if watch.synced:
            pods = watch.pods()
            watch.forget({j["metadata"].get("uid", "") for j in jobs})
        else:  # no watch (yet): what a list shows now
            log.warning("pods of %s are listed, not watched: a preemption between two ticks can be missed",
                        self.namespace)
            pods = self.kube.list(PODS, self.namespace, labels=selector)
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            by_uid.setdefault(_job_uid(p), []).append(p)
        return [_view(j, by_uid.get(j["metadata"].get("uid", ""), [])) for j in jobs]

    def suspend(self, name: str) -> bool:
        """Stop a Job gracefully: its pods get SIGTERM and their grace period. False if it is gone."""
        try:
            self.kube.merge_patch(JOBS, self.namespace, name, {"spec": {"suspend": True}})
            return True
        except NotFound:
            return False

    def delete(self, name: str, grace_period_s: int) -> None:
        """Delete a Job and its pods; already gone is success."""
        self.kube.delete(JOBS, self.namespace, name, grace_period_s=grace_period_s, propagation="Background")


def _when(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _view(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobView:
    meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        state, reason = "complete", ""
    elif "Failed" in conds:
        state, reason = "failed", conds["Failed"].get("reason") or "Failed"
    elif spec.get("suspend"):
        state, reason = "suspended", ""
    else:
        state, reason = "active", ""
    return JobView(
        k8s_name=meta["name"],
        job=(meta.get("labels") or {}).get(JOB_LABEL, ""),
        state=state,
        reason=reason,
        node=(meta.get("annotations") or {}).get("inferops.io/planned-node", ""),
        pods=tuple(_pod(p) for p in pods),
    )


def _pod(p: dict[str, Any]) -> PodView:
    status = p.get("status") or {}
    finished = None
    waiting, message = "", ""
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        term = state.get("terminated") or {}
        if term.get("finishedAt"):
            finished = max(filter(None, [finished, _when(term["finishedAt"])]))
        if state.get("waiting") and not waiting:
            waiting, message = state["waiting"].get("reason") or "", state["waiting"].get("message") or ""
    conds = status.get("conditions") or []
    disrupted = _disrupted(conds)
    unschedulable = None
    sched = next((c for c in conds if c.get("type") == "PodScheduled"), None)
    if (sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable"
            and not status.get("nominatedNodeName") and not (p.get("spec") or {}).get("nodeName")):
        unschedulable = _when(sched.get("lastTransitionTime"))
        message = message or sched.get("message") or ""
    return PodView(uid=p["metadata"]["uid"], phase=status.get("phase") or "Pending",
                   started=_when(status.get("startTime")), finished=finished, disrupted=disrupted,
                   waiting=waiting, message=message, unschedulable_since=unschedulable)
