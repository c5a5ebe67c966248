"""Pure core of the idle-GPU room: window, queue, forecast, packer, Job manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import kubernetes_validate
import numpy as np
import pytest

from flows.common.errors import BadInput
from flows.idle_gpu.forecast import forecast_demand
from flows.idle_gpu.manifest import job_manifest, job_name
from flows.idle_gpu.models import CapacitySnapshot, NodeCapacity, OfflineJob, PlanPolicy
from flows.idle_gpu.packer import Busy, pack
from flows.idle_gpu.queue import parse_queue
from flows.idle_gpu.window import resolve_window

T = datetime(2026, 11, 28, 0, 30, tzinfo=UTC)


def job(name: str, gpus: int = 1, hours: float = 1.0, **kw) -> OfflineJob:
    return OfflineJob(name=name, image="registry.local/eval:1", command=["python", "-m", "eval"], gpus=gpus,
                      estimated_hours=hours, **kw)


def snap(*idle: int, alloc: int = 8, forecast: list[float] | None = None, slot_s: int = 3600) -> CapacitySnapshot:
    return CapacitySnapshot(taken_at=T, nodes=[NodeCapacity(name=f"gpu-{i}", product="NVIDIA-H100-80GB-HBM3",
                                                            allocatable=alloc, requested=alloc - n, idle=n)
                                               for i, n in enumerate(idle)],
                            demand_forecast=forecast or [], forecast_slot_seconds=slot_s)


# --- window -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("now, start, end", [
    ("2026-11-28T00:30", "2026-11-28T01:00", "2026-11-28T07:00"),  # before: tonight's
    ("2026-11-28T03:00", "2026-11-28T01:00", "2026-11-28T07:00"),  # inside: the one in progress
    ("2026-11-28T08:00", "2026-11-29T01:00", "2026-11-29T07:00"),  # after: tomorrow's
])
def test_window_times_of_day(now, start, end):
    ws, we = resolve_window("01:00", "07:00", "UTC", datetime.fromisoformat(now).replace(tzinfo=UTC))
    assert (ws.isoformat()[:16], we.isoformat()[:16]) == (start, end)


def test_window_across_midnight_and_timezone():
    now = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)  # 02:00 in Paris, inside 22:00-06:00 of the 27th
    ws, we = resolve_window("22:00", "06:00", "Europe/Paris", now)
    assert ws.isoformat() == "2026-11-27T22:00:00+01:00" and we.isoformat() == "2026-11-28T06:00:00+01:00"


def test_window_explicit_datetimes_and_errors():
    ws, we = resolve_window("2026-11-28T01:00:00+00:00", "2026-11-28T01:00:30+00:00", "UTC", T)
    assert (we - ws).total_seconds() == 30
    for args, msg in [(("01:00", "01:00", "UTC"), "both"), (("25:00", "07:00", "UTC"), "neither"),
                      (("01:00", "07:00", "Mars/Base"), "unknown timezone"),
                      (("01:00", "2026-11-28T07:00", "UTC"), "both be"),
                      (("2026-11-28T07:00", "2026-11-28T01:00", "UTC"), "not after")]:
        with pytest.raises(BadInput, match=msg):
            resolve_window(*args, T)


# --- queue ------------------------------------------------------------------------------------------

def test_queue_yaml_rejects_bad_jobs_and_keeps_the_rest():
    q = parse_queue("""
jobs:
  - {name: eval-a, image: img, command: [run], gpus: 2, estimated_hours: 1.5, priority: 5, checkpointable: true,
     deadline: "2026-11-28T06:00:00+00:00", team: search}
  - {name: Bad_Name, image: img, command: [run], gpus: 1, estimated_hours: 1}
  - {name: eval-b, image: img, command: [run], gpus: 16, estimated_hours: 1}
  - {name: eval-a, image: img, command: [run], gpus: 1, estimated_hours: 1}
  - {name: eval-c, image: img, command: [run], gpus: 1, estimated_hours: 1, deadline: "2026-11-28T06:00"}
  - just a string
