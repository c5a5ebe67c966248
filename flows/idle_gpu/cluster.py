"""This room's Kubernetes operations, over the official client: read Jobs/pods, submit, suspend, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flows.common.errors import BackendUnavailable, InferopsError
from flows.common.kube import is_not_found, retry_on_conflict
from flows.idle_gpu.manifest import JOB_LABEL, SELECTOR, WINDOW_LABEL
from flows.idle_gpu.tracker import JobView, PodView


@contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """Any API failure the caller did not handle becomes one line naming what was being done."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except urllib3.exceptions.HTTPError as exc:
        raise BackendUnavailable(f"Kubernetes API unreachable ({what}): {exc}") from None
    except ApiException as exc:
        try:
            detail = json.loads(exc.body or "{}").get("message", "")
        except ValueError:
            detail = ""
        raise InferopsError(f"Kubernetes refused to {what}: HTTP {exc.status} {exc.reason} {detail}") from None


class Cluster:
    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace

    def submit(self, manifest: dict) -> bool:
        """Create the Job; False if it already exists (a re-run adopts it: idempotent)."""
        from kubernetes.client.exceptions import ApiException

        with _api_errors(f"create job {manifest['metadata']['name']}"):
            try:
                self.batch.create_namespaced_job(self.namespace, manifest)
                return True
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise

    def views(self, window_tag: str | None = None) -> list[JobView]:
        selector = SELECTOR + (f",{WINDOW_LABEL}={window_tag}" if window_tag else "")
        with _api_errors(f"list jobs in {self.namespace}"):
            jobs = self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        by_uid: dict[str, list[Any]] = {}
        for p in pods:
            uid = (p.metadata.labels or {}).get("batch.kubernetes.io/controller-uid", "")
            by_uid.setdefault(uid, []).append(p)
        return [_view(j, by_uid.get(j.metadata.uid, [])) for j in jobs]

    def suspend(self, name: str) -> bool:
        """Stop a Job gracefully: its pods get SIGTERM and their grace period. False if it is gone."""
        def op() -> bool:
            try:
                self.batch.patch_namespaced_job(name, self.namespace, {"spec": {"suspend": True}})
                return True
            except Exception as exc:
                if is_not_found(exc):
                    return False
                raise

        with _api_errors(f"suspend job {name}"):
            return retry_on_conflict(op)

    def delete(self, name: str, grace_period_s: int) -> None:
        """Delete a Job and its pods; already gone is success."""
        from kubernetes import client

        with _api_errors(f"delete job {name}"):
            try:
                self.batch.delete_namespaced_job(name, self.namespace, body=client.V1DeleteOptions(
                    propagation_policy="Background", grace_period_seconds=grace_period_s))
            except Exception as exc:
                if not is_not_found(exc):
                    raise


def _when(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _view(job: Any, pods: list[Any]) -> JobView:
    conds = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
    if "Complete" in conds:
        state, reason = "complete", ""
    elif "Failed" in conds:
        state, reason = "failed", conds["Failed"].reason or "Failed"
    elif job.spec.suspend:
        state, reason = "suspended", ""
    else:
        state, reason = "active", ""
    return JobView(
        k8s_name=job.metadata.name,
        job=(job.metadata.labels or {}).get(JOB_LABEL, ""),
        state=state,
        reason=reason,
        node=(job.metadata.annotations or {}).get("inferops.io/planned-node", ""),
        pods=tuple(_pod(p) for p in pods),
    )


def _pod(p: Any) -> PodView:
    finished = None
    for cs in p.status.container_statuses or []:
        term = cs.state.terminated if cs.state else None
        if term and term.finished_at:
            finished = max(filter(None, [finished, _when(term.finished_at)]))
    disrupted = any(c.type == "DisruptionTarget" and c.status == "True" for c in p.status.conditions or [])
    return PodView(uid=p.metadata.uid, phase=p.status.phase or "Pending", started=_when(p.status.start_time),
                   finished=finished, disrupted=disrupted)
