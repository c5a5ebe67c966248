"""The controllers the product depends on, as kube-controller-manager, kube-scheduler and the kubelet
run them, on the emulator's clock (``store.clock``). One background thread ticks them (``Controllers``);
a tick does nothing unless the store changed or a timer is due.

* ``DeploymentController``: Deployment → ReplicaSet → Pods, rolling update with maxSurge/maxUnavailable,
  Recreate, progress deadline, revision history
  (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/,
  https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/).
* ``PodController``: the scheduler (requests incl. ``nvidia.com/gpu``, nodeSelector, required node
  affinity, taints/tolerations, priority and preemption by graceful deletion) and the kubelet (container
  start, startup/readiness probes, run-to-completion, graceful termination with preStop and SIGTERM).
* ``JobController``: parallelism/completions, backoffLimit, activeDeadlineSeconds, podFailurePolicy,
  suspend, pod-tracking finalizers, and the TTL-after-finished controller.
* ``HPAController``: autoscaling/v2 on metric values the test sets (``set_metric``), with behavior
  (stabilization windows, policies). ``PDBController``: PodDisruptionBudget status.
* ``Events``: core/v1 Events as the components record them (deduplicated with ``count``).

Test hooks (also as annotations on the Deployment / Job / pod template):

* ``deployments.speed(ns, name, s)`` / ``emulator.inferops.dev/seconds-per-replica``: each pod's
  containers take ``s`` seconds to start (default ``deployments.seconds_per_replica``);
* ``deployments.stall(ns, name)`` / ``emulator.inferops.dev/stall: "true"``: containers never start,
  so the rollout misses its progress deadline;
* ``emulator.inferops.dev/ready-after-seconds`` / ``pods.ready_after(ns, owner, s)``: the application
  answers its probes only ``s`` seconds after the container started;
* ``emulator.inferops.dev/run-seconds`` / ``exit-code`` on a Job or pod, ``jobs.run_for(ns, job, s,
  exit_code)``: the container exits after ``s`` seconds; ``emulator.inferops.dev/shutdown-seconds``: how
  long the application takes to exit after SIGTERM (default 0), ``sigterm-exit-code`` (default 143);
* ``pods.image_users[image] = uid``: the user an image runs as (default 1000; 0 is root).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flows.standins.kube_emulator.clock import parse_iso
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.resources import lookup
from flows.standins.kube_emulator.store import Obj, Store
from flows.standins.kube_emulator.validation import selector_matches

DEPLOYMENTS, REPLICASETS, JOBS = lookup("apps", "deployments"), lookup("apps", "replicasets"), lookup("batch", "jobs")
PODS, NODES, EVENTS = lookup("", "pods"), lookup("", "nodes"), lookup("", "events")
HPAS, PDBS = lookup("autoscaling", "horizontalpodautoscalers"), lookup("policy", "poddisruptionbudgets")
PREFIX = "emulator.inferops.dev/"
SECONDS_PER_REPLICA, STALL = PREFIX + "seconds-per-replica", PREFIX + "stall"
RUN_SECONDS, EXIT_CODE = PREFIX + "run-seconds", PREFIX + "exit-code"
READY_AFTER, SHUTDOWN_SECONDS, SIGTERM_EXIT = (PREFIX + "ready-after-seconds", PREFIX + "shutdown-seconds",
                                              PREFIX + "sigterm-exit-code")
GPU = "nvidia.com/gpu"
JOB_FINALIZER = "batch.kubernetes.io/job-tracking"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
          "Ti": 2**40, "Pi": 2**50}
_NEVER = float("inf")


def quantity(value: Any) -> float:
    m = re.fullmatch(r"([+-]?[0-9.]+)(?:([eE][-+]?[0-9]+)|([a-zA-Z]*))", str(value).strip())
    if not m or (m.group(3) and m.group(3) not in _UNITS):
        raise ValueError(f"bad quantity {value!r}")
    base = float(m.group(1) + (m.group(2) or ""))
    return base * _UNITS.get(m.group(3) or "", 1)


def pod_requests(pod: Obj) -> dict[str, float]:
    """Effective requests: the sum over containers or the largest init container, per resource."""
    def of(c: Obj) -> dict[str, float]:
        res = c.get("resources") or {}
        return {k: quantity(v) for k, v in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items()}

    out: dict[str, float] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for k, v in of(c).items():
            out[k] = out.get(k, 0) + v
    for c in (pod.get("spec") or {}).get("initContainers") or []:
        for k, v in of(c).items():
            out[k] = max(out.get(k, 0), v)
    return out


def annotation(obj: Obj, key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def condition(obj: Obj, type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"]
    return None


def set_condition(status: dict, type_: str, value: str, reason: str, message: str, now: str,
                  update_time: bool = False) -> None:
    """Add/replace a condition; lastTransitionTime moves only when the status flips."""
    conds = status.setdefault("conditions", [])
    old = next((c for c in conds if c["type"] == type_), None)
    if old and (old["status"], old.get("reason"), old.get("message")) == (value, reason, message):
        return
    new = {"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": now}
    if update_time:
        new = {"type": type_, "status": value, "lastUpdateTime": now, "lastTransitionTime": now, "reason": reason,
               "message": message}
    if old and old["status"] == value:
        new["lastTransitionTime"] = old["lastTransitionTime"]
    if old:
        conds[conds.index(old)] = new
    else:
        conds.append(new)


def _copy(x: Any) -> Any:
    return json.loads(json.dumps(x))


def write_status(store: Store, res, obj: Obj, status: dict) -> bool:
    if status == obj.get("status"):
        return False
    try:
        store.update(res, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                     {**obj, "status": status}, subresource="status", internal=True)
        return True
    except ApiError:  # deleted or changed meanwhile: the next tick sees the new state
        return False


def add_condition(store: Store, pod: Obj, type_: str, reason: str, message: str) -> None:
    status = _copy(pod.get("status") or {})
    set_condition(status, type_, "True", reason, message, store.now())
    write_status(store, PODS, pod, status)


def owner(obj: Obj, kind: str | None = None) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return ref
    return None


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _ready(pod: Obj) -> bool:
    return condition(pod, "Ready") == "True"


def _percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        x = total * int(value[:-1]) / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(value or 0)


class Events:
    """core/v1 Events; a repeat of (object, reason, message) bumps ``count`` as the recorder does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple[str, str, str], str] = {}

    def reset(self) -> None:
        self._seen.clear()

    def record(self, obj: Obj, reason: str, message: str, component: str, type_: str = "Normal") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = self.store.now()
        name = self._seen.get(key)
        if name:
            ev = self.store.find(EVENTS, ns, name)
            if ev is not None:
                self.store.patch(EVENTS, ns, name, "application/merge-patch+json",
                                 {"count": (ev.get("count") or 1) + 1, "lastTimestamp": now}, internal=True)
                return
        name = f"{meta['name']}.{hashlib.sha1(repr((key, now)).encode()).hexdigest()[:16]}"
        self._seen[key] = name
        try:
            self.store.create(EVENTS, {
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"), "namespace":
                                   meta.get("namespace"), "name": meta["name"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": type_, "count": 1, "firstTimestamp": now,
                "lastTimestamp": now, "source": {"component": component}, "reportingComponent": component,
                "reportingInstance": component}, ns, internal=True)
        except ApiError:  # the namespace is going away
            pass


def create_owned_pod(store: Store, events: Events, owner_obj: Obj, component: str, annotations: dict,
                     finalizers: list[str]) -> Obj | None:
    """A pod from ``owner_obj``'s template, owned by it; a refusal (admission) becomes a FailedCreate event."""
    meta, tmpl = owner_obj["metadata"], owner_obj["spec"]["template"]
    pod = {"metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                        "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                        "annotations": annotations, "finalizers": finalizers,
                        "ownerReferences": [{"apiVersion": owner_obj["apiVersion"], "kind": owner_obj["kind"],
                                             "name": meta["name"], "uid": meta["uid"], "controller": True,
                                             "blockOwnerDeletion": True}]},
           "spec": _copy(tmpl.get("spec") or {})}
    if not finalizers:
        del pod["metadata"]["finalizers"]
    try:
        created = store.create(PODS, pod, meta["namespace"], internal=True)
    except ApiError as exc:  # e.g. Pod Security or a missing PriorityClass, as in Kubernetes
        events.record(owner_obj, "FailedCreate", f"Error creating: {exc.message}", component, "Warning")
        return None
    events.record(owner_obj, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component)
    return created


