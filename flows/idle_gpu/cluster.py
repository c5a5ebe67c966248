"""The idle-GPU room's Kubernetes side, over the shared adapter (:mod:`flows.common.kube`), on dicts.

It implements :class:`~flows.idle_gpu.controller.NightCluster`: GPU capacity, this room's Jobs and
their pods as :class:`~flows.idle_gpu.tracker.JobView`, and submit (create or adopt), suspend (a
merge patch of ``spec.suspend``) and delete (already gone is success).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flows.common.kube import JOBS, NODES, PODS, Kube, NotFound
from flows.idle_gpu.capacity import PRODUCT_LABEL, kube_nodes
from flows.idle_gpu.manifest import JOB_LABEL, SELECTOR, WINDOW_LABEL
from flows.idle_gpu.models import NodeCapacity
from flows.idle_gpu.tracker import JobView, PodView

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


class Cluster:
    def __init__(self, kube: Kube, namespace: str, product_label: str = PRODUCT_LABEL) -> None:
        self.kube, self.namespace, self.product_label = kube, namespace, product_label

    def nodes(self) -> tuple[list[NodeCapacity], list[str]]:
        """GPU nodes as Kubernetes sees them (free = allocatable - requested), and notes."""
        return kube_nodes(self.kube.list(PODS), self.kube.list(NODES), self.product_label)

    def submit(self, manifest: dict[str, Any]) -> bool:
        """Create the Job; False if it already exists (a re-run adopts it: idempotent)."""
        return self.kube.create_or_adopt(JOBS, manifest, self.namespace)[1]

    def views(self, window_tag: str | None = None) -> list[JobView]:
        selector = SELECTOR + (f",{WINDOW_LABEL}={window_tag}" if window_tag else "")
        jobs = self.kube.list(JOBS, self.namespace, labels=selector)
        pods = self.kube.list(PODS, self.namespace, labels=selector)
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for p in pods:
            by_uid.setdefault((p["metadata"].get("labels") or {}).get(CONTROLLER_UID, ""), []).append(p)
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
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if term.get("finishedAt"):
            finished = max(filter(None, [finished, _when(term["finishedAt"])]))
    disrupted = any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
    return PodView(uid=p["metadata"]["uid"], phase=status.get("phase") or "Pending",
                   started=_when(status.get("startTime")), finished=finished, disrupted=disrupted)
