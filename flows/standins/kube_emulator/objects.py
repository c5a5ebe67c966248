"""What the controllers share: the resources they act on, the test-hook annotations, quantities,
conditions, status writes, owner references and Events."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.resources import lookup
from flows.standins.kube_emulator.store import Obj, Store

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
NEVER = float("inf")


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


def copy_json(x: Any) -> Any:
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
    status = copy_json(pod.get("status") or {})
    set_condition(status, type_, "True", reason, message, store.now())
    write_status(store, PODS, pod, status)


def owner(obj: Obj, kind: str | None = None) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and (kind is None or ref.get("kind") == kind):
            return ref
    return None


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_terminating(pod: Obj) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_ready(pod: Obj) -> bool:
    return condition(pod, "Ready") == "True"


def percent(value: Any, total: int, round_up: bool) -> int:
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
           "spec": copy_json(tmpl.get("spec") or {})}
    if not finalizers:
        del pod["metadata"]["finalizers"]
    try:
        created = store.create(PODS, pod, meta["namespace"], internal=True)
    except ApiError as exc:  # e.g. Pod Security or a missing PriorityClass, as in Kubernetes
        events.record(owner_obj, "FailedCreate", f"Error creating: {exc.message}", component, "Warning")
        return None
    events.record(owner_obj, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component)
    return created
