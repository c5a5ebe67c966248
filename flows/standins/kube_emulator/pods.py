"""kube-scheduler (filters, scoring, preemption) and the kubelet (container start, probes, exits,
graceful termination), on the emulated clock."""

from __future__ import annotations

import ipaddress
import math
from collections import defaultdict
from dataclasses import dataclass, field

from flows.standins.kube_emulator.clock import parse_iso
from flows.standins.kube_emulator.deployments import DeploymentController
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.objects import (
    DEPLOYMENTS,
    EXIT_CODE,
    GPU,
    NEVER,
    NODES,
    PODS,
    READY_AFTER,
    REPLICASETS,
    RUN_SECONDS,
    SHUTDOWN_SECONDS,
    SIGTERM_EXIT,
    Events,
    add_condition,
    annotation,
    condition,
    copy_json,
    is_terminal,
    is_terminating,
    owner,
    pod_requests,
    quantity,
    set_condition,
    write_status,
)
from flows.standins.kube_emulator.store import Obj, Store
from flows.standins.kube_emulator.validation import selector_matches


@dataclass
class _Run:
    """What the kubelet knows of one pod's containers (emulated times)."""
    created: float  # bound to the node
    start: float  # containers running (``NEVER`` while stalled)
    started: float  # startup probe passed
    ready: float  # readiness probe passed
    fail: float  # startup probe gave up: the container restarts
    exit: float  # the process ends by itself (run-seconds)
    exit_code: int = 0
    restarts: int = 0
    stop: float = NEVER  # terminated after deletion
    stop_code: int = 143
    config_error: str = ""
    written: tuple = field(default_factory=tuple)