# ---------------------------------------------------------------------------------------------
# Deployments and ReplicaSets
# ---------------------------------------------------------------------------------------------

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Any) -> str:
    h = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:15], 16)
    out = ""
    while len(out) < 10:
        h, r = divmod(h, len(_HASH_ALPHABET))
        out += _HASH_ALPHABET[r]
    return out


class DeploymentController:
    """apps/v1 Deployment and ReplicaSet controllers."""

    def __init__(self, store: Store, events: Events) -> None:
        self.store, self.events = store, events
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.seconds_per_replica = 0.05  # container start time of a pod (the old "rollout speed")
        self._stalled: set[tuple[str, str]] = set()
        self._speed: dict[tuple[str, str], float] = {}
        self._progress: dict[str, tuple[tuple, float]] = {}

    def stall(self, namespace: str, name: str, stalled: bool = True) -> None:
        """This Deployment's pods never start (until un-stalled): its progress deadline will pass."""
        (self._stalled.add if stalled else self._stalled.discard)((namespace, name))

    def speed(self, namespace: str, name: str, seconds_per_replica: float) -> None:
        """Each pod of this Deployment takes this long to start (wins over its annotation and the default)."""
        self._speed[(namespace, name)] = seconds_per_replica

    def start_delay(self, pod: Obj, deployment: Obj | None) -> float:
        if deployment is not None:
            key = (deployment["metadata"]["namespace"], deployment["metadata"]["name"])
            if key in self._stalled or annotation(deployment, STALL) == "true":
                return _NEVER
            if key in self._speed:
                return self._speed[key]
            if annotation(deployment, SECONDS_PER_REPLICA) is not None:
                return float(annotation(deployment, SECONDS_PER_REPLICA))
        if annotation(pod, STALL) == "true":
            return _NEVER
        if annotation(pod, SECONDS_PER_REPLICA) is not None:
            return float(annotation(pod, SECONDS_PER_REPLICA))
        return self.seconds_per_replica

    def tick(self, t: float) -> float:
        due = _NEVER
        pods_by_rs: dict[str, list[Obj]] = defaultdict(list)
        for p in self.store.peek(PODS):
            ref = owner(p, "ReplicaSet")
            if ref:
                pods_by_rs[ref["uid"]].append(p)
        rs_by_dep: dict[str, list[Obj]] = defaultdict(list)
        for rs in self.store.peek(REPLICASETS):
            ref = owner(rs, "Deployment")
            if ref:
                rs_by_dep[ref["uid"]].append(rs)
        for d in self.store.peek(DEPLOYMENTS):
            if not d["metadata"].get("deletionTimestamp"):
                due = min(due, self._sync_deployment(d, rs_by_dep.get(d["metadata"]["uid"], []), pods_by_rs, t))
        for rs in self.store.peek(REPLICASETS):
            self._sync_replicaset(rs, pods_by_rs.get(rs["metadata"]["uid"], []), t)
        return due

    # ---- ReplicaSet ----
    @staticmethod
    def _available(pod: Obj, min_ready: int, t: float) -> bool:
        if not _ready(pod) or _terminating(pod):
            return False
        if not min_ready:
            return True
        since = next((c.get("lastTransitionTime") for c in pod["status"].get("conditions") or []
                      if c["type"] == "Ready"), None)
        return since is not None and t - parse_iso(since) >= min_ready

    def _sync_replicaset(self, rs: Obj, pods: list[Obj], t: float) -> None:
        meta, spec = rs["metadata"], rs["spec"]
        active = [p for p in pods if not _terminal(p) and not _terminating(p)]
        want = spec.get("replicas", 1) if not meta.get("deletionTimestamp") else 0
        if len(active) < want:
            for _ in range(want - len(active)):
                pod = self._create_pod(rs)
                if pod:
                    active.append(pod)
        elif len(active) > want:
            # the least useful first: unscheduled, then not ready, then the newest
            order = sorted(active, key=lambda p: (bool(p["spec"].get("nodeName")), _ready(p),
                                                  -parse_iso(p["metadata"]["creationTimestamp"])))
            for p in order[:len(active) - want]:
                self._delete_pod(rs, p)
                active.remove(p)
        for p in [p for p in pods if _terminal(p) and not _terminating(p)]:
            self._delete_pod(rs, p, quiet=True)  # a failed pod of a ReplicaSet is replaced and cleaned up
        mr = spec.get("minReadySeconds", 0)
        status = _copy(rs.get("status") or {})
        labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
        status.update(replicas=len(active), observedGeneration=meta.get("generation", 1),
                      fullyLabeledReplicas=sum(all((p["metadata"].get("labels") or {}).get(k) == v
                                                   for k, v in labels.items()) for p in active),
                      readyReplicas=sum(_ready(p) for p in active),
                      availableReplicas=sum(self._available(p, mr, t) for p in active),
                      terminatingReplicas=sum(_terminating(p) and not _terminal(p) for p in pods))
        for k in ("readyReplicas", "availableReplicas", "terminatingReplicas"):
            if not status[k]:
                status.pop(k)
        write_status(self.store, REPLICASETS, rs, status)

    def _create_pod(self, rs: Obj) -> Obj | None:
        tmpl = rs["spec"]["template"]
        return create_owned_pod(self.store, self.events, rs, "replicaset-controller",
                                dict((tmpl.get("metadata") or {}).get("annotations") or {}), [])

    def _delete_pod(self, rs: Obj, pod: Obj, quiet: bool = False) -> None:
        try:
            self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError:
            return
        if not quiet:
            self.events.record(rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                               "replicaset-controller")

    # ---- Deployment ----
    def _sync_deployment(self, d: Obj, rss: list[Obj], pods_by_rs: dict[str, list[Obj]], t: float) -> float:
        meta, spec = d["metadata"], d["spec"]
        ns = meta["namespace"]
        desired = spec.get("replicas", 1)
        template = spec.get("template") or {}
        h = template_hash(template)
        new = next((rs for rs in rss if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == h), None)
        olds = [rs for rs in rss if rs is not new]
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        ru = strategy.get("rollingUpdate") or {}
        surge = _percent(ru.get("maxSurge", "25%"), desired, True) if rolling else 0
        unavailable = _percent(ru.get("maxUnavailable", "25%"), desired, False) if rolling else 0
        if rolling and surge == 0 and unavailable == 0:
            unavailable = 1
        revision = max([int((rs["metadata"].get("annotations") or {}).get(REVISION, 0)) for rs in rss] or [0])
        paused = spec.get("paused")

        def replicas(rs: Obj) -> int:
            return rs["spec"].get("replicas", 0)

        def available(rs: Obj) -> int:
            return (rs.get("status") or {}).get("availableReplicas", 0)

        if new is None and not paused:
            total_old = sum(replicas(rs) for rs in olds)
            start = desired if not olds or total_old == 0 else \
                (max(0, min(desired, desired + surge - total_old)) if rolling else 0)
            new = self._create_rs(d, template, h, start, revision + 1)
            if new is None:
                return _NEVER
        if new is not None and not paused:
            if not rolling:  # Recreate: the old pods go first, entirely
                if any(replicas(rs) for rs in olds):
                    for rs in olds:
                        self._scale(d, rs, 0)
                elif not any(pods_by_rs.get(rs["metadata"]["uid"]) for rs in olds):
                    self._scale(d, new, desired)
            elif not any(replicas(rs) for rs in olds):
                self._scale(d, new, desired)
            else:
                all_rs = [new, *olds]
                total = sum(replicas(rs) for rs in all_rs)
                if replicas(new) > desired:
                    self._scale(d, new, desired)
                elif replicas(new) < desired:
                    up = min(desired + surge - total, desired - replicas(new))
                    if up > 0:
                        self._scale(d, new, replicas(new) + up)
                        total += up
                # scale old ReplicaSets down as far as availability allows
                min_avail = desired - unavailable
                new_unavailable = replicas(new) - available(new)
                budget = total - min_avail - new_unavailable
                for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                    if budget <= 0:
                        break
                    cut = min(max(replicas(rs) - available(rs), 0), budget)  # unhealthy ones first
                    if cut > 0:
                        self._scale(d, rs, replicas(rs) - cut)
                        budget -= cut
                all_avail = sum(available(rs) for rs in all_rs)
                budget = all_avail - min_avail
                for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
                    if budget <= 0:
                        break
                    cur = self.store.find(REPLICASETS, ns, rs["metadata"]["name"])
                    if cur is None or replicas(cur) == 0:
                        continue
                    cut = min(replicas(cur), budget)
                    self._scale(d, cur, replicas(cur) - cut)
                    budget -= cut
        # old ReplicaSets beyond the history limit go
        limit = spec.get("revisionHistoryLimit", 10)
        idle = sorted((rs for rs in olds if replicas(rs) == 0 and not (rs.get("status") or {}).get("replicas")),
                      key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, 0)))
        for rs in idle[:max(0, len(idle) - limit)]:
            try:
                self.store.delete(REPLICASETS, ns, rs["metadata"]["name"])
            except ApiError:
                pass
        return self._status(d, new, olds, desired, unavailable, t)

    def _create_rs(self, d: Obj, template: dict, h: str, replicas: int, revision: int) -> Obj | None:
        meta = d["metadata"]
        tmpl = _copy(template)
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        sel = _copy(d["spec"]["selector"])
        sel.setdefault("matchLabels", {})[HASH_LABEL] = h
        rs = {"metadata": {"name": f"{meta['name']}-{h}", "namespace": meta["namespace"],
                           "labels": dict(tmpl["metadata"]["labels"]),
                           "annotations": {REVISION: str(revision),
                                           "deployment.kubernetes.io/desired-replicas": str(d["spec"]["replicas"]),
                                           "deployment.kubernetes.io/max-replicas": str(d["spec"]["replicas"])},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
              "spec": {"replicas": replicas, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                       "selector": sel, "template": tmpl}}
        try:
            created = self.store.create(REPLICASETS, rs, meta["namespace"], internal=True)
        except ApiError:
            return None
        self.events.record(d, "ScalingReplicaSet", f"Scaled up replica set {rs['metadata']['name']} from 0 to "
                           f"{replicas}", "deployment-controller")
        self._touch(d)
        return created

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> None:
        before = rs["spec"].get("replicas", 0)
        if before == replicas:
            return
        try:
            self.store.patch(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"],
                             "application/merge-patch+json", {"spec": {"replicas": replicas}}, internal=True)
        except ApiError:
            return
        verb = "up" if replicas > before else "down"
        self.events.record(d, "ScalingReplicaSet", f"Scaled {verb} replica set {rs['metadata']['name']} from "
                           f"{before} to {replicas}", "deployment-controller")
        self._touch(d)

    def _touch(self, d: Obj) -> None:
        self._progress.pop(d["metadata"]["uid"], None)

    def _status(self, d: Obj, new: Obj | None, olds: list[Obj], desired: int, max_unavailable: int,
                t: float) -> float:
        meta, spec = d["metadata"], d["spec"]
        uid = meta["uid"]
        fresh = {rs["metadata"]["name"]: self.store.find(REPLICASETS, meta["namespace"], rs["metadata"]["name"])
                 for rs in ([new] if new else []) + olds}
        rss = [rs for rs in fresh.values() if rs is not None]
        new = fresh.get(new["metadata"]["name"]) if new else None

        def st(rs: Obj | None, k: str) -> int:
            return ((rs or {}).get("status") or {}).get(k, 0)

        replicas = sum(st(rs, "replicas") for rs in rss)
        avail = sum(st(rs, "availableReplicas") for rs in rss)
        status = _copy(d.get("status") or {})
        status.update(observedGeneration=meta.get("generation", 1), replicas=replicas,
                      updatedReplicas=st(new, "replicas"), readyReplicas=sum(st(rs, "readyReplicas") for rs in rss),
                      availableReplicas=avail, unavailableReplicas=max(0, desired - avail))
        terminating = sum(st(rs, "terminatingReplicas") for rs in rss)
        if terminating:
            status["terminatingReplicas"] = terminating
        else:
            status.pop("terminatingReplicas", None)
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[k]:
                status.pop(k)
        now = self.store.clock.iso(t)
        if avail >= desired - max_unavailable:
            set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                          "Deployment has minimum availability.", now, True)
        else:
            set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                          "Deployment does not have minimum availability.", now, True)
        rs_name = f'ReplicaSet "{new["metadata"]["name"]}"' if new else "ReplicaSet"
        complete = new is not None and st(new, "replicas") == desired and st(new, "availableReplicas") == desired \
            and replicas == desired and new["spec"].get("replicas") == desired
        fingerprint = tuple((rs["metadata"]["name"], rs["spec"].get("replicas"), st(rs, "replicas"),
                             st(rs, "availableReplicas")) for rs in rss)
        seen = self._progress.get(uid)
        if seen is None or seen[0] != fingerprint:
            self._progress[uid] = seen = (fingerprint, t)
            progressed = True
        else:
            progressed = False
        due = _NEVER
        deadline = spec.get("progressDeadlineSeconds", 600)
        if spec.get("paused"):
            set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now, True)
        elif complete:
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                          f"{rs_name} has successfully progressed.", now, True)
        elif t - seen[1] > deadline:
            set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                          f"{rs_name} has timed out progressing.", now, True)
        else:
            cur = next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), None)
            reason = "NewReplicaSetCreated" if cur is None else "ReplicaSetUpdated"
            if progressed or cur is None or cur.get("reason") not in ("ReplicaSetUpdated", "NewReplicaSetCreated"):
                msg = f"Created new replica set {rs_name[11:]}" if reason == "NewReplicaSetCreated" else \
                    f"{rs_name} is progressing."
                if cur is not None:
                    status["conditions"].remove(cur)
                set_condition(status, "Progressing", "True", reason, msg, now, True)
                if cur is not None and cur["status"] == "True":
                    next(c for c in status["conditions"] if c["type"] == "Progressing")["lastTransitionTime"] = \
                        cur["lastTransitionTime"]
            due = seen[1] + deadline + 0.001
        write_status(self.store, DEPLOYMENTS, d, status)
        return due


