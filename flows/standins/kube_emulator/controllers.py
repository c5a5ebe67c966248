"""The controllers the product depends on, as kube-controller-manager, kube-scheduler and the kubelet
run them, on the emulator's clock (``store.clock``). One background thread ticks them (``Controllers``,
here); a tick does nothing unless the store changed or a timer is due. One module each:

* ``deployments.DeploymentController``: Deployment → ReplicaSet → Pods, rolling update with maxSurge/maxUnavailable,
  Recreate, progress deadline, revision history
  (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/,
  https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/).
* ``pods.PodController``: the scheduler (requests incl. ``nvidia.com/gpu``, nodeSelector, required node
  affinity, taints/tolerations, priority and preemption by graceful deletion) and the kubelet (container
  start, startup/readiness probes, run-to-completion, graceful termination with preStop and SIGTERM).
* ``jobs.JobController``: parallelism/completions, backoffLimit, activeDeadlineSeconds, podFailurePolicy,
  suspend, pod-tracking finalizers, and the TTL-after-finished controller.
* ``autoscaling.HPAController``: autoscaling/v2 on metric values the test sets (``set_metric``), with behavior
  (stabilization windows, policies). ``autoscaling.PDBController``: PodDisruptionBudget status.
* ``objects.Events``: core/v1 Events as the components record them (deduplicated with ``count``).

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

import threading

from flows.standins.kube_emulator.autoscaling import HPAController, PDBController
from flows.standins.kube_emulator.deployments import DeploymentController
from flows.standins.kube_emulator.jobs import JobController
from flows.standins.kube_emulator.objects import (
    DEPLOYMENTS,
    EVENTS,
    GPU,
    HPAS,
    JOBS,
    NEVER,
    NODES,
    PDBS,
    PODS,
    REPLICASETS,
    Events,
    add_condition,
    pod_requests,
    quantity,
)
from flows.standins.kube_emulator.pods import PodController, disrupt, terminate
from flows.standins.kube_emulator.store import Store

__all__ = ["DEPLOYMENTS", "EVENTS", "GPU", "HPAS", "JOBS", "NODES", "PDBS", "PODS", "REPLICASETS", "Controllers",
           "add_condition", "disrupt", "pod_requests", "quantity", "terminate"]


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
                due = NEVER
                for c in self.all():
                    if c.enabled:
                        try:
                            due = min(due, c.tick(t))
                        except Exception as exc:  # kept for the fixture to fail the test loudly
                            import traceback

                            self.errors.append(f"{type(c).__name__}: {exc!r}\n{traceback.format_exc()}")
                            due = t + 1
                self._due = due
