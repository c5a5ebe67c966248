"""batch/v1 Jobs and the TTL-after-finished controller
(https://kubernetes.io/docs/concepts/workloads/controllers/job/,
https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/)."""

from __future__ import annotations

from collections import defaultdict

from flows.standins.kube_emulator import objects as ko
from flows.standins.kube_emulator.clock import parse_iso
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.pods import PodController
from flows.standins.kube_emulator.store import Obj, Store


class JobController:
    """batch/v1 Jobs (https://kubernetes.io/docs/concepts/workloads/controllers/job/) and their TTL
    (https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/)."""

    def __init__(self, store: Store, events: ko.Events, pods: PodController) -> None:
        self.store, self.events, self.pod_controller = store, events, pods
        self.reset()

    def reset(self) -> None:
        self.enabled = True
        self.default_run_seconds = 0.2
        self._runs: dict[tuple[str, str], dict[str, str]] = {}

    def run_for(self, namespace: str, job_name: str, seconds: float, exit_code: int = 0) -> None:
        """How long the Job's next pods run and how they exit (wins over its annotations)."""
        self._runs[(namespace, job_name)] = {ko.RUN_SECONDS: str(seconds), ko.EXIT_CODE: str(exit_code)}

    def pods(self, namespace: str, job_name: str) -> list[Obj]:
        job = self.store.get(ko.JOBS, namespace, job_name)
        uid = job["metadata"]["uid"]
        return self.store.list(ko.PODS, namespace, lambda p: (p["metadata"].get("labels") or {}).get(
            "batch.kubernetes.io/controller-uid") == uid)

    def preempt(self, namespace: str, job_name: str, reason: str = "PreemptionByScheduler") -> str:
        """Preempt one running pod of the Job as the scheduler does (graceful deletion); → the pod's name."""
        running = [p for p in self.pods(namespace, job_name)
                   if p["status"].get("phase") == "Running" and not ko.is_terminating(p)]
        if not running:
            raise LookupError(f"job {namespace}/{job_name} has no running pod to preempt")
        victim = running[0]
        if reason == "PreemptionByScheduler":
            self.pod_controller.preempt_pod(victim, f"Preempted by a test on node {victim['spec'].get('nodeName')}")
        else:
            ko.add_condition(self.store, victim, "DisruptionTarget", reason, "Preempted in order to admit a higher "
                          "priority pod")
            self.store.delete(ko.PODS, namespace, victim["metadata"]["name"])
        return victim["metadata"]["name"]

    def tick(self, t: float) -> float:
        due = ko.NEVER
        by_job: dict[str, list[Obj]] = defaultdict(list)
        for p in self.store.peek(ko.PODS):
            uid = (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/controller-uid")
            if uid:
                by_job[uid].append(p)
        jobs = self.store.peek(ko.JOBS)
        for job in jobs:
            due = min(due, self._sync(job, by_job.get(job["metadata"]["uid"], []), t))
        live = {j["metadata"]["uid"] for j in jobs}
        for p in self.store.peek(ko.PODS):  # orphans (their Job deleted, or orphaned) lose the tracking finalizer
            if ko.JOB_FINALIZER in (p["metadata"].get("finalizers") or []) and \
                    (ko.owner(p, "Job") or {}).get("uid") not in live:
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
        status = ko.copy_json(job.get("status") or {})
        now = self.store.clock.iso(t)
        # account finished pods exactly once, then release their tracking finalizer
        for p in pods:
            if ko.is_terminal(p) and ko.JOB_FINALIZER in (p["metadata"].get("finalizers") or []):
                if p["status"]["phase"] == "Succeeded":
                    status["succeeded"] = status.get("succeeded", 0) + 1
                else:
                    action, why = pod_failure_action(spec.get("podFailurePolicy"), p)
                    if action in ("Count", "FailIndex"):
                        status["failed"] = status.get("failed", 0) + 1
                    elif action == "FailJob" and not any(c["type"] == "FailureTarget" for c in
                                                         status.get("conditions") or []):
                        status["failed"] = status.get("failed", 0) + 1
                        ko.set_condition(status, "FailureTarget", "True", "PodFailurePolicy", why, now)
                self._release(p)
        finished = self._finished(job)
        if finished is not None:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is None:
                return ko.NEVER
            if t >= finished + ttl:
                try:
                    self.store.delete(ko.JOBS, ns, meta["name"], propagation="Background")
                except ApiError:
                    pass
                return ko.NEVER
            ko.write_status(self.store, ko.JOBS, job, status)
            return finished + ttl
        running = [p for p in pods if not ko.is_terminal(p)]
        active = [p for p in running if not ko.is_terminating(p)]
        terminating = [p for p in running if ko.is_terminating(p)]
        due = ko.NEVER
        failure = next((c for c in status.get("conditions") or [] if c["type"] == "FailureTarget"), None)
        success = next((c for c in status.get("conditions") or [] if c["type"] == "SuccessCriteriaMet"), None)
        if spec.get("suspend") and not failure and not success:
            for p in active:
                self._delete(job, p)
            if ko.condition(job, "Suspended") != "True":
                self.events.record(job, "Suspended", "Job suspended", "job-controller")
            ko.set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now)
            status.pop("startTime", None)
            status.update(active=0, ready=0, terminating=len(running))
            ko.write_status(self.store, ko.JOBS, job, status)
            return ko.NEVER
        if ko.condition(job, "Suspended") == "True":
            ko.set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
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
                ko.set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods", now)
                success = True
            if outcome:
                ko.set_condition(status, "FailureTarget", "True", *outcome, now)
                failure = True
            elif ads is not None and not success:
                due = started + ads
        if failure or success:
            for p in active:
                self._delete(job, p)
            if not running:
                if failure:
                    c = next(c for c in status["conditions"] if c["type"] == "FailureTarget")
                    ko.set_condition(status, "Failed", "True", c["reason"], c["message"], now)
                    self.events.record(job, c["reason"], c["message"], "job-controller", "Warning")
                else:
                    ko.set_condition(status, "Complete", "True", "CompletionsReached",
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
            status.update(active=len(active), ready=sum(ko.is_ready(p) for p in active), terminating=len(terminating))
        status.setdefault("succeeded", 0)
        status.setdefault("failed", 0)
        status["uncountedTerminatedPods"] = {}
        ko.write_status(self.store, ko.JOBS, job, status)
        return due

    def _release(self, pod: Obj) -> None:
        fins = [f for f in pod["metadata"].get("finalizers") or [] if f != ko.JOB_FINALIZER]
        try:
            self.store.patch(ko.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                             "application/merge-patch+json", {"metadata": {"finalizers": fins or None}},
                             internal=True)
        except ApiError:
            pass

    def _create_pod(self, job: Obj) -> Obj | None:
        meta, tmpl = job["metadata"], job["spec"]["template"]
        annotations = {**((tmpl.get("metadata") or {}).get("annotations") or {}),
                       **{k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(ko.PREFIX)}}
        annotations.update(self._runs.get((meta["namespace"], meta["name"]), {}))
        annotations.setdefault(ko.RUN_SECONDS, str(self.default_run_seconds))
        return ko.create_owned_pod(self.store, self.events, job, "job-controller", annotations, [ko.JOB_FINALIZER])

    def _delete(self, job: Obj, pod: Obj) -> None:
        try:
            self.store.delete(ko.PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
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