# ---------------------------------------------------------------------------------------------
# Scheduler and kubelet
# ---------------------------------------------------------------------------------------------

@dataclass
class _Run:
    """What the kubelet knows of one pod's containers (emulated times)."""
    created: float  # bound to the node
    start: float  # containers running (``_NEVER`` while stalled)
    started: float  # startup probe passed
    ready: float  # readiness probe passed
    fail: float  # startup probe gave up: the container restarts
    exit: float  # the process ends by itself (run-seconds)
    exit_code: int = 0
    restarts: int = 0
    stop: float = _NEVER  # terminated after deletion
    stop_code: int = 143
    config_error: str = ""
    written: tuple = field(default_factory=tuple)


def _probe_times(probe: Obj | None, start: float, healthy: float, not_before: float) -> tuple[float, float]:
    """(first success, give-up time) of a probe ticking every period from ``start``, whose results count
    from ``initialDelaySeconds`` and ``not_before`` on, for an application healthy from ``healthy``."""
    if not probe:
        return max(not_before, start), _NEVER
    period = max(probe.get("periodSeconds", 10), 1)
    counted = max(start + probe.get("initialDelaySeconds", 0), not_before)
    first = math.ceil((counted - start) / period - 1e-9)  # the first tick whose result counts
    ok = max(first, math.ceil((healthy - start) / period - 1e-9))
    failures = ok - first
    threshold = probe.get("failureThreshold", 3)
    if failures >= threshold:
        return _NEVER, start + (first + threshold - 1) * period
    return start + (ok + probe.get("successThreshold", 1) - 1) * period, _NEVER


