"""Test-only controllers that advance status the way kube-controller-manager, the scheduler and the
kubelet would. They run on one background thread (``Controllers``); each one can be switched off
(``.enabled = False``) or slowed per object with annotations:

* ``emulator.inferops.dev/seconds-per-replica`` on a Deployment: rollout speed;
* ``emulator.inferops.dev/stall: "true"`` on a Deployment (or ``deployments.stall(ns, name)``):
  no progress, so ``Progressing=False/ProgressDeadlineExceeded`` after ``progressDeadlineSeconds``;
* ``emulator.inferops.dev/run-seconds`` / ``emulator.inferops.dev/exit-code`` on a Job (or a Pod):
  how long its pods run and how they exit.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.resources import lookup
from flows.standins.kube_emulator.store import Obj, Store, now

DEPLOYMENTS, JOBS, PODS, NODES = (lookup("apps", "deployments"), lookup("batch", "jobs"), lookup("", "pods"),
                                  lookup("", "nodes"))
PREFIX = "emulator.inferops.dev/"
SECONDS_PER_REPLICA, STALL = PREFIX + "seconds-per-replica", PREFIX + "stall"
RUN_SECONDS, EXIT_CODE = PREFIX + "run-seconds", PREFIX + "exit-code"
GPU = "nvidia.com/gpu"
_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value).strip())
    if not m or (m.group(2) and m.group(2) not in _UNITS):
        raise ValueError(f"bad quantity {value!r}")
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


def pod_requests(pod: Obj) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        for name, v in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
            out[name] = out.get(name, 0) + quantity(v)
    return out


def _annotation(obj: Obj, key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _set_condition(status: dict, type_: str, value: str, reason: str, message: str) -> None:
    """Add/replace a condition; lastTransitionTime moves only when the status flips."""
    conds = status.setdefault("conditions", [])
    old = next((c for c in conds if c["type"] == type_), None)
    t = now()
    if old and (old["status"], old.get("reason"), old.get("message")) == (value, reason, message):
        return
    new = {"type": type_, "status": value, "reason": reason, "message": message, "lastTransitionTime": t}
    if type_ in ("Progressing", "Available"):
        new["lastUpdateTime"] = t
    if old and old["status"] == value:
        new["lastTransitionTime"] = old["lastTransitionTime"]
    if old:
        conds[conds.index(old)] = new
    else:
        conds.append(new)


def _condition(obj: Obj, type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"]
    return None


def _write_status(store: Store, res, obj: Obj, status: dict) -> None:
    if status == obj.get("status"):
        return
    try:
        store.update(res, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                     {**obj, "status": status}, subresource="status")
    except ApiError:  # deleted or changed meanwhile: the next tick sees the new state
        pass


@dataclass
class _Rollout:
    template: str
    updated: int = 0
    old: int = 0
    last_step: float = 0.0
    last_progress: float = 0.0


class DeploymentController:
    """Rolls Deployments: one replica per ``seconds_per_replica``, old pods retire as new ones come up."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.seconds_per_replica = 0.05
        self._stalled: set[tuple[str, str]] = set()
        self._speed: dict[tuple[str, str], float] = {}
        self._state: dict[str, _Rollout] = {}

    def stall(self, namespace: str, name: str, stalled: bool = True) -> None:
        """No progress for this Deployment (until un-stalled): its progress deadline will pass."""
        (self._stalled.add if stalled else self._stalled.discard)((namespace, name))

    def speed(self, namespace: str, name: str, seconds_per_replica: float) -> None:
        """Rollout speed of one Deployment (wins over its annotation and the default)."""
        self._speed[(namespace, name)] = seconds_per_replica

    def tick(self, t: float) -> None:
        for d in self.store.list(DEPLOYMENTS):
            self._sync(d, t)

    def _sync(self, d: Obj, t: float) -> None:
        meta, spec = d["metadata"], d["spec"]
        desired = spec.get("replicas", 1)
        template = json.dumps(spec.get("template"), sort_keys=True)
        st = self._state.get(meta["uid"])
        if st is None:
            st = self._state[meta["uid"]] = _Rollout(template, last_step=t, last_progress=t)
        elif st.template != template:
            st.template, st.old, st.updated, st.last_progress = template, st.updated + st.old, 0, t
        stalled = (meta["namespace"], meta["name"]) in self._stalled or _annotation(d, STALL) == "true"
        spr = self._speed.get((meta["namespace"], meta["name"]),
                              float(_annotation(d, SECONDS_PER_REPLICA) or self.seconds_per_replica))
        st.updated = min(st.updated, desired)
        if not spec.get("paused") and not stalled:
            while (st.updated < desired or st.old > 0) and t - st.last_step >= spr:
                if st.updated < desired:
                    st.updated += 1
                st.old = min(st.old, max(0, desired - st.updated))
                st.last_step += spr if spr > 0 else t - st.last_step
                st.last_progress = t
        if st.updated >= desired and st.old == 0 or stalled or spec.get("paused"):
            st.last_step = t
        available = st.updated + st.old
        status = json.loads(json.dumps(d.get("status") or {}))
        status.update(observedGeneration=meta.get("generation", 1), replicas=available,
                      updatedReplicas=st.updated, readyReplicas=available, availableReplicas=available)
        unavailable = max(0, desired - available)
        status["unavailableReplicas"] = unavailable
        if not unavailable:
            status.pop("unavailableReplicas")
        max_unavailable = _percent(spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable", 0),
                                   desired)
        if available >= desired - max_unavailable:
            _set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                           "Deployment has minimum availability.")
        else:
            _set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                           "Deployment does not have minimum availability.")
        rs = f'ReplicaSet "{meta["name"]}-{hashlib.sha1(template.encode()).hexdigest()[:10]}"'
        done = st.updated == desired and st.old == 0
        if spec.get("paused"):
            _set_condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        elif done:
            _set_condition(status, "Progressing", "True", "NewReplicaSetAvailable", f"{rs} has successfully progressed.")
        elif t - st.last_progress > spec.get("progressDeadlineSeconds", 600):
            _set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.")
        else:
            _set_condition(status, "Progressing", "True", "ReplicaSetUpdated", f"{rs} is progressing.")
        _write_status(self.store, DEPLOYMENTS, d, status)