""")
    assert [j.name for j in q.jobs] == ["eval-a"]
    assert q.jobs[0].checkpointable and q.jobs[0].team == "search" and q.jobs[0].gpu_hours == 3.0
    reasons = {r.index: r.reason for r in q.rejected}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "DNS-1123" in reasons[1] and reasons[2].startswith("gpus") and reasons[3] == "duplicate name"
    assert "timezone" in reasons[4]


def test_queue_json_list_and_malformed_documents():
    q = parse_queue('[{"name": "emb", "image": "i", "command": ["x"], "gpus": 1, "estimated_hours": 0.5}]')
    assert [j.name for j in q.jobs] == ["emb"] and not q.rejected
    with pytest.raises(BadInput, match="not valid YAML/JSON"):
        parse_queue("{not json", "q.json")
    with pytest.raises(BadInput, match="'jobs' list"):
        parse_queue("jobs: 3", "q.yaml")


# --- forecast ---------------------------------------------------------------------------------------

def test_forecast_takes_the_same_hours_of_past_nights():
    ws = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    history = []
    for k, level in zip(range(1, 8), [10, 12, 14, 16, 18, 20, 40], strict=True):
        night = ws - timedelta(days=k)
        for minute in range(0, 120, 5):
            spike = 6 if minute == 65 else 0  # a spike in the second hour, every night
            history.append(((night + timedelta(minutes=minute)).timestamp(), level + spike))
        history.append(((night + timedelta(hours=12)).timestamp(), 64))  # daytime: outside the window
    f = forecast_demand(history, ws, ws + timedelta(hours=3), 3600, nights=7, quantile=0.5)
    assert f == [16.0, 22.0, 22.0]  # hour 3 has no history: the window's highest forecast
    assert forecast_demand(history, ws, ws + timedelta(hours=1), 3600, nights=7, quantile=1.0) == [40.0]
    assert forecast_demand([], ws, ws + timedelta(hours=1), 3600) == []


# --- packer -----------------------------------------------------------------------------------------

def _check_invariants(plan, capacity, jobs, policy, window_end):
    by = {j.name: j for j in jobs}
    limit_end = window_end - timedelta(seconds=policy.grace_period_s)
    for p in plan.placements:
        assert p.end <= limit_end
        j = by[p.job]
        assert (p.end - p.start).total_seconds() >= j.estimated_hours * 3600 * policy.runtime_margin
        if j.deadline:
            assert p.end <= j.deadline
    idle = {n.name: n.idle for n in capacity.nodes}
    times = sorted({p.start for p in plan.placements})
    for t in times:
        active = [p for p in plan.placements if p.start <= t < p.end]
        for node in idle:
            assert sum(p.gpus for p in active if p.node == node) <= idle[node]


def test_pack_fills_nodes_and_every_job_ends_before_the_window():
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 7, tzinfo=UTC)
    jobs = [job(f"j{i}", gpus=g, hours=h, priority=p) for i, (g, h, p) in enumerate(
        [(8, 2, 0), (4, 3, 1), (4, 3, 1), (2, 1, 0), (1, 5, 9), (1, 5.9, 0), (8, 6, 0)])]
    cap = snap(8, 4)
    policy = PlanPolicy(slot_seconds=300, grace_period_s=20, runtime_margin=1.1)
    plan = pack(jobs, cap, ws, we, policy, now=T)
    _check_invariants(plan, cap, jobs, policy, we)
    placed = {p.job: p for p in plan.placements}
    unplaced = {u.job: u.reason for u in plan.unplaced}
    assert set(placed) | set(unplaced) == {j.name for j in jobs}  # nothing lost
    assert "window end" in unplaced["j6"]
    assert "window end" in unplaced["j5"]  # 5.9 h x 1.1 > 6 h
    assert placed["j4"].start == ws  # highest priority first, at the window start
    assert plan.idle_gpu_hours == pytest.approx(12 * 71 * 300 / 3600)  # 71 whole 5-min slots before 06:59:40
    assert 0 < plan.planned_gpu_hours <= plan.idle_gpu_hours
    small = pack([job("wide", gpus=8)], snap(4, 4), ws, we, policy, now=T)
    assert "needs 8 GPUs on one node; the most idle on a node is 4" in small.unplaced[0].reason


def test_pack_respects_the_forecast_the_deadline_and_running_work():
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 5, tzinfo=UTC)
    # 16 allocatable, 16 idle now, but inference is forecast to take 12 GPUs in the third hour
    cap = snap(8, 8, forecast=[0, 0, 12, 0])
    policy = PlanPolicy(slot_seconds=600, grace_period_s=0, runtime_margin=1.0)
    jobs = [job("long", gpus=8, hours=4), job("short", gpus=4, hours=2),
            job("due", gpus=1, hours=1, deadline=ws + timedelta(minutes=50))]
    plan = pack(jobs, cap, ws, we, policy, now=ws)
    placed = {p.job: p for p in plan.placements}
    assert "long" not in placed and "due" in {u.job for u in plan.unplaced}  # 1 h cannot end by 01:50
    assert placed["short"].end <= ws + timedelta(hours=2)  # ends before the forecast peak
    _check_invariants(plan, cap, jobs, policy, we)
    # running batch work frees its node at 02:00: an 8-GPU job can start then, not before
    busy_cap = snap(0, 8)
    plan = pack([job("a", gpus=8, hours=2), job("b", gpus=8, hours=2)], busy_cap, ws, we, policy, now=ws,
                busy=[Busy("gpu-0", 8, ws + timedelta(hours=1))])
    starts = sorted(p.start for p in plan.placements)
    assert starts == [ws, ws + timedelta(hours=1)]
    # a checkpointed job resumes with what is left of it
    plan = pack([job("ck", gpus=1, hours=10, checkpointable=True)], snap(1), ws, we, policy, now=ws,
                remaining_hours={"ck": 0.5})
    assert plan.placements[0].end == ws + timedelta(minutes=30)


def test_pack_leaves_headroom_and_is_empty_after_the_window():
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 3, tzinfo=UTC)
    policy = PlanPolicy(slot_seconds=60, headroom_gpus=3, grace_period_s=0)
    plan = pack([job(f"j{i}", hours=1.5) for i in range(8)], snap(4, 4), ws, we, policy, now=ws)
    assert len(plan.placements) == 5 and len(plan.unplaced) == 3
    late = pack([job("j")], snap(8), ws, we, policy, now=we + timedelta(minutes=1))
    assert not late.placements and late.idle_gpu_hours == 0 and "window end" in late.unplaced[0].reason


# --- Job manifests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kueue", [None, "team-a"])
def test_job_manifest_is_a_valid_preemptible_job(kueue):
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 7, tzinfo=UTC)
    j = job("embed-backfill", gpus=4, hours=2, checkpointable=True, team="search", cost_center="cc-42")
    m = job_manifest(j, node="gpu-3", namespace="offline-batch", window_start=ws, window_end=we,
                     active_deadline_s=7000, priority_class="offline-batch", grace_period_s=20, kueue_queue=kueue)
    kubernetes_validate.validate(m, "1.33", strict=True)
    assert m["metadata"]["name"] == job_name("embed-backfill", ws) == "idle-embed-backfill-20261128t0100"
    assert job_name("embed-backfill", ws, attempt=2) == "idle-embed-backfill-20261128t0100-r2"  # after preemption
    spec, pod = m["spec"], m["spec"]["template"]["spec"]
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert spec["activeDeadlineSeconds"] == 7000 and pod["restartPolicy"] == "Never"
    assert pod["priorityClassName"] == "offline-batch" and pod["terminationGracePeriodSeconds"] == 20
    # Pod Security "restricted", which the offline-batch namespace enforces
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False,
                                                       "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-3"}
    labels = m["metadata"]["labels"]
    assert labels["inferops.io/team"] == "search" and labels["inferops.io/cost-center"] == "cc-42"
    assert m["spec"]["template"]["metadata"]["labels"] == labels  # pods carry the cost labels too
    assert labels.get("kueue.x-k8s.io/queue-name") == kueue and spec.get("suspend") is (True if kueue else None)


def test_manifest_rejects_a_bad_kueue_queue():
    ws = datetime(2026, 11, 28, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="Kueue"):
        job_manifest(job("a"), node="n", namespace="ns", window_start=ws, window_end=ws, active_deadline_s=1,
                     priority_class="offline-batch", grace_period_s=1, kueue_queue="bad queue!")


def test_pack_is_fast_enough_for_a_real_queue():
    # not timed: checks the vectorised packer handles a 64-GPU fleet and a long queue in one call
    rng = np.random.default_rng(1)
    jobs = [job(f"j{i}", gpus=int(rng.choice([1, 2, 4, 8])), hours=float(rng.uniform(0.2, 3))) for i in range(300)]
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 7, tzinfo=UTC)
    cap = snap(*([8] * 8))
    plan = pack(jobs, cap, ws, we, PlanPolicy(), now=ws)
    _check_invariants(plan, cap, jobs, PlanPolicy(), we)
    assert plan.planned_gpu_hours / plan.idle_gpu_hours > 0.9


def test_checkpointable_jobs_fill_the_tail_and_stop_at_the_window_end():
    ws, we = datetime(2026, 11, 28, 1, tzinfo=UTC), datetime(2026, 11, 28, 3, tzinfo=UTC)
    policy = PlanPolicy(slot_seconds=60, grace_period_s=30, runtime_margin=1.0, min_segment_minutes=20)
    jobs = [job("first", hours=1.5), job("backfill", hours=5, checkpointable=True),
            job("eval", hours=5), job("late", hours=5, checkpointable=True)]
    plan = pack(jobs, snap(1), ws, we, policy, now=ws)
    placed = {p.job: p for p in plan.placements}
    assert placed["first"].start == ws and not placed["first"].partial
    tail = placed["backfill"]  # runs the last ~29 minutes, until the window end minus the grace period
    assert tail.partial and tail.start == ws + timedelta(hours=1.5) and tail.end == we - timedelta(seconds=60)
    assert {u.job for u in plan.unplaced} == {"eval", "late"}  # not checkpointable / no room left
    short = pack([job("b", hours=5, checkpointable=True)], snap(1), ws, we, policy,
                 now=we - timedelta(minutes=15))
    assert not short.placements and "window end" in short.unplaced[0].reason  # under 20 minutes left
    off = pack([job("b", hours=5, checkpointable=True)], snap(1), ws, we,
               policy.model_copy(update={"tail_segments": False}), now=ws)
    assert not off.placements


def test_gpus_a_nominated_preemptor_waits_for_are_not_free():
    """An inference pod that preempted batch pods on a node is nominated there while they terminate:
    its GPUs are taken, or the next tick would give them to a new batch Job and inference would have
    to preempt again (issue 14 rehearsal: inference pods ready within 30 s)."""
    from flows.idle_gpu.capacity import kube_nodes

    node = {"metadata": {"name": "gpu-0", "labels": {}}, "spec": {}, "status": {
        "allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}

    def pod(gpus, **status):
        return {"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]},
                "status": {"phase": "Pending", **status}}

    bound = {**pod(4), "spec": {**pod(4)["spec"], "nodeName": "gpu-0"}}
    [n], _ = kube_nodes([bound, pod(2, nominatedNodeName="gpu-0"), pod(1)], [node])
    assert (n.requested, n.idle) == (6, 2)  # the unnominated pending pod has no node yet


def test_gpus_pending_pods_of_other_workloads_wait_for():
    """A surge's pods, pending before the scheduler placed or nominated them, want GPUs a night must not
    take; a pod stuck on something else, or one that preempting our pods would not place, holds no
    night back; our own pods, bound or nominated pods and low batch classes are not waiting demand."""
    from flows.idle_gpu.capacity import waiting_gpus

    def pod(gpus, ns="serving", priority=1000000, cond=None, **extra):
        spec = {"priority": priority, "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]}
        status = {"phase": "Pending", **({"conditions": [cond]} if cond else {}), **extra.pop("status", {})}
        return {"metadata": {"namespace": ns, "name": f"p{gpus}", **extra.pop("meta", {})},
                "spec": {**spec, **extra.pop("spec", {})}, "status": status}

    def unschedulable(msg):
        return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}

    insufficient = "0/8 nodes are available: 8 Insufficient nvidia.com/gpu."
    counted = [
        pod(1),  # not tried yet
        pod(2, cond=unschedulable(insufficient)),
        pod(4, cond=unschedulable(insufficient + " preemption: not eligible due to preemptionPolicy=Never.")),
    ]
    not_counted = [
        pod(8, ns="offline-batch"),  # ours
        pod(1, spec={"nodeName": "gpu-0"}),  # bound
        pod(1, status={"nominatedNodeName": "gpu-0"}),  # its GPUs are counted on that node already
        pod(1, priority=-100),  # another low batch class
        pod(0),  # no GPU
        pod(1, meta={"deletionTimestamp": "2026-11-29T01:00:00Z"}),
        pod(1, status={"phase": "Running"}),
        pod(1, cond=unschedulable("0/8 nodes are available: 8 node(s) didn't match Pod's node affinity/selector.")),
        pod(16, cond=unschedulable(insufficient + " preemption: 0/8 nodes are available: 8 Preemption is not "
                                               "helpful for scheduling.")),
        pod(3, cond=unschedulable(insufficient + " preemption: 0/8 nodes are available: 8 No preemption "
                                              "victims found for incoming pod.")),
    ]
    assert waiting_gpus(counted + not_counted, "offline-batch") == 7
    assert waiting_gpus(not_counted, "offline-batch") == 0


def test_gpus_the_next_waves_of_autoscalers_held_back_by_their_scale_up_rate_will_want():
    """An HPA whose metrics ask for more pods than its policy lets it add (ScalingLimited: ScaleUpLimit)
    will want (asked - set) x GPUs per pod, asked by its own rule (at most maxReplicas; maxReplicas if
    its status does not say), if it scales GPU pods (a Deployment's, through their ReplicaSet, or a
    StatefulSet's); at its maximum, within range, scaling CPU pods, or ours: nothing."""
    from flows.idle_gpu.capacity import scale_up_gpus

    def pod(ns, owner_kind, owner, gpus):
        res = {"requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {"requests": {"cpu": "1"}}
        return {"metadata": {"namespace": ns, "name": f"{owner}-x", "ownerReferences": [
            {"kind": owner_kind, "name": owner, "controller": True}]},
                "spec": {"containers": [{"resources": res}]}, "status": {"phase": "Running"}}

    rps = {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "5k"}}}
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}

    def hpa(ns, name, kind, target, reason, status="True", top=50, now=(8, 12), metrics=(rps,), current=()):
        return {"metadata": {"namespace": ns, "name": name},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                         "maxReplicas": top, "metrics": list(metrics)},
                "status": {"currentReplicas": now[0], "desiredReplicas": now[1], "currentMetrics": list(current),
                           "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
                                          {"type": "ScalingLimited", "status": status, "reason": reason}]}}

    def at(value, name="rps"):
        return {"type": "Pods", "pods": {"metric": {"name": name}, "current": {"averageValue": value}}}

    pods = [pod("inference", "ReplicaSet", "llm-server-7d9f8c6b5", 1), pod("inference", "StatefulSet", "vllm", 8),
            pod("web", "ReplicaSet", "api-5c4f", 0), pod("offline-batch", "Job", "idle-a", 4),
            pod("inference", "ReplicaSet", "embed-6b7c8d", 1), pod("inference", "ReplicaSet", "big-5d6e", 2)]
    hpas = [
        # 8 pods at 15k each of a 5k target: the rule asks for 24; it set 12: 12 to come x 1 GPU
        hpa("inference", "llm-server", "Deployment", "llm-server", "ScaleUpLimit", current=[at("15k")]),
        # no metric in its status: up to its maximum, 6 - 4 = 2 pods x 8 GPUs
        hpa("inference", "vllm", "StatefulSet", "vllm", "ScaleUpLimit", top=6, now=(2, 4)),
        # the largest over its metrics: cpu asks for ceil(8 x 150 / 60) = 20, rps 8 x 0.5 = 4; at most 16
        hpa("inference", "big", "Deployment", "big", "ScaleUpLimit", top=16, metrics=(rps, cpu), current=[
            at("2500m"), {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 150}}}]),
        hpa("inference", "embed", "Deployment", "embed", "TooManyReplicas"),  # at its maximum: no more waves
        hpa("inference", "llm-b", "Deployment", "llm-server-b", "ScaleUpLimit"),  # owns no pod here
        hpa("web", "api", "Deployment", "api", "ScaleUpLimit"),  # CPU only
        hpa("offline-batch", "idle", "Job", "idle-a", "ScaleUpLimit"),  # ours
        hpa("inference", "quiet", "Deployment", "llm-server", "DesiredWithinRange", status="False"),
        # asks for no more than it set (the limit was on the way up): nothing to come
        hpa("inference", "done", "Deployment", "llm-server", "ScaleUpLimit", current=[at("5k")]),
    ]
    assert scale_up_gpus(hpas, pods, "offline-batch") == {"inference/big": 8, "inference/llm-server": 12,
                                                           "inference/vllm": 16}
    # malformed or zero targets fall back to the maximum; an HPA without a status holds nothing back
    odd = hpa("inference", "llm-server", "Deployment", "llm-server", "ScaleUpLimit", top=20,
              metrics=[{"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue",
                                                                                        "averageValue": "0"}}}],
              current=[at("1e999")])
    assert scale_up_gpus([odd], pods, "offline-batch") == {"inference/llm-server": 8}
    assert scale_up_gpus([{"metadata": {}, "spec": {}, "status": {}}], pods, "offline-batch") == {}