class PodController:
    """kube-scheduler and the kubelet for every node."""

    def __init__(self, store: Store, events: Events, deployments: DeploymentController) -> None:
        self.store, self.events, self.deployments = store, events, deployments
        self.image_users: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.default_image_user = 1000
        self.image_users = {}
        self._runs: dict[str, _Run] = {}
        self._ready_after: dict[tuple[str, str], float] = {}
        self._unschedulable: dict[str, str] = {}

    def ready_after(self, namespace: str, owner_name: str, seconds: float) -> None:
        """Pods of this Deployment (or Job, or the pod itself) answer their probes ``seconds`` after starting."""
        self._ready_after[(namespace, owner_name)] = seconds

    def tick(self, t: float) -> float:
        nodes = {n["metadata"]["name"]: n for n in self.store.peek(NODES)}
        pods = self.store.peek(PODS)
        due = self._schedule(nodes, pods, t)
        for pod in pods:
            if pod["spec"].get("nodeName") and not _terminal(pod):
                due = min(due, self._kubelet(pod, t))
            elif _terminating(pod) and not _terminal(pod):  # PodGC: an unscheduled pod being deleted fails
                status = _copy(pod.get("status") or {})
                status["phase"] = "Failed"
                write_status(self.store, PODS, pod, status)
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._runs if u not in live]:
            del self._runs[uid]
        return due

    # ---- scheduling ----
    @staticmethod
    def _tolerates(pod: Obj, taint: Obj) -> bool:
        for tol in pod["spec"].get("tolerations") or []:
            if tol.get("effect") not in (None, "", taint.get("effect")):
                continue
            if tol.get("operator") == "Exists":
                if tol.get("key") in (None, "", taint["key"]):
                    return True
            elif tol.get("key") == taint["key"] and (tol.get("value") or "") == (taint.get("value") or ""):
                return True
        return False

    @staticmethod
    def _affinity_ok(pod: Obj, node: Obj) -> bool:
        labels = node["metadata"].get("labels") or {}
        req = (((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
               .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        terms = req.get("nodeSelectorTerms") or []
        if not terms:
            return True

        def ok(e: Obj, value: str | None) -> bool:
            op, vals = e.get("operator"), e.get("values") or []
            return {"In": value in vals, "NotIn": value not in vals, "Exists": value is not None,
                    "DoesNotExist": value is None,
                    "Gt": value is not None and value.isdigit() and bool(vals) and int(value) > int(vals[0]),
                    "Lt": value is not None and value.isdigit() and bool(vals) and int(value) < int(vals[0])}.get(op,
                                                                                                            False)
        for term in terms:
            if all(ok(e, labels.get(e["key"])) for e in term.get("matchExpressions") or []) and \
                    all(ok(e, node["metadata"]["name"] if e["key"] == "metadata.name" else None)
                        for e in term.get("matchFields") or []):
                return True
        return False

    def _filter(self, pod: Obj, node: Obj) -> str | None:
        """None if the node passes every non-resource filter, else why not (the scheduler's words)."""
        if condition(node, "Ready") != "True":
            return "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        if (node.get("spec") or {}).get("unschedulable") and not self._tolerates(
                pod, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}):
            return "node(s) were unschedulable"
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()) or \
                not self._affinity_ok(pod, node):
            return "node(s) didn't match Pod's node affinity/selector"
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not self._tolerates(pod, taint):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        return None

    @staticmethod
    def _allocatable(node: Obj) -> dict[str, float]:
        return {k: quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}

    @staticmethod
    def _missing(want: dict[str, float], free: dict[str, float]) -> list[str]:
        out = [k for k, v in want.items() if v > 0 and free.get(k, 0) < v - 1e-9]
        if free.get("pods", 1) < 1:
            out.append("pods")
        return sorted(out)

    def _schedule(self, nodes: dict[str, Obj], pods: list[Obj], t: float) -> float:
        used: dict[str, dict[str, float]] = {n: {} for n in nodes}
        by_node: dict[str, list[Obj]] = defaultdict(list)
        pending = []
        for p in pods:
            name = p["spec"].get("nodeName")
            if name:
                if not _terminal(p) and name in used:
                    by_node[name].append(p)
                    for k, v in pod_requests(p).items():
                        used[name][k] = used[name].get(k, 0) + v
                    used[name]["pods"] = used[name].get("pods", 0) + 1
            elif not _terminating(p) and not _terminal(p):
                pending.append(p)
        if not pending:
            return _NEVER
        pending.sort(key=lambda p: (-p["spec"].get("priority", 0), p["metadata"]["creationTimestamp"],
                                    p["metadata"]["name"]))
        nominated: dict[str, list[Obj]] = defaultdict(list)
        for p in pending:
            nn = (p.get("status") or {}).get("nominatedNodeName")
            if nn in nodes:
                nominated[nn].append(p)
        for pod in pending:
            want = pod_requests(pod)
            prio = pod["spec"].get("priority", 0)
            reasons: dict[str, int] = defaultdict(int)
            fits, passing = [], []
            for name, node in sorted(nodes.items()):
                why = self._filter(pod, node)
                if why:
                    reasons[why] += 1
                    continue
                passing.append(name)
                free = self._allocatable(node)
                for k, v in used[name].items():
                    free[k] = free.get(k, 0) - v
                for other in nominated[name]:  # room held for a higher-or-equal priority preemptor
                    if other is not pod and other["spec"].get("priority", 0) >= prio:
                        for k, v in pod_requests(other).items():
                            free[k] = free.get(k, 0) - v
                missing = self._missing(want, free)
                if missing:
                    for m in missing:
                        reasons[f"Insufficient {m}"] += 1
                    continue
                fits.append((self._score(pod, node, by_node[name], used[name]), name))
            if fits:
                name = min(fits)[1]
                if self._bind(pod, name):
                    by_node[name].append(pod)
                    for k, v in want.items():
                        used[name][k] = used[name].get(k, 0) + v
                    used[name]["pods"] = used[name].get("pods", 0) + 1
                continue
            msg = f"0/{len(nodes)} nodes are available: " + ", ".join(
                f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda x: x[0])) + "."
            node_name = None
            if pod["spec"].get("preemptionPolicy", "PreemptLowerPriority") != "Never":
                node_name = self._preempt(pod, want, passing, nodes, by_node, used, t)
            if node_name:
                nominated[node_name].append(pod)
                msg += " preemption: victims selected on node " + node_name + "."
            elif pod["spec"].get("preemptionPolicy") == "Never":
                msg += " preemption: not eligible due to preemptionPolicy=Never."
            else:
                msg += f" preemption: 0/{len(nodes)} nodes are available: " + (
                    f"{len(passing)} No preemption victims found for incoming pod." if passing else
                    f"{len(nodes)} Preemption is not helpful for scheduling.")
            self._unschedulable_status(pod, msg, node_name)
        return _NEVER

    @staticmethod
    def _score(pod: Obj, node: Obj, on_node: list[Obj], used: dict[str, float]) -> tuple:
        """Lower is better: fewer pods of the same spread group, then the least allocated (GPU, cpu)."""
        spread = 0
        for tsc in pod["spec"].get("topologySpreadConstraints") or []:
            sel = tsc.get("labelSelector") or {}
            spread += sum(selector_matches(sel, p["metadata"].get("labels") or {}) for p in on_node)
        alloc = PodController._allocatable(node)
        frac = [used.get(k, 0) / alloc[k] for k in (GPU, "cpu", "memory") if alloc.get(k)]
        return (spread, *frac)

    def _bind(self, pod: Obj, node: str) -> bool:
        try:
            bound = self.store.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                                     "application/merge-patch+json", {"spec": {"nodeName": node}}, internal=True)[0]
        except ApiError:
            return False
        status = _copy(bound.get("status") or {})
        status.pop("nominatedNodeName", None)
        set_condition(status, "PodScheduled", "True", "", "", self.store.now())
        status["conditions"][-1].pop("reason")
        status["conditions"][-1].pop("message")
        write_status(self.store, PODS, bound, status)
        self._unschedulable.pop(pod["metadata"]["uid"], None)
        self.events.record(bound, "Scheduled", f"Successfully assigned {pod['metadata']['namespace']}/"
                           f"{pod['metadata']['name']} to {node}", "default-scheduler")
        return True

    def _unschedulable_status(self, pod: Obj, msg: str, nominated: str | None) -> None:
        status = _copy(pod.get("status") or {})
        set_condition(status, "PodScheduled", "False", "Unschedulable", msg, self.store.now())
        if nominated:
            status["nominatedNodeName"] = nominated
        write_status(self.store, PODS, pod, status)
        uid = pod["metadata"]["uid"]
        if self._unschedulable.get(uid) != msg:
            self._unschedulable[uid] = msg
            self.events.record(pod, "FailedScheduling", msg, "default-scheduler", "Warning")

    def _preempt(self, pod: Obj, want: dict[str, float], passing: list[str], nodes: dict[str, Obj],
                 by_node: dict[str, list[Obj]], used: dict[str, dict[str, float]], t: float) -> str | None:
        """DefaultPreemption: the node where the fewest, lowest-priority victims make room; the victims
        are deleted gracefully (https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/)."""
        prio = pod["spec"].get("priority", 0)
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if nominated in nodes and any(_terminating(p) and p["spec"].get("priority", 0) < prio
                                      for p in by_node[nominated]):
            return nominated  # victims are still terminating: wait for them
        best = None
        for name in passing:
            node = nodes[name]
            alloc = self._allocatable(node)
            lower = [p for p in by_node[name] if p["spec"].get("priority", 0) < prio and not _terminating(p)]

            def free_without(victims: list[Obj], name: str = name, alloc: dict = alloc) -> dict[str, float]:
                free = {k: v - used[name].get(k, 0) for k, v in alloc.items()}
                for v in victims:
                    for k, q in pod_requests(v).items():
                        free[k] = free.get(k, 0) + q
                    free["pods"] = free.get("pods", 0) + 1
                return free

            if self._missing(want, free_without(lower)):
                continue
            victims = sorted(lower, key=lambda p: p["spec"].get("priority", 0))
            for v in sorted(lower, key=lambda p: -p["spec"].get("priority", 0)):  # reprieve the important ones
                trial = [x for x in victims if x is not v]
                if not self._missing(want, free_without(trial)):
                    victims = trial
            if not victims:
                continue
            key = (max(v["spec"].get("priority", 0) for v in victims), len(victims), name)
            if best is None or key < best[0]:
                best = (key, name, victims)
        if best is None:
            return None
        _, name, victims = best
        for v in victims:
            self.preempt_pod(v, f"Preempted by pod {pod['metadata']['uid']} on node {name}")
        return name

    def preempt_pod(self, victim: Obj, message: str) -> None:
        add_condition(self.store, victim, "DisruptionTarget", "PreemptionByScheduler",
                      "default-scheduler: preempting to accommodate a higher priority pod")
        self.events.record(victim, "Preempted", message, "default-scheduler")
        try:
            self.store.delete(PODS, victim["metadata"]["namespace"], victim["metadata"]["name"])
        except ApiError:
            pass

    # ---- kubelet ----
    def _owner_names(self, pod: Obj) -> tuple[Obj | None, list[tuple[str, str]]]:
        ns = pod["metadata"]["namespace"]
        names = [(ns, pod["metadata"]["name"])]
        deployment = None
        ref = owner(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            rs = self.store.find(REPLICASETS, ns, ref["name"])
            dref = owner(rs, "Deployment") if rs else None
            if dref:
                deployment = self.store.find(DEPLOYMENTS, ns, dref["name"])
                names.append((ns, dref["name"]))
        elif ref:
            names.append((ns, ref["name"]))
        return deployment, names

    def _new_run(self, pod: Obj, t: float) -> _Run:
        deployment, names = self._owner_names(pod)
        delay = self.deployments.start_delay(pod, deployment)
        start = t + delay
        ready_after = next((self._ready_after[n] for n in names if n in self._ready_after), None)
        if ready_after is None:
            ready_after = float(annotation(pod, READY_AFTER) or 0)
        run = _Run(created=t, start=start, started=_NEVER, ready=_NEVER, fail=_NEVER, exit=_NEVER)
        spec = pod["spec"]
        psc = spec.get("securityContext") or {}
        for c in spec.get("containers") or []:
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            user = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root and user is None and self.image_users.get(c["image"], self.default_image_user) == 0:
                run.config_error = (f"container has runAsNonRoot and image will run as root (pod: "
                                    f"\"{pod['metadata']['name']}_{pod['metadata']['namespace']}"
                                    f"({pod['metadata']['uid']})\", container: {c['name']})")
        self._plan(run, pod, start, ready_after)
        return run

    def _plan(self, run: _Run, pod: Obj, start: float, ready_after: float) -> None:
        c = (pod["spec"].get("containers") or [{}])[0]
        run.start = start
        healthy = start + ready_after
        run.started, run.fail = _probe_times(c.get("startupProbe"), start, healthy, start)
        if run.started == _NEVER:
            run.ready = _NEVER
        else:
            run.ready, fail_r = _probe_times(c.get("readinessProbe"), start, healthy, run.started)
            if run.ready == _NEVER:  # readiness failures never restart a container
                run.ready = _NEVER
        run.ready_after = ready_after  # type: ignore[attr-defined]
        secs = annotation(pod, RUN_SECONDS)
        run.exit = start + float(secs) if secs is not None else _NEVER
        run.exit_code = int(annotation(pod, EXIT_CODE) or 0)

    def _kubelet(self, pod: Obj, t: float) -> float:
        uid = pod["metadata"]["uid"]
        run = self._runs.get(uid)
        if run is None:
            run = self._runs[uid] = self._new_run(pod, t)
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and run.stop == _NEVER:
            grace = meta.get("deletionGracePeriodSeconds", 0)
            deleted_at = parse_iso(meta["deletionTimestamp"]) - grace
            deleted_at = min(deleted_at, t)
            if run.config_error or t < run.start:
                run.stop, run.stop_code = deleted_at, 137 if not run.config_error else 128
            else:
                c = (pod["spec"].get("containers") or [{}])[0]
                pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
                needed = pre + float(annotation(pod, SHUTDOWN_SECONDS) or 0)
                if needed <= grace:
                    run.stop, run.stop_code = deleted_at + needed, int(annotation(pod, SIGTERM_EXIT) or 143)
                else:
                    run.stop, run.stop_code = deleted_at + grace, 137
            self.events.record(pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}",
                               "kubelet")
        if t >= run.stop:
            self._finish(pod, run.stop_code, "Error" if run.stop_code else "Completed", run)
            try:
                self.store.delete(PODS, meta["namespace"], meta["name"], grace_period=0)
            except ApiError:
                pass
            return _NEVER
        if run.config_error:
            self._write(pod, run, "Pending", waiting=("CreateContainerConfigError", run.config_error))
            return run.stop
        if t < run.start:
            self._write(pod, run, "Pending", waiting=("ContainerCreating", ""))
            return min(run.start, run.stop)
        if t >= run.exit:
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and run.exit_code == 0):
                self._finish(pod, run.exit_code, "Completed" if run.exit_code == 0 else "Error", run)
                return _NEVER
            self._restart(pod, run, run.exit)
        if t >= run.fail:
            self.events.record(pod, "Unhealthy", "Startup probe failed: HTTP probe failed with statuscode: 503",
                               "kubelet", "Warning")
            self._restart(pod, run, run.fail)
        self._write(pod, run, "Running")
        return min(x for x in (run.started, run.ready, run.fail, run.exit, run.stop, run.start)
                   if x > t) if any(x > t for x in (run.started, run.ready, run.fail, run.exit, run.stop)) \
            else _NEVER

    def _restart(self, pod: Obj, run: _Run, at: float) -> None:
        run.restarts += 1
        backoff = min(300.0, 10.0 * 2 ** (run.restarts - 1))
        self._plan(run, pod, at + backoff, getattr(run, "ready_after", 0.0))

    def _container_statuses(self, pod: Obj, run: _Run, t: float, waiting: tuple[str, str] | None) -> list[Obj]:
        out = []
        for c in pod["spec"].get("containers") or []:
            if waiting:
                state = {"waiting": {"reason": waiting[0], **({"message": waiting[1]} if waiting[1] else {})}}
            else:
                state = {"running": {"startedAt": self.store.clock.iso(run.start)}}
            out.append({"name": c["name"], "image": c["image"], "imageID": "", "containerID":
                        f"containerd://{pod['metadata']['uid'][:12]}{c['name']}" if not waiting else None,
                        "ready": t >= run.ready and not waiting, "restartCount": run.restarts,
                        "started": t >= run.started and not waiting, "state": state})
            if out[-1]["containerID"] is None:
                del out[-1]["containerID"]
        return out

    def _write(self, pod: Obj, run: _Run, phase: str, waiting: tuple[str, str] | None = None) -> None:
        t = self.store.clock.time()
        ready = t >= run.ready and not waiting
        key = (phase, waiting, ready, t >= run.started, run.restarts)
        if run.written == key:
            return
        run.written = key
        status = _copy(pod.get("status") or {})
        now = self.store.now()
        status.update(phase=phase, hostIP="10.0.0.1", podIP=f"10.244.{hash(pod['metadata']['uid']) % 250}."
                      f"{hash(pod['metadata']['name']) % 250 + 1}", startTime=status.get("startTime") or now,
                      qosClass=_qos(pod))
        status["podIPs"] = [{"ip": status["podIP"]}]
        set_condition(status, "PodReadyToStartContainers", "True", "", "", now)
        set_condition(status, "Initialized", "True", "", "", now)
        r = "True" if ready else "False"
        why = "" if ready else "ContainersNotReady"
        names = ",".join(c["name"] for c in pod["spec"].get("containers") or [])
        msg = "" if ready else f"containers with unready status: [{names}]"
        set_condition(status, "ContainersReady", r, why, msg, now)
        set_condition(status, "Ready", r, why, msg, now)
        for c in status["conditions"]:
            if not c.get("reason"):
                c.pop("reason", None)
                c.pop("message", None)
        status["containerStatuses"] = self._container_statuses(pod, run, t, waiting)
        write_status(self.store, PODS, pod, status)

    def _finish(self, pod: Obj, code: int, reason: str, run: _Run | None) -> None:
        terminate(self.store, pod, code, reason, restarts=run.restarts if run else 0,
                  started=self.store.clock.iso(run.start) if run and run.start != _NEVER else None)