def _percent(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return int(total * int(value[:-1]) / 100)
    return int(value or 0)


class PodController:
    """Scheduler + kubelet: binds Pending pods to nodes with room (``nvidia.com/gpu``, cpu, memory,
    nodeSelector, taints), preempts lower-priority pods for a pod whose class may preempt, runs pods
    and ends those annotated with ``run-seconds``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self._started: dict[str, float] = {}

    def tick(self, t: float) -> None:
        nodes = [n for n in self.store.list(NODES) if _condition(n, "Ready") == "True"
                 and not (n.get("spec") or {}).get("unschedulable")]
        for pod in self.store.list(PODS):
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Pending" and not pod["metadata"].get("deletionTimestamp"):
                self._schedule(pod, nodes, self.store.list(PODS), t)  # fresh: earlier binds use room
            elif phase == "Running":
                self._run(pod, t)

    def _free(self, node: Obj, pods: list[Obj], without: set[str] = frozenset()) -> dict[str, float]:
        free = {k: quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
        for p in pods:
            if p["spec"].get("nodeName") == node["metadata"]["name"] and p["metadata"]["uid"] not in without \
                    and (p.get("status") or {}).get("phase") in ("Pending", "Running"):
                for k, v in pod_requests(p).items():
                    free[k] = free.get(k, 0) - v
        return free

    @staticmethod
    def _eligible(pod: Obj, node: Obj) -> bool:
        labels = node["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
            return False
        tolerations = pod["spec"].get("tolerations") or []
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
                    (tol.get("key") in (None, "", taint["key"]) if tol.get("operator") == "Exists"
                     else tol.get("key") == taint["key"] and tol.get("value") == taint.get("value"))
                    and tol.get("effect") in (None, "", taint["effect"]) for tol in tolerations):
                return False
        return True

    def _schedule(self, pod: Obj, nodes: list[Obj], pods: list[Obj], t: float) -> None:
        want = pod_requests(pod)

        def fits(free: dict[str, float]) -> bool:
            return all(free.get(k, 0) >= v for k, v in want.items() if k in (GPU, "cpu", "memory") or k in free)

        if pod["spec"].get("nodeName"):
            self._bind(pod, pod["spec"]["nodeName"], t)
            return
        candidates = [n for n in nodes if self._eligible(pod, n)]
        for n in candidates:
            if fits(self._free(n, pods)):
                self._bind(pod, n["metadata"]["name"], t)
                return
        status = json.loads(json.dumps(pod.get("status") or {}))
        if pod["spec"].get("preemptionPolicy", "PreemptLowerPriority") != "Never" and not status.get("nominatedNodeName"):
            best: tuple[str, list[Obj]] | None = None
            prio = pod["spec"].get("priority", 0)
            for n in candidates:
                lower = sorted((p for p in pods if p["spec"].get("nodeName") == n["metadata"]["name"]
                                and p["status"].get("phase") == "Running" and p["spec"].get("priority", 0) < prio),
                               key=lambda p: p["spec"].get("priority", 0))
                victims: list[Obj] = []
                for v in lower:
                    if fits(self._free(n, pods, {x["metadata"]["uid"] for x in victims})):
                        break
                    victims.append(v)
                if fits(self._free(n, pods, {x["metadata"]["uid"] for x in victims})) and \
                        (best is None or len(victims) < len(best[1])):
                    best = (n["metadata"]["name"], victims)
            if best and best[1]:
                for v in best[1]:
                    disrupt(self.store, v, "PreemptionByScheduler",
                            f"{self.__class__.__name__}: preempting to accommodate a higher priority pod")
                status["nominatedNodeName"] = best[0]
        missing = sorted({k for n in candidates for k, v in want.items() if self._free(n, pods).get(k, 0) < v})
        _set_condition(status, "PodScheduled", "False", "Unschedulable",
                       f"0/{len(nodes)} nodes are available: " + (", ".join(f"Insufficient {k}" for k in missing)
                                                                 or "node(s) didn't match Pod's node affinity/selector"))
        _write_status(self.store, PODS, pod, status)

    def _bind(self, pod: Obj, node: str, t: float) -> None:
        try:
            self.store.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                             "application/merge-patch+json", {"spec": {"nodeName": node}})
        except ApiError:
            return
        pod = self.store.get(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        status = json.loads(json.dumps(pod.get("status") or {}))
        status.update(phase="Running", startTime=now(), hostIP="10.0.0.1", podIP="10.244.0.1")
        status.pop("nominatedNodeName", None)
        for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            _set_condition(status, c, "True", "", "")
        status["containerStatuses"] = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                                        "started": True, "state": {"running": {"startedAt": now()}}}
                                       for c in pod["spec"]["containers"]]
        self._started[pod["metadata"]["uid"]] = t
        _write_status(self.store, PODS, pod, status)

    def _run(self, pod: Obj, t: float) -> None:
        run = _annotation(pod, RUN_SECONDS)
        started = self._started.setdefault(pod["metadata"]["uid"], t)
        if run is None or t - started < float(run):
            return
        code = int(_annotation(pod, EXIT_CODE) or 0)
        terminate(self.store, pod, code, "Completed" if code == 0 else "Error")


def terminate(store: Store, pod: Obj, exit_code: int, reason: str, condition: dict | None = None) -> None:
    status = json.loads(json.dumps(pod.get("status") or {}))
    status["phase"] = "Succeeded" if exit_code == 0 and condition is None else "Failed"
    for c in ("Ready", "ContainersReady"):
        _set_condition(status, c, "False", "PodCompleted" if exit_code == 0 else "PodFailed", "")
    if condition:
        _set_condition(status, **condition)
    status["containerStatuses"] = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                                    "started": False, "state": {"terminated": {
                                        "exitCode": exit_code, "reason": reason, "finishedAt": now()}}}
                                   for c in pod["spec"]["containers"]]
    _write_status(store, PODS, pod, status)


def disrupt(store: Store, pod: Obj, reason: str, message: str) -> None:
    """What preemption / eviction does to a pod: ``DisruptionTarget`` condition, then Failed (137)."""
    terminate(store, pod, 137, "Error", {"type_": "DisruptionTarget", "value": "True", "reason": reason,
                                         "message": message})


class JobController:
    """batch/v1 Jobs: pods from the template, parallelism/completions, backoffLimit, podFailurePolicy,
    activeDeadlineSeconds, suspend; Complete/Failed with the conditions of Kubernetes ≥ 1.31."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.default_run_seconds = 0.2
        self._started: dict[str, float] = {}
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
        """Preempt one running pod of the Job, like the scheduler would; → the pod's name."""
        running = [p for p in self.pods(namespace, job_name) if p["status"].get("phase") == "Running"]
        if not running:
            raise LookupError(f"job {namespace}/{job_name} has no running pod to preempt")
        disrupt(self.store, running[0], reason, "Preempted in order to admit a higher priority pod")
        return running[0]["metadata"]["name"]

    def tick(self, t: float) -> None:
        for job in self.store.list(JOBS):
            if _condition(job, "Complete") != "True" and _condition(job, "Failed") != "True":
                self._sync(job, t)

    def _sync(self, job: Obj, t: float) -> None:
        meta, spec = job["metadata"], job["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        status = json.loads(json.dumps(job.get("status") or {}))
        pods = self.store.list(PODS, ns, lambda p: (p["metadata"].get("labels") or {}).get(
            "batch.kubernetes.io/controller-uid") == uid)
        active = [p for p in pods if p["status"].get("phase") in ("Pending", "Running")]
        if spec.get("suspend"):
            for p in active:
                self._delete(p)
            _set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended")
            status.update(active=0, ready=0)
            status.pop("startTime", None)
            self._started.pop(uid, None)
            _write_status(self.store, JOBS, job, status)
            return
        if _condition(job, "Suspended") == "True":
            _set_condition(status, "Suspended", "False", "JobResumed", "Job resumed")
        status.setdefault("startTime", now())
        started = self._started.setdefault(uid, t)
        succeeded = sum(p["status"].get("phase") == "Succeeded" for p in pods)
        failed, fail_job = 0, None
        for p in pods:
            if p["status"].get("phase") == "Failed":
                action, why = _pod_failure_action(spec.get("podFailurePolicy"), p)
                failed += action in ("Count", "FailIndex")
                fail_job = fail_job or (why if action == "FailJob" else None)
        status.update(succeeded=succeeded, failed=failed)
        ads = spec.get("activeDeadlineSeconds")
        outcome = None
        if fail_job:
            outcome = ("PodFailurePolicy", fail_job)
        elif failed > spec.get("backoffLimit", 6):
            outcome = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif ads is not None and t - started >= ads:
            outcome = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if outcome:
            for p in active:
                self._delete(p)
            _set_condition(status, "FailureTarget", "True", *outcome)
            _set_condition(status, "Failed", "True", *outcome)
            status.update(active=0, ready=0)
        elif succeeded >= spec.get("completions", 1):
            for p in active:
                self._delete(p)
            _set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number "
                           "of succeeded pods")
            _set_condition(status, "Complete", "True", "CompletionsReached", "Reached expected number of "
                           "succeeded pods")
            status.update(active=0, ready=0, completionTime=now())
        else:
            want = min(spec.get("parallelism", 1), spec.get("completions", 1) - succeeded) - len(active)
            for _ in range(max(0, want)):
                active.append(self._create_pod(job))
            status.update(active=len(active), ready=sum(p["status"].get("phase") == "Running" for p in active))
        _write_status(self.store, JOBS, job, status)

    def _create_pod(self, job: Obj) -> Obj:
        meta, tmpl = job["metadata"], job["spec"]["template"]
        annotations = {**(tmpl.get("metadata") or {}).get("annotations", {}),
                       **{k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(PREFIX)}}
        annotations.update(self._runs.get((meta["namespace"], meta["name"]), {}))
        annotations.setdefault(RUN_SECONDS, str(self.default_run_seconds))
        pod = {"metadata": {"generateName": f"{meta['name']}-", "namespace": meta["namespace"],
                            "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
                            "annotations": annotations,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": json.loads(json.dumps(tmpl.get("spec") or {}))}
        return self.store.create(PODS, pod, meta["namespace"])

    def _delete(self, pod: Obj) -> None:
        try:
            self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError:
            pass


def _pod_failure_action(policy: dict | None, pod: Obj) -> tuple[str, str]:
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


class Controllers:
    """The background loop that ticks every enabled controller."""

    def __init__(self, store: Store, interval_s: float = 0.05) -> None:
        self.deployments = DeploymentController(store)
        self.pods = PodController(store)
        self.jobs = JobController(store)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kube-emulator-controllers", daemon=True)
        self.lock = threading.Lock()  # held during a tick; reset() takes it so no tick straddles a wipe
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        for c in (self.deployments, self.pods, self.jobs):
            c.reset()
        self.errors.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self.lock:
                t = time.monotonic()
                for c in (self.jobs, self.pods, self.deployments):
                    if c.enabled:
                        try:
                            c.tick(t)
                        except Exception as exc:  # kept for the fixture to fail the test loudly
                            self.errors.append(f"{type(c).__name__}: {exc!r}")
