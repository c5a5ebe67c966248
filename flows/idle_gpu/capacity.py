"""Idle capacity discovery: the Kubernetes API (allocatable minus requested GPUs) and DCGM metrics.

A GPU is idle when Kubernetes has it free *and* DCGM saw it quiet (low utilisation, little frame
buffer in use) over the lookback. Nodes that one source cannot see are noted, never skipped silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from flows.common.prom import PrometheusClient, quote_label_value, validate_duration, validate_name
from flows.idle_gpu.manifest import GPU
from flows.idle_gpu.models import NodeCapacity

PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery


def _gpus(resources: dict[str, Any] | None, field: str) -> int:
    values = (resources or {}).get(field) or {}
    return int(str(values.get(GPU, "0")) or 0)


def pod_gpu_request(pod: dict[str, Any]) -> int:
    """Effective GPU request: max(sum over containers, largest init container); limits if no request."""
    def one(c: dict[str, Any]) -> int:
        return _gpus(c.get("resources"), "requests") or _gpus(c.get("resources"), "limits")

    spec = pod.get("spec") or {}
    main = sum(one(c) for c in spec.get("containers") or [])
    init = max((one(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def kube_nodes(pods: Iterable[dict[str, Any]], nodes: Iterable[dict[str, Any]],
               product_label: str = PRODUCT_LABEL) -> tuple[list[NodeCapacity], list[str]]:
    """GPU nodes with allocatable, requested and free GPUs (free = allocatable - requested), from the
    cluster's Pods (all namespaces) and Nodes as the API returns them.

    A pending pod the scheduler nominated for a node (``status.nominatedNodeName``: it preempted pods
    there and waits for them to go) counts as requesting its GPUs on that node: they are its, not free.
    """
    notes: list[str] = []
    requested: dict[str, int] = {}
    for pod in pods:
        status = pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName") or status.get("nominatedNodeName")
        if node and (status.get("phase") or "Pending") not in ("Succeeded", "Failed"):
            requested[node] = requested.get(node, 0) + pod_gpu_request(pod)
    out = []
    for n in nodes:
        status, meta = n.get("status") or {}, n["metadata"]
        alloc = int(str((status.get("allocatable") or {}).get(GPU, "0")))
        if alloc <= 0:
            continue
        name = meta["name"]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        cordoned = bool((n.get("spec") or {}).get("unschedulable"))
        if cordoned or not ready:
            notes.append(f"node {name}: {'cordoned' if cordoned else 'not Ready'}, not used")
            continue
        req = min(alloc, requested.get(name, 0))
        out.append(NodeCapacity(name=name, product=(meta.get("labels") or {}).get(product_label, "unknown"),
                                allocatable=alloc, requested=req, idle=alloc - req))
    return out, notes


# the scheduler's verdicts that preempting lower-priority pods (ours) would not place the pod
NO_HELP = ("No preemption victims found", "Preemption is not helpful")


def waiting_gpus(pods: Iterable[dict[str, Any]], own_namespace: str) -> int:
    """GPUs that pods of other workloads wait for: pending, neither placed on nor nominated for a node,
    at priority 0 or above (not a deliberately low batch class, as ours is), requesting GPUs, and either
    not tried by the scheduler yet or unschedulable for want of GPUs (``Insufficient nvidia.com/gpu``).

    Inference scaling up: any GPU that frees up is theirs, so a night submits nothing new meanwhile.
    A pod that waits for anything else (a node selector no node matches, a missing volume), or that
    preempting every lower-priority pod would not place (the scheduler says so), is not counted: our
    jobs do not stand in its way, and it would otherwise hold the whole night back.
    """
    total = 0
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        if meta.get("namespace") == own_namespace or meta.get("deletionTimestamp") or spec.get("nodeName"):
            continue
        if (status.get("phase") or "Pending") != "Pending" or status.get("nominatedNodeName"):
            continue
        gpus = pod_gpu_request(pod)
        if not gpus or int(spec.get("priority") or 0) < 0:
            continue
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        msg = (cond or {}).get("message") or ""
        if cond is None or (cond.get("status") == "False" and f"Insufficient {GPU}" in msg
                            and not any(s in msg for s in NO_HELP)):
            total += gpus
    return total


def scale_up_gpus(hpas: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]], own_namespace: str) -> dict[str, int]:
    """GPUs the next scale-up waves of GPU workloads will want, per HorizontalPodAutoscaler
    (``namespace/name``) held back by its scale-up rate (``ScalingLimited`` True, reason
    ``ScaleUpLimit``). Between two waves nothing of theirs is pending, and a job started on the GPUs
    the next wave takes is preempted within a minute.

    Per HPA: (the replica count its metrics ask for, at most ``maxReplicas``, minus the count it set,
    ``status.desiredReplicas``) x the GPUs one of its pods requests. The count its metrics ask for is
    the HPA's own rule, ``ceil(currentReplicas x current / target)``, the largest over its metrics;
    ``maxReplicas`` when its status does not say.
    A workload is a GPU one if a pod it owns requests GPUs (a Deployment owns its pods through a
    ReplicaSet named ``<deployment>-<pod-template-hash>``); other autoscalers never hold a night back.
    """
    per_pod: dict[tuple[Any, Any, str], int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        gpus = pod_gpu_request(pod)
        if meta.get("namespace") == own_namespace or not gpus:
            continue
        for ref in meta.get("ownerReferences") or []:
            kind, name = ref.get("kind"), ref.get("name") or ""
            owners = [(meta.get("namespace"), kind, name)]
            if kind == "ReplicaSet":
                owners.append((meta.get("namespace"), "Deployment", name.rsplit("-", 1)[0]))
            for o in owners:
                per_pod[o] = max(per_pod.get(o, 0), gpus)
    out = {}
    for h in hpas:
        meta, spec, status = h.get("metadata") or {}, h.get("spec") or {}, h.get("status") or {}
        ref = spec.get("scaleTargetRef") or {}
        gpus = per_pod.get((meta.get("namespace"), ref.get("kind"), ref.get("name") or ""), 0)
        if not gpus or not any(c.get("type") == "ScalingLimited" and c.get("status") == "True"
                               and c.get("reason") == "ScaleUpLimit" for c in status.get("conditions") or []):
            continue
        top = int(spec.get("maxReplicas") or 0)
        wanted = min(top, _metrics_ask(spec, status) or top)
        coming = max(0, wanted - int(status.get("desiredReplicas") or status.get("currentReplicas") or 0))
        if coming:
            out[f"{meta.get('namespace')}/{meta.get('name')}"] = coming * gpus
    return dict(sorted(out.items()))


def _metrics_ask(spec: dict[str, Any], status: dict[str, Any]) -> int | None:
    """The replica count an HPA's metrics ask for (its algorithm, without tolerance or limits); each
    spec metric is matched to its status by type and metric name."""
    from kubernetes.utils.quantity import parse_quantity  # only here: 0.5 s to import

    def ident(m: dict[str, Any]) -> tuple[str, str, Any]:
        kind = m.get("type") or ""
        body = m.get(kind[:1].lower() + kind[1:]) or {}  # Resource -> resource, Pods -> pods, ...
        return kind, (body.get("metric") or {}).get("name") or body.get("name"), body

    current = int(status.get("currentReplicas") or 0)
    now_by = {ident(c)[:2]: ident(c)[2].get("current") or {} for c in status.get("currentMetrics") or []}
    best = None
    for m in spec.get("metrics") or []:
        kind, name, body = ident(m)
        target, now = body.get("target") or {}, now_by.get((kind, name), {})
        field = {"Utilization": "averageUtilization", "AverageValue": "averageValue", "Value": "value"}.get(
            target.get("type") or "")
        try:
            ask = math.ceil(current * float(parse_quantity(now[field]) / parse_quantity(target[field])))
        except (KeyError, TypeError, ValueError, ArithmeticError):  # absent, zero or malformed: not this one
            continue
        best = max(best or 0, ask)
    return best


def dcgm_idle_gpus(prom: PrometheusClient, *, lookback: str = "15m", util_below: float = 10.0,
                   fb_used_below_mib: float = 1024.0, node_label: str = "Hostname") -> dict[str, int]:
    """Per node, GPUs whose utilisation and frame-buffer use stayed low over the whole lookback."""
    lb, nl = validate_duration(lookback), validate_name(node_label)
    q = (f"count by ({nl}) ((max_over_time(DCGM_FI_DEV_GPU_UTIL[{lb}]) < {float(util_below)!r})"
         f" and on ({nl}, UUID) (max_over_time(DCGM_FI_DEV_FB_USED[{lb}]) < {float(fb_used_below_mib)!r}))")
    idle = {s.labels.get(nl, ""): int(s.value) for s in prom.query(q) if s.value == s.value}
    seen = prom.query(f"count by ({nl}) (DCGM_FI_DEV_GPU_UTIL)")
    return {s.labels.get(nl, ""): idle.get(s.labels.get(nl, ""), 0) for s in seen}


def combine(nodes: Iterable[NodeCapacity], dcgm: dict[str, int] | None) -> tuple[list[NodeCapacity], list[str]]:
    """Idle = min(free in Kubernetes, quiet in DCGM). Without DCGM data for a node, it has none idle."""
    out, notes = [], []
    for n in nodes:
        if dcgm is None:
            out.append(n)
            continue
        if n.name not in dcgm:
            notes.append(f"node {n.name}: no DCGM metrics, not used")
            out.append(n.model_copy(update={"idle": 0}))
            continue
        out.append(n.model_copy(update={"idle": min(n.idle, dcgm[n.name])}))
    return out, notes


def demand_query(batch_namespace: str, util_at_least: float) -> str:
    """GPUs busy with anything but offline batch work (0/1 per GPU, summed: 0 is data, not absence)."""
    return (f"sum(DCGM_FI_DEV_GPU_UTIL{{namespace!={quote_label_value(batch_namespace)}}}"
            f" >= bool {float(util_at_least)!r})")


def demand_history(prom: PrometheusClient, query: str, window_start: datetime, window_end: datetime,
                   nights: int, step_s: int) -> list[tuple[float, float]]:
    """The demand series over the same clock hours of the last ``nights`` nights."""
    points: list[tuple[float, float]] = []
    for k in range(1, nights + 1):
        s, e = window_start - timedelta(days=k), window_end - timedelta(days=k)
        for _labels, values in prom.query_range(query, s.timestamp(), e.timestamp(), step_s):
            points.extend(values)
    return points