def _qos(pod: Obj) -> str:
    cs = pod["spec"].get("containers") or []
    res = [c.get("resources") or {} for c in cs]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    if all(r.get("limits", {}).get(k) and r.get("requests", {}).get(k, r["limits"][k]) == r["limits"][k]
           for r in res for k in ("cpu", "memory")):
        return "Guaranteed"
    return "Burstable"


def terminate(store: Store, pod: Obj, exit_code: int, reason: str, condition_: dict | None = None,
              restarts: int = 0, started: str | None = None) -> None:
    """The kubelet's terminal status: phase from the exit code, containers terminated."""
    pod = store.find(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
    status = _copy(pod.get("status") or {})
    now = store.now()
    status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
    for c in ("Ready", "ContainersReady"):
        set_condition(status, c, "False", "PodCompleted" if exit_code == 0 else "PodFailed", "", now)
    if condition_:
        set_condition(status, now=now, **condition_)
    status["containerStatuses"] = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                                    "restartCount": restarts, "started": False, "state": {"terminated": {
                                        "exitCode": exit_code, "reason": reason, "startedAt": started or now,
                                        "finishedAt": now}}}
                                   for c in pod["spec"]["containers"]]
    write_status(store, PODS, pod, status)


def disrupt(store: Store, pod: Obj, reason: str, message: str) -> None:
    """What pod GC does to pods of a vanished node: ``DisruptionTarget``, Failed (137), deleted at once."""
    terminate(store, pod, 137, "Error", {"type_": "DisruptionTarget", "value": "True", "reason": reason,
                                         "message": message})
    try:
        store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], grace_period=0)
    except ApiError:
        pass