def _probe_times(probe: Obj | None, start: float, healthy: float, not_before: float) -> tuple[float, float]:
    """(first success, give-up time) of a probe ticking every period from ``start``, whose results count
    from ``initialDelaySeconds`` and ``not_before`` on, for an application healthy from ``healthy``."""
    if not probe:
        return max(not_before, start), NEVER
    period = max(probe.get("periodSeconds", 10), 1)
    counted = max(start + probe.get("initialDelaySeconds", 0), not_before)
    first = math.ceil((counted - start) / period - 1e-9)  # the first tick whose result counts
    ok = max(first, math.ceil((healthy - start) / period - 1e-9))
    failures = ok - first
    threshold = probe.get("failureThreshold", 3)
    if failures >= threshold:
        return NEVER, start + (first + threshold - 1) * period
    return start + (ok + probe.get("successThreshold", 1) - 1) * period, NEVER


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
        # the cluster's pod network: every pod gets a unique address from it while it exists (a test
        # that serves a pod's endpoints itself uses a loopback range, e.g. 127.42.0.0/16)
        self.pod_cidr = "10.244.0.0/16"
        self._ips: dict[str, str] = {}
        self._next_ip = 0
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
            if pod["spec"].get("nodeName") and not is_terminal(pod):
                due = min(due, self._kubelet(pod, t))
            elif is_terminating(pod) and not is_terminal(pod):  # PodGC: an unscheduled pod being deleted fails
                status = copy_json(pod.get("status") or {})
                status["phase"] = "Failed"
                write_status(self.store, PODS, pod, status)
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self._runs if u not in live]:
            del self._runs[uid]
        for uid in [u for u in self._ips if u not in live]:
            del self._ips[uid]
        return due

    def pod_ip(self, pod: Obj) -> str:
        """The pod's address: unique in ``pod_cidr`` among existing pods (reused once a pod is gone)."""
        uid = pod["metadata"]["uid"]
        if uid not in self._ips:
            net = ipaddress.ip_network(self.pod_cidr)
            used = set(self._ips.values())
            hosts = net.num_addresses - 2
            for _ in range(hosts):
                self._next_ip = self._next_ip % hosts + 1
                ip = str(net.network_address + self._next_ip)
                if ip not in used:
                    self._ips[uid] = ip
                    break
            else:
                raise RuntimeError(f"pod network {self.pod_cidr} is full")
        return self._ips[uid]

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
                if not is_terminal(p) and name in used:
                    by_node[name].append(p)
                    for k, v in pod_requests(p).items():
                        used[name][k] = used[name].get(k, 0) + v
                    used[name]["pods"] = used[name].get("pods", 0) + 1
            elif not is_terminating(p) and not is_terminal(p):
                pending.append(p)
        if not pending:
            return NEVER
        pending.sort(key=lambda p: (-p["spec"].get("priority", 0), p["metadata"]["creationTimestamp"],
                                    p["metadata"]["name"]))
        nominated: dict[str, list[Obj]] = defaultdict(list)
        for p in pending:
            nn = (p.get("status") or {}).get("nominatedNodeName")
            if nn in nodes:
                nominated[nn].append(p)
        victims_now: set[str] = set()  # pods preempted earlier in this pass (the snapshot predates it)
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
                node_name = self._preempt(pod, want, passing, nodes, by_node, used, t, nominated, victims_now)
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
        return NEVER

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
        status = copy_json(bound.get("status") or {})
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
        status = copy_json(pod.get("status") or {})
        set_condition(status, "PodScheduled", "False", "Unschedulable", msg, self.store.now())
        if nominated:
            status["nominatedNodeName"] = nominated
        write_status(self.store, PODS, pod, status)
        uid = pod["metadata"]["uid"]
        if self._unschedulable.get(uid) != msg:
            self._unschedulable[uid] = msg
            self.events.record(pod, "FailedScheduling", msg, "default-scheduler", "Warning")

    def _preempt(self, pod: Obj, want: dict[str, float], passing: list[str], nodes: dict[str, Obj],
                 by_node: dict[str, list[Obj]], used: dict[str, dict[str, float]], t: float,
                 nominated_pods: dict[str, list[Obj]] | None = None, chosen: set[str] | None = None) -> str | None:
        """DefaultPreemption: the node where the fewest, lowest-priority victims make room; the victims
        are deleted gracefully (https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/).

        As the scheduler's filters run with nominated pods added, the requests of pods of equal or higher
        priority already nominated for a node count as taken there, and a pod already chosen as a victim
        (terminating) is not chosen again: several preemptors at once each make their own room."""
        nominated_pods = nominated_pods if nominated_pods is not None else defaultdict(list)
        chosen = chosen if chosen is not None else set()
        prio = pod["spec"].get("priority", 0)
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if nominated in nodes and any(is_terminating(p) and p["spec"].get("priority", 0) < prio
                                      for p in by_node[nominated]):
            return nominated  # victims are still terminating: wait for them
        best = None
        for name in passing:
            node = nodes[name]
            alloc = self._allocatable(node)
            lower = [p for p in by_node[name] if p["spec"].get("priority", 0) < prio and not is_terminating(p)
                     and p["metadata"]["uid"] not in chosen]
            reserved: dict[str, float] = defaultdict(float)
            for other in nominated_pods[name]:
                if other is not pod and other["spec"].get("priority", 0) >= prio:
                    for k, q in pod_requests(other).items():
                        reserved[k] += q

            def free_without(victims: list[Obj], name: str = name, alloc: dict = alloc,
                             reserved: dict = reserved) -> dict[str, float]:
                free = {k: v - used[name].get(k, 0) - reserved.get(k, 0) for k, v in alloc.items()}
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
            chosen.add(v["metadata"]["uid"])
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
        run = _Run(created=t, start=start, started=NEVER, ready=NEVER, fail=NEVER, exit=NEVER)
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
        if run.started == NEVER:
            run.ready = NEVER
        else:
            run.ready, fail_r = _probe_times(c.get("readinessProbe"), start, healthy, run.started)
            if run.ready == NEVER:  # readiness failures never restart a container
                run.ready = NEVER
        run.ready_after = ready_after  # type: ignore[attr-defined]
        secs = annotation(pod, RUN_SECONDS)
        run.exit = start + float(secs) if secs is not None else NEVER
        run.exit_code = int(annotation(pod, EXIT_CODE) or 0)

    def _kubelet(self, pod: Obj, t: float) -> float:
        uid = pod["metadata"]["uid"]
        run = self._runs.get(uid)
        if run is None:
            run = self._runs[uid] = self._new_run(pod, t)
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and run.stop == NEVER:
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
            return NEVER
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
                return NEVER
            self._restart(pod, run, run.exit)
        if t >= run.fail:
            self.events.record(pod, "Unhealthy", "Startup probe failed: HTTP probe failed with statuscode: 503",
                               "kubelet", "Warning")
            self._restart(pod, run, run.fail)
        self._write(pod, run, "Running")
        return min(x for x in (run.started, run.ready, run.fail, run.exit, run.stop, run.start)
                   if x > t) if any(x > t for x in (run.started, run.ready, run.fail, run.exit, run.stop)) \
            else NEVER

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
        status = copy_json(pod.get("status") or {})
        now = self.store.now()
        status.update(phase=phase, hostIP="10.0.0.1", podIP=self.pod_ip(pod), startTime=status.get("startTime") or now,
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
                  started=self.store.clock.iso(run.start) if run and run.start != NEVER else None)


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
    status = copy_json(pod.get("status") or {})
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
