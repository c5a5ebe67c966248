"""Deployment and ReplicaSet controllers
(https://kubernetes.io/docs/concepts/workloads/controllers/deployment/,
https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from flows.standins.kube_emulator.clock import parse_iso
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.objects import (
    DEPLOYMENTS,
    HASH_LABEL,
    NEVER,
    PODS,
    REPLICASETS,
    REVISION,
    SECONDS_PER_REPLICA,
    STALL,
    Events,
    annotation,
    copy_json,
    create_owned_pod,
    is_ready,
    is_terminal,
    is_terminating,
    owner,
    percent,
    set_condition,
    write_status,
)
from flows.standins.kube_emulator.store import Obj, Store

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
                return NEVER
            if key in self._speed:
                return self._speed[key]
            if annotation(deployment, SECONDS_PER_REPLICA) is not None:
                return float(annotation(deployment, SECONDS_PER_REPLICA))
        if annotation(pod, STALL) == "true":
            return NEVER
        if annotation(pod, SECONDS_PER_REPLICA) is not None:
            return float(annotation(pod, SECONDS_PER_REPLICA))
        return self.seconds_per_replica

    def tick(self, t: float) -> float:
        due = NEVER
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
        if not is_ready(pod) or is_terminating(pod):
            return False
        if not min_ready:
            return True
        since = next((c.get("lastTransitionTime") for c in pod["status"].get("conditions") or []
                      if c["type"] == "Ready"), None)
        return since is not None and t - parse_iso(since) >= min_ready

    def _sync_replicaset(self, rs: Obj, pods: list[Obj], t: float) -> None:
        meta, spec = rs["metadata"], rs["spec"]
        active = [p for p in pods if not is_terminal(p) and not is_terminating(p)]
        want = spec.get("replicas", 1) if not meta.get("deletionTimestamp") else 0
        if len(active) < want:
            for _ in range(want - len(active)):
                pod = self._create_pod(rs)
                if pod:
                    active.append(pod)
        elif len(active) > want:
            # the least useful first: unscheduled, then not ready, then the newest
            order = sorted(active, key=lambda p: (bool(p["spec"].get("nodeName")), is_ready(p),
                                                  -parse_iso(p["metadata"]["creationTimestamp"])))
            for p in order[:len(active) - want]:
                self._delete_pod(rs, p)
                active.remove(p)
        for p in [p for p in pods if is_terminal(p) and not is_terminating(p)]:
            self._delete_pod(rs, p, quiet=True)  # a failed pod of a ReplicaSet is replaced and cleaned up
        mr = spec.get("minReadySeconds", 0)
        status = copy_json(rs.get("status") or {})
        labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
        status.update(replicas=len(active), observedGeneration=meta.get("generation", 1),
                      fullyLabeledReplicas=sum(all((p["metadata"].get("labels") or {}).get(k) == v
                                                   for k, v in labels.items()) for p in active),
                      readyReplicas=sum(is_ready(p) for p in active),
                      availableReplicas=sum(self._available(p, mr, t) for p in active),
                      terminatingReplicas=sum(is_terminating(p) and not is_terminal(p) for p in pods))
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
        surge = percent(ru.get("maxSurge", "25%"), desired, True) if rolling else 0
        unavailable = percent(ru.get("maxUnavailable", "25%"), desired, False) if rolling else 0
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
                return NEVER
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
        tmpl = copy_json(template)
        tmpl.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        sel = copy_json(d["spec"]["selector"])
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
        status = copy_json(d.get("status") or {})
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
        due = NEVER
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