# ---------------------------------------------------------------------------------------------
# Jobs and the TTL-after-finished controller
# ---------------------------------------------------------------------------------------------

class JobController:
    """batch/v1 Jobs (https://kubernetes.io/docs/concepts/workloads/controllers/job/) and their TTL
    (https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/)."""

    def __init__(self, store: Store, events: Events, pods: PodController) -> None:
        self.store, self.events, self.pod_controller = store, events, pods
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.default_run_seconds = 0.2
        self._runs: dict[tuple[str, str], dict[str, str]] = {}

    def run_for(self, namespace: str, job_name: str, seconds: float, exit_code: int = 0) -> None:
        """How long the Job's next pods run and how they exit (wins over its annotations)."""
        self._runs[(namespace, job_name)] = {RUN_SECONDS: str(seconds), EXIT_CODE: str(exit_code)}

    def pods(self, namespace: str, job_name: str) -> list[Obj]:
        job = self.store.get(JOBS, namespace, job_name)
        uid = job["metadata"]["uid"]
        return self.store.list(PODS, namespace, lambda p: (p["metadata"].get("labels") or {}).get(
            "batch.kubernetes.io/controller-uid") == uid)

    def preempt(self, namespace: str, job_name: str, reason: str = "PreemptionByScheduler") -> str:
        """Preempt one running pod of the Job as the scheduler does (graceful deletion); → the pod's name."""
        running = [p for p in self.pods(namespace, job_name)
                   if p["status"].get("phase") == "Running" and not _terminating(p)]
        if not running:
            raise LookupError(f"job {namespace}/{job_name} has no running pod to preempt")
        victim = running[0]
        if reason == "PreemptionByScheduler":
            self.pod_controller.preempt_pod(victim, f"Preempted by a test on node {victim['spec'].get('nodeName')}")
        else:
            add_condition(self.store, victim, "DisruptionTarget", reason, "Preempted in order to admit a higher "
                          "priority pod")
            self.store.delete(PODS, namespace, victim["metadata"]["name"])
        return victim["metadata"]["name"]

    def tick(self, t: float) -> float:
        due = _NEVER
        by_job: dict[str, list[Obj]] = defaultdict(list)
        for p in self.store.peek(PODS):
            uid = (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/controller-uid")
            if uid:
                by_job[uid].append(p)
        jobs = self.store.peek(JOBS)
        for job in jobs:
            due = min(due, self._sync(job, by_job.get(job["metadata"]["uid"], []), t))
        live = {j["metadata"]["uid"] for j in jobs}
        for p in self.store.peek(PODS):  # orphans (their Job deleted, or orphaned) lose the tracking finalizer
            if JOB_FINALIZER in (p["metadata"].get("finalizers") or []) and \
                    (owner(p, "Job") or {}).get("uid") not in live:
                self._release(p)
        return due

    def _finished(self, job: Obj) -> float | None:
        for c in (job.get("status") or {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return parse_iso(c["lastTransitionTime"])
        return None

    def _sync(self, job: Obj, pods: list[Obj], t: float) -> float:
        meta, spec = job["metadata"], job["spec"]
        ns = meta["namespace"]
        status = _copy(job.get("status") or {})
        now = self.store.clock.iso(t)
        # account finished pods exactly once, then release their tracking finalizer
        for p in pods:
            if _terminal(p) and JOB_FINALIZER in (p["metadata"].get("finalizers") or []):
                if p["status"]["phase"] == "Succeeded":
                    status["succeeded"] = status.get("succeeded", 0) + 1
                else:
                    action, why = pod_failure_action(spec.get("podFailurePolicy"), p)
                    if action in ("Count", "FailIndex"):
                        status["failed"] = status.get("failed", 0) + 1
                    elif action == "FailJob" and not any(c["type"] == "FailureTarget" for c in
                                                         status.get("conditions") or []):
                        status["failed"] = status.get("failed", 0) + 1
                        set_condition(status, "FailureTarget", "True", "PodFailurePolicy", why, now)
                self._release(p)
        finished = self._finished(job)
        if finished is not None:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is None:
                return _NEVER
            if t >= finished + ttl:
                try:
                    self.store.delete(JOBS, ns, meta["name"], propagation="Background")
                except ApiError:
                    pass
                return _NEVER
            write_status(self.store, JOBS, job, status)
            return finished + ttl
        running = [p for p in pods if not _terminal(p)]
        active = [p for p in running if not _terminating(p)]
        terminating = [p for p in running if _terminating(p)]
        due = _NEVER
        failure = next((c for c in status.get("conditions") or [] if c["type"] == "FailureTarget"), None)
        success = next((c for c in status.get("conditions") or [] if c["type"] == "SuccessCriteriaMet"), None)
        if spec.get("suspend") and not failure and not success:
            for p in active:
                self._delete(job, p)
            if condition(job, "Suspended") != "True":
                self.events.record(job, "Suspended", "Job suspended", "job-controller")
            set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now)
            status.pop("startTime", None)
            status.update(active=0, ready=0, terminating=len(running))
            write_status(self.store, JOBS, job, status)
            return _NEVER
        if condition(job, "Suspended") == "True":
            set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
            self.events.record(job, "Resumed", "Job resumed", "job-controller")
        status.setdefault("startTime", now)
        started = parse_iso(status["startTime"])
        ads = spec.get("activeDeadlineSeconds")
        if not failure and not success:
            outcome = None
            if status.get("failed", 0) > spec.get("backoffLimit", 6):
                outcome = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif ads is not None and t - started >= ads:
                outcome = ("DeadlineExceeded", "Job was active longer than specified deadline")
            elif status.get("succeeded", 0) >= spec.get("completions", 1):
                set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", now)
                success = True
            if outcome:
                set_condition(status, "FailureTarget", "True", *outcome, now)
                failure = True
            elif ads is not None and not success:
                due = started + ads
        if failure or success:
            for p in active:
                self._delete(job, p)
            if not running:
                if failure:
                    c = next(c for c in status["conditions"] if c["type"] == "FailureTarget")
                    set_condition(status, "Failed", "True", c["reason"], c["message"], now)
                    self.events.record(job, c["reason"], c["message"], "job-controller", "Warning")
                else:
                    set_condition(status, "Complete", "True", "CompletionsReached",
                                  "Reached expected number of succeeded pods", now)
                    status["completionTime"] = now
                    self.events.record(job, "Completed", "Job completed", "job-controller")
                if spec.get("ttlSecondsAfterFinished") is not None:
                    due = t + spec["ttlSecondsAfterFinished"]
            status.update(active=0, ready=0, terminating=len(running))
        else:
            busy = len(active) + (len(terminating) if spec.get("podReplacementPolicy") == "Failed" else 0)
            want = min(spec.get("parallelism", 1), spec.get("completions", 1) - status.get("succeeded", 0)) - busy
            for _ in range(max(0, want)):
                pod = self._create_pod(job)
                if pod:
                    active.append(pod)
            status.update(active=len(active), ready=sum(_ready(p) for p in active), terminating=len(terminating))
        status.setdefault("succeeded", 0)
        status.setdefault("failed", 0)
        status["uncountedTerminatedPods"] = {}
        write_status(self.store, JOBS, job, status)
        return due

    def _release(self, pod: Obj) -> None:
        fins = [f for f in pod["metadata"].get("finalizers") or [] if f != JOB_FINALIZER]
        try:
            self.store.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                             "application/merge-patch+json", {"metadata": {"finalizers": fins or None}},
                             internal=True)
        except ApiError:
            pass

    def _create_pod(self, job: Obj) -> Obj | None:
        meta, tmpl = job["metadata"], job["spec"]["template"]
        annotations = {**((tmpl.get("metadata") or {}).get("annotations") or {}),
                       **{k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)}}
        annotations.update(self._runs.get((meta["namespace"], meta["name"]), {}))
        annotations.setdefault(RUN_SECONDS, str(self.default_run_seconds))
        return create_owned_pod(self.store, self.events, job, "job-controller", annotations, [JOB_FINALIZER])

    def _delete(self, job: Obj, pod: Obj) -> None:
        try:
            self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError:
            return
        self.events.record(job, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "job-controller")


