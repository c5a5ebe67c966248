"""What the rehearsal measures, from watches on the API (as an auditor outside the product would):

* :class:`ServingGuard`: **PDB violations** (fewer ready pods serving than the PodDisruptionBudget
  allows) and **HPA overrides** (the replica count of a Deployment an HPA scales, written by anyone
  but the HPA controller);
* :class:`PodClock`: when each pod was created, scheduled, started and became ready, on the cluster's
  clock (inference pods waiting for GPUs that offline jobs held).

PDB floor. The budget allows ``maxUnavailable`` below the serving size its owner asks for: the
Deployment's ``spec.replicas``, the scale the disruption controller takes as the expected count (the
HPA writes it; a write by anyone else is an override, counted apart). Capacity just asked for is
not yet there, so the size counts only as far as pods have been ready since it was last raised:
``floor = min(replicas, most ready since the last raise) - maxUnavailable``. A violation is each time
the ready, not terminating pods the PDB selects drop below the floor. Watches of different kinds
arrive in no set order (a pod's deletion can be seen before the scale-down that caused it), so a
drop below the floor is confirmed against a fresh read of the Deployment before it counts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.common.errors import InferopsError
from flows.common.kube import (
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    PODS,
    Expired,
    Kind,
    Kube,
    selector_matches,
)

log = logging.getLogger("inferops.standins.rehearsal")
PDBS = Kind("PodDisruptionBudget", "poddisruptionbudgets", "policy")
HPA_MANAGER = "kube-controller-manager"


class Informer:
    """List, then watch from that version (list again on 410), calling ``handle(type, obj)`` in order.
    ``synced`` is set once the first list was handled."""

    def __init__(self, kube: Kube, kind: Kind, namespace: str | None, handle: Callable[[str, dict], None], *,
                 labels: str | None = None) -> None:
        self.kube, self.kind, self.namespace, self.handle, self.labels = kube, kind, namespace, handle, labels
        self.synced = threading.Event()
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"informer-{kind.plural}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        if not self.synced.wait(15):
            raise RuntimeError(f"informer on {self.kind.plural}: no first list ({self.errors[-1:]})")
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    items, version = self.kube.list_at(self.kind, self.namespace, labels=self.labels)
                    for o in items:
                        self.handle("ADDED", o)
                    self.synced.set()
                for kind, obj in self.kube.watch(self.kind, self.namespace, version, labels=self.labels, timeout_s=30):
                    version = obj["metadata"].get("resourceVersion") or version
                    self.handle(kind, obj)
                    if self._stop.is_set():
                        return
            except Expired:
                version = ""
            except InferopsError as exc:
                self.errors.append(str(exc))
                version = ""
                self._stop.wait(0.5)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def replicas_manager(dep: dict[str, Any]) -> str:
    """Who last wrote ``spec.replicas`` (server-side field management)."""
    for e in dep["metadata"].get("managedFields") or []:
        if "f:replicas" in ((e.get("fieldsV1") or {}).get("f:spec") or {}):
            return e.get("manager", "")
    return ""


@dataclass
class Violation:
    at: str
    ready: int
    floor: int
    desired: int


@dataclass
class Override:
    at: str
    manager: str
    before: int
    after: int


class ServingGuard:
    """PDB violations and HPA overrides of one Deployment (its PDB and HPA found by selector/target)."""

    def __init__(self, kube: Kube, namespace: str, deployment: str, pdb: str, clock: Callable[[], str]) -> None:
        self.kube, self.namespace, self.deployment, self.pdb_name, self.clock = kube, namespace, deployment, pdb, clock
        self._lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.selector: dict[str, Any] | None = None
        self.max_unavailable: Any = 1
        self.has_hpa = False
        self.replicas: int | None = None
        self.last_desired = 0
        self.high_water = 0
        self.violated = False
        self.violations: list[Violation] = []
        self.overrides: list[Override] = []
        self.min_margin: int | None = None  # smallest (ready - floor) seen
        self._informers: list[Informer] = []

    def start(self) -> ServingGuard:
        pdb = self.kube.get(PDBS, self.namespace, self.pdb_name)
        self.selector = pdb["spec"]["selector"]
        spec = pdb["spec"]
        self.max_unavailable = spec.get("maxUnavailable", 0 if spec.get("minAvailable") is None else None)
        self.min_available = spec.get("minAvailable")
        for kind, handle in ((HORIZONTAL_POD_AUTOSCALERS, self._hpa), (DEPLOYMENTS, self._deployment),
                             (PODS, self._pod)):
            self._informers.append(Informer(self.kube, kind, self.namespace, handle).start())
        return self

    def stop(self) -> None:
        for i in self._informers:
            i.stop()

    @property
    def errors(self) -> list[str]:
        return [e for i in self._informers for e in i.errors]

    # -- events ----------------------------------------------------------------------------------
    def _hpa(self, kind: str, hpa: dict[str, Any]) -> None:
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != self.deployment:
            return
        with self._lock:
            self.has_hpa = kind != "DELETED"

    def _deployment(self, kind: str, dep: dict[str, Any]) -> None:
        if dep["metadata"]["name"] != self.deployment or kind == "DELETED":
            return
        with self._lock:
            n = int(dep["spec"].get("replicas", 1))
            if self.replicas is not None and n != self.replicas and self.has_hpa:
                who = replicas_manager(dep)
                if who != HPA_MANAGER:
                    self.overrides.append(Override(self.clock(), who, self.replicas, n))
                    log.warning("HPA override: %s set %s replicas %d -> %d", who, self.deployment, self.replicas, n)
            self.replicas = n
            self._check()

    def _pod(self, kind: str, pod: dict[str, Any]) -> None:
        with self._lock:
            if kind == "DELETED":
                self.pods.pop(pod["metadata"]["uid"], None)
            else:
                self.pods[pod["metadata"]["uid"]] = pod
            self._check()

    # -- the floor -------------------------------------------------------------------------------
    def serving(self) -> int:
        return sum(1 for p in self.pods.values() if not p["metadata"].get("deletionTimestamp") and _ready(p)
                   and selector_matches(self.selector, p["metadata"].get("labels") or {}))

    def _check(self) -> None:
        if self.selector is None or self.replicas is None:
            return
        desired, ready = self.replicas, self.serving()
        if ready < self._floor(desired, ready, commit=False):
            try:  # confirm against the scale as it is now, not as the Deployment watch has told so far
                self.replicas = desired = int(self.kube.get(DEPLOYMENTS, self.namespace, self.deployment)
                                              ["spec"].get("replicas", 1))
            except InferopsError as exc:
                self._informers[0].errors.append(f"confirming a PDB floor: {exc}")
        floor = self._floor(desired, ready, commit=True)
        margin = ready - floor
        self.min_margin = margin if self.min_margin is None else min(self.min_margin, margin)
        now = ready < floor
        if now and not self.violated:
            self.violations.append(Violation(self.clock(), ready, floor, desired))
            log.warning("PDB floor: %d ready %s pods, %d allowed (desired %d)", ready, self.deployment, floor, desired)
        self.violated = now


    def _floor(self, desired: int, ready: int, *, commit: bool) -> int:
        high_water = ready if desired > self.last_desired else self.high_water  # new capacity counts as it comes up
        high_water = max(high_water, ready)
        if commit:
            self.last_desired, self.high_water = desired, high_water
        size = min(desired, high_water)
        if self.min_available is not None:
            return _amount(self.min_available, size, up=True)
        return size - _amount(self.max_unavailable, size, up=True)


def _amount(value: Any, total: int, up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        x = int(value[:-1]) * total / 100
        return math.ceil(x) if up else math.floor(x)
    return int(value or 0)


@dataclass
class PodTimes:
    name: str
    created: float
    scheduled: float | None = None
    started: float | None = None
    ready: float | None = None
    node: str = ""
    gone: bool = False
    notes: list[str] = field(default_factory=list)


class PodClock:
    """When each pod matching ``labels`` was created, scheduled, started and became ready (the
    cluster's timestamps, in epoch seconds of its clock)."""

    def __init__(self, kube: Kube, namespace: str, labels: str) -> None:
        from datetime import datetime

        self._parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
        self.times: dict[str, PodTimes] = {}
        self._lock = threading.Lock()
        self._informer = Informer(kube, PODS, namespace, self._pod, labels=labels)

    def start(self) -> PodClock:
        self._informer.start()
        return self

    def stop(self) -> None:
        self._informer.stop()

    def _pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        with self._lock:
            t = self.times.setdefault(meta["uid"], PodTimes(meta["name"], self._parse(meta["creationTimestamp"])))
            t.node = pod["spec"].get("nodeName") or t.node
            for c in status.get("conditions") or []:
                when = c.get("lastTransitionTime")
                if c.get("status") != "True" or not when:
                    continue
                if c["type"] == "PodScheduled" and t.scheduled is None:
                    t.scheduled = self._parse(when)
                if c["type"] == "Ready" and t.ready is None:
                    t.ready = self._parse(when)
            for cs in status.get("containerStatuses") or []:
                running = (cs.get("state") or {}).get("running") or {}
                if running.get("startedAt") and t.started is None:
                    t.started = self._parse(running["startedAt"])
            t.gone = kind == "DELETED"

    def since(self, t0: float) -> list[PodTimes]:
        with self._lock:
            return [t for t in self.times.values() if t.created > t0]
