"""``batch/v1`` Job manifests for planned offline jobs: preemptible, bounded by the window, labelled."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flows.idle_gpu.models import OfflineJob, check_label_value

GPU = "nvidia.com/gpu"
MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
JOB_LABEL = "inferops.io/job"
WINDOW_LABEL = "inferops.io/window"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
HOSTNAME = "kubernetes.io/hostname"
# selects every Job this room ever submitted (the `stop` command and the watcher use it)
SELECTOR = f"{MANAGED_BY}=inferops,{COMPONENT}=idle-gpu"


def window_tag(window_start: datetime) -> str:
    """A label-safe id of one night's window, e.g. ``20261128t0100``."""
    return window_start.strftime("%Y%m%dt%H%M")


def job_name(job: str, window_start: datetime, attempt: int = 0) -> str:
    """Deterministic per job, window and attempt: re-running the flow adopts what it already submitted."""
    return f"idle-{job}-{window_tag(window_start)}" + (f"-r{attempt}" if attempt else "")


def job_manifest(job: OfflineJob, *, node: str, namespace: str, window_start: datetime, window_end: datetime,
                 active_deadline_s: int, priority_class: str, grace_period_s: int,
                 kueue_queue: str | None = None, attempt: int = 0) -> dict[str, Any]:
    labels = {
        MANAGED_BY: "inferops",
        COMPONENT: "idle-gpu",
        JOB_LABEL: job.name,
        WINDOW_LABEL: window_tag(window_start),
        "inferops.io/team": job.team,
        "inferops.io/cost-center": job.cost_center,
        "inferops.io/checkpointable": str(job.checkpointable).lower(),
    }
    if kueue_queue:
        labels[KUEUE_QUEUE] = check_label_value(kueue_queue, "Kueue LocalQueue")
    annotations = {
        "inferops.io/estimated-hours": f"{job.estimated_hours:g}",
        "inferops.io/planned-node": node,
        "inferops.io/window-end": window_end.isoformat(),
    }
    gpus = {GPU: str(job.gpus)}
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # the job's own failures are final; preemptions are ignored below
        "activeDeadlineSeconds": max(1, int(active_deadline_s)),
        "ttlSecondsAfterFinished": 7 * 24 * 3600,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
        "template": {
            "metadata": {"labels": dict(labels), "annotations": {**job.annotations, **annotations}},
            "spec": {
                "restartPolicy": "Never",  # required by podFailurePolicy
                "automountServiceAccountToken": False,  # batch work never needs the Kubernetes API
                # Pod Security "restricted": the offline-batch namespace enforces it
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "priorityClassName": priority_class,
                "terminationGracePeriodSeconds": grace_period_s,
                "nodeSelector": {HOSTNAME: node},
                "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{
                    "name": "job",
                    "image": job.image,
                    "command": list(job.command),
                    "resources": {"requests": dict(gpus), "limits": dict(gpus)},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "env": [
                        {"name": "INFEROPS_JOB", "value": job.name},
                        {"name": "INFEROPS_CHECKPOINTABLE", "value": str(job.checkpointable).lower()},
                        {"name": "INFEROPS_WINDOW_END", "value": window_end.isoformat()},
                    ],
                }],
            },
        },
    }
    if kueue_queue:
        spec["suspend"] = True  # Kueue admits (unsuspends) it when the LocalQueue has quota
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job.name, window_start, attempt), "namespace": namespace, "labels": labels,
                     "annotations": annotations},
        "spec": spec,
    }