def pod_failure_action(policy: dict | None, pod: Obj) -> tuple[str, str]:
    """→ (Ignore | Count | FailJob | FailIndex, why) for a failed pod, per the Job's podFailurePolicy."""
    codes = {s["name"]: s["state"]["terminated"]["exitCode"] for s in pod["status"].get("containerStatuses") or []
             if "terminated" in (s.get("state") or {})}
    conds = {(c["type"], c["status"]) for c in pod["status"].get("conditions") or []}
    for i, rule in enumerate((policy or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes:
            for name, code in codes.items():
                if on_codes.get("containerName") not in (None, name) or code == 0:
                    continue
                hit = code in on_codes.get("values", [])
                if hit == (on_codes.get("operator") == "In"):
                    return rule["action"], (f"Container {name} for pod {pod['metadata']['namespace']}/"
                                            f"{pod['metadata']['name']} failed with exit code {code} matching "
                                            f"{rule['action']} rule at index {i}")
        for pc in rule.get("onPodConditions") or []:
            if (pc["type"], pc.get("status", "True")) in conds:
                return rule["action"], (f"Pod {pod['metadata']['namespace']}/{pod['metadata']['name']} has "
                                        f"condition {pc['type']} matching {rule['action']} rule at index {i}")
    return "Count", ""


# ---------------------------------------------------------------------------------------------
# HorizontalPodAutoscaler and PodDisruptionBudget
# ---------------------------------------------------------------------------------------------

DEFAULT_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
              "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                           {"type": "Percent", "value": 100, "periodSeconds": 15}]}
DEFAULT_DOWN = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
TOLERANCE = 0.1


class HPAController:
    """autoscaling/v2 (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/),
    on metric values set by the test: ``set_metric(ns, hpa, metric, value)``. The value is what the
    metrics API would answer: the per-pod average for Pods and AverageValue targets, the average
    utilization (percent) for Utilization targets, the object's value for Value targets."""

    def __init__(self, store: Store, events: Events) -> None:
        self.store, self.events = store, events
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.sync_period_s = 15.0
        self._metrics: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._next: dict[str, float] = {}
        self._recs: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self._scales: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def set_metric(self, namespace: str, hpa: str, metric: str, value: float) -> None:
        self._metrics[(namespace, hpa)][metric] = float(value)
        self._next.clear()  # evaluate at the next tick, which must not be skipped as idle
        with self.store.lock:
            self.store.changes += 1

    def tick(self, t: float) -> float:
        due = _NEVER
        for hpa in self.store.peek(HPAS):
            uid = hpa["metadata"]["uid"]
            if t >= self._next.get(uid, 0):
                self._next[uid] = t + self.sync_period_s
                self._sync(hpa, t)
            due = min(due, self._next[uid])
        return due

    def _sync(self, hpa: Obj, t: float) -> None:
        meta, spec = hpa["metadata"], hpa["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        ref = spec["scaleTargetRef"]
        res = {"Deployment": DEPLOYMENTS, "ReplicaSet": REPLICASETS}.get(ref.get("kind"))
        status = _copy(hpa.get("status") or {})
        now = self.store.clock.iso(t)
        target = self.store.find(res, ns, ref["name"]) if res else None
        if target is None:
            set_condition(status, "AbleToScale", "False", "FailedGetScale", f"the HPA controller was unable to get "
                          f"the target's current scale: {ref.get('kind', '').lower()}s \"{ref['name']}\" not found",
                          now)
            write_status(self.store, HPAS, hpa, status)
            return
        current = target["spec"].get("replicas", 1)
        if current == 0:
            set_condition(status, "ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the "
                          "replica count of the target is zero", now)
            write_status(self.store, HPAS, hpa, status)
            return
        values = self._metrics.get((ns, meta["name"]), {})
        proposals, current_metrics, missing, reason = [], [], [], ""
        for m in spec.get("metrics") or []:
            kind = m["type"]
            body = m.get({"Pods": "pods", "Resource": "resource", "Object": "object", "External": "external",
                          "ContainerResource": "containerResource"}[kind]) or {}
            name = (body.get("metric") or {}).get("name") or body.get("name")
            tgt = body.get("target") or {}
            if name not in values:
                missing.append(name)
                continue
            v = values[name]
            if tgt.get("type") == "Utilization":
                goal = float(tgt["averageUtilization"])
                cur = {"averageUtilization": int(v)}
            elif tgt.get("type") == "AverageValue":
                goal = quantity(tgt["averageValue"])
                cur = {"averageValue": _fmt(v)}
            else:
                goal = quantity(tgt["value"])
                cur = {"value": _fmt(v)}
            ratio = v / goal if goal else 0.0
            desired = current if abs(ratio - 1) <= TOLERANCE else math.ceil(ratio * current)
            proposals.append(desired)
            if desired == max(proposals):
                reason = f"{kind.lower()} metric {name} {'above' if ratio > 1 else 'below'} target"
            entry = {"type": kind, {"Pods": "pods", "Resource": "resource", "Object": "object",
                                    "External": "external", "ContainerResource": "containerResource"}[kind]:
                     ({"metric": {"name": name}} if kind != "Resource" else {"name": name}) | {"current": cur}}
            current_metrics.append(entry)
        if not proposals:
            set_condition(status, "ScalingActive", "False", "FailedGetPodsMetric", "the HPA was unable to compute "
                          f"the replica count: no metric value for {', '.join(missing)}", now)
            status.update(currentReplicas=current, desiredReplicas=current)
            write_status(self.store, HPAS, hpa, status)
            return
        set_condition(status, "ScalingActive", "True", "ValidMetricFound", "the HPA was able to successfully "
                      "calculate a replica count from metrics", now)
        desired = max(proposals)
        if missing and desired < current:
            desired = current  # some metrics are missing: never scale down on partial data
        behavior = spec.get("behavior") or {}
        up, down = {**DEFAULT_UP, **(behavior.get("scaleUp") or {})}, {**DEFAULT_DOWN, **(behavior.get("scaleDown")
                                                                                            or {})}
        recs = self._recs[uid]
        recs.append((t, desired))
        horizon = max(up["stabilizationWindowSeconds"], down["stabilizationWindowSeconds"])
        recs[:] = [r for r in recs if t - r[0] <= horizon]
        if desired > current:
            window = [d for ts, d in recs if t - ts <= up["stabilizationWindowSeconds"]]
            stabilized = max(current, min(window))
        else:
            window = [d for ts, d in recs if t - ts <= down["stabilizationWindowSeconds"]]
            stabilized = min(current, max(window))
        limited = self._limit(uid, current, stabilized, up, down, t)
        mn, mx = spec.get("minReplicas", 1), spec["maxReplicas"]
        final = min(max(limited, mn), mx)
        if final == mx and limited > mx:
            set_condition(status, "ScalingLimited", "True", "TooManyReplicas", "the desired replica count is more "
                          "than the maximum replica count", now)
        elif final == mn and limited < mn:
            set_condition(status, "ScalingLimited", "True", "TooFewReplicas", "the desired replica count is less "
                          "than the minimum replica count", now)
        else:
            set_condition(status, "ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the "
                          "acceptable range", now)
        if final != current:
            try:
                self.store.patch(res, ns, ref["name"], "application/merge-patch+json",
                                 {"spec": {"replicas": final}}, manager="kube-controller-manager", internal=True)
            except ApiError as exc:
                set_condition(status, "AbleToScale", "False", "FailedUpdateScale", exc.message, now)
                write_status(self.store, HPAS, hpa, status)
                return
            self._scales[uid].append((t, final - current))
            status["lastScaleTime"] = now
            self.events.record(hpa, "SuccessfulRescale", f"New size: {final}; reason: "
                               f"{reason if final > current else 'All metrics below target'}",
                               "horizontal-pod-autoscaler")
            set_condition(status, "AbleToScale", "True", "SucceededRescale", f"the HPA controller was able to "
                          f"update the target scale to {final}", now)
        else:
            set_condition(status, "AbleToScale", "True", "ReadyForNewScale", "recommended size matches current "
                          "size", now)
        status.update(currentReplicas=current, desiredReplicas=final, currentMetrics=current_metrics,
                      observedGeneration=meta.get("generation", 1))
        write_status(self.store, HPAS, hpa, status)

    def _limit(self, uid: str, current: int, desired: int, up: dict, down: dict, t: float) -> int:
        events = self._scales[uid]
        events[:] = [e for e in events if t - e[0] <= 1800]
        if desired > current:
            if up.get("selectPolicy") == "Disabled":
                return current
            limits = []
            for p in up["policies"]:
                since = sum(d for ts, d in events if t - ts < p["periodSeconds"] and d > 0)
                base = current - since
                limits.append(base + p["value"] if p["type"] == "Pods" else math.ceil(base * (1 + p["value"] / 100)))
            cap = max(limits) if up.get("selectPolicy", "Max") == "Max" else min(limits)
            return min(desired, cap)
        if desired < current:
            if down.get("selectPolicy") == "Disabled":
                return current
            limits = []
            for p in down["policies"]:
                since = -sum(d for ts, d in events if t - ts < p["periodSeconds"] and d < 0)
                base = current + since
                limits.append(base - p["value"] if p["type"] == "Pods" else
                              math.ceil(base * (1 - p["value"] / 100)))
            floor = min(limits) if down.get("selectPolicy", "Max") == "Max" else max(limits)
            return max(desired, floor)
        return desired


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else f"{int(round(v * 1000))}m"


class PDBController:
    """PodDisruptionBudget status (https://kubernetes.io/docs/tasks/run-application/configure-pdb/)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.enabled = True

    def reset(self) -> None:
        self.enabled = True

    def tick(self, t: float) -> float:
        for pdb in self.store.peek(PDBS):
            self._sync(pdb)
        return _NEVER

    def _sync(self, pdb: Obj) -> None:
        ns, spec = pdb["metadata"]["namespace"], pdb["spec"]
        sel = spec.get("selector") or {}
        pods = [p for p in self.store.peek(PODS, ns) if not _terminal(p)
                and selector_matches(sel, p["metadata"].get("labels") or {})]
        healthy = sum(_ready(p) and not _terminating(p) for p in pods)
        expected, seen = 0, set()
        for p in pods:
            ref = owner(p)
            scale = None
            if ref and ref.get("kind") == "ReplicaSet":
                rs = self.store.find(REPLICASETS, ns, ref["name"])
                dref = owner(rs, "Deployment") if rs else None
                ctrl = self.store.find(DEPLOYMENTS, ns, dref["name"]) if dref else rs
                if ctrl is not None and ctrl["metadata"]["uid"] not in seen:
                    seen.add(ctrl["metadata"]["uid"])
                    scale = ctrl["spec"].get("replicas", 1)
                    expected += scale
            elif not ref:
                expected += 1
        if spec.get("maxUnavailable") is not None:
            desired = max(0, expected - _percent(spec["maxUnavailable"], expected, True))
        elif spec.get("minAvailable") is not None:
            desired = _percent(spec["minAvailable"], expected, True)
        else:
            desired = expected
        allowed = max(0, healthy - desired)
        status = _copy(pdb.get("status") or {})
        status.update(observedGeneration=pdb["metadata"].get("generation", 1), currentHealthy=healthy,
                      desiredHealthy=desired, expectedPods=expected, disruptionsAllowed=allowed)
        status.setdefault("disruptedPods", {})
        if allowed > 0:
            set_condition(status, "DisruptionAllowed", "True", "SufficientPods", "", self.store.now())
        else:
            set_condition(status, "DisruptionAllowed", "False", "InsufficientPods", "", self.store.now())
        write_status(self.store, PDBS, pdb, status)


# ---------------------------------------------------------------------------------------------

class Controllers:
    """The background loop: ticks every enabled controller when the store changed or a timer is due."""

    def __init__(self, store: Store, interval_s: float = 0.05) -> None:
        self.store = store
        self.events = Events(store)
        self.deployments = DeploymentController(store, self.events)
        self.pods = PodController(store, self.events, self.deployments)
        self.jobs = JobController(store, self.events, self.pods)
        self.hpa = HPAController(store, self.events)
        self.pdb = PDBController(store)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kube-emulator-controllers", daemon=True)
        self.lock = threading.Lock()  # held during a tick; reset() takes it so no tick straddles a wipe
        self.errors: list[str] = []
        self._seen_changes = -1
        self._due = 0.0

    def all(self) -> tuple:
        return (self.jobs, self.hpa, self.deployments, self.pods, self.pdb)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        for c in self.all():
            c.reset()
        self.events.reset()
        self.errors.clear()
        self._seen_changes, self._due = -1, 0.0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self.lock:
                t = self.store.clock.time()
                if self.store.changes == self._seen_changes and t < self._due:
                    continue
                self._seen_changes = self.store.changes
                due = _NEVER
                for c in self.all():
                    if c.enabled:
                        try:
                            due = min(due, c.tick(t))
                        except Exception as exc:  # kept for the fixture to fail the test loudly
                            import traceback

                            self.errors.append(f"{type(c).__name__}: {exc!r}\n{traceback.format_exc()}")
                            due = t + 1
                self._due = due
