"""Conformance of the emulator's controllers (kube-controller-manager, kube-scheduler, kubelet) with
Kubernetes 1.33. Each test's docstring starts with the documentation page it reproduces. Timers run on
the emulator's clock, sped up where a test would otherwise wait."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kube import wait_until

NS = "default"
SLOW = {"emulator.inferops.dev/run-seconds": "3600"}



def deployment(name: str = "llm", replicas: int = 2, gpus: int = 1, **spec) -> dict:
    container = {"name": "server", "image": "registry.local/llm:1.0",
                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [container],
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
                     **spec}}


def job(name: str, gpus: int = 1, annotations: dict | None = None, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "work", "image": "registry.local/batch:1.0",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}}


def available(apps, name: str = "llm") -> int:
    st = apps.read_namespaced_deployment(name, NS).status
    return (st and st.available_replicas) or 0


def condition(obj, type_):
    return next((c for c in (obj.status and obj.status.conditions) or [] if c.type == type_), None)


def events(core, name: str) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in core.list_namespaced_event(NS).items if e.involved_object.name == name]


@pytest.fixture
def apis(kube_clean):
    c = kube_clean.api_client()
    return client.AppsV1Api(c), client.CoreV1Api(c), client.BatchV1Api(c), c


def wait_job(batch, name, type_, timeout=15.0):
    return wait_until(lambda: (j := batch.read_namespaced_job_status(name, NS)) and condition(j, type_)
                      and condition(j, type_).status == "True" and j, timeout, what=f"job {name} {type_}")


# ---- Deployment → ReplicaSet → Pods ----

def test_a_deployment_without_room_reports_its_pods_pending(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/ — a 10-GPU Deployment on a
    cluster with no GPU node has 0 available replicas; its pods stay Pending, Unschedulable, with
    FailedScheduling events."""
    apps, core, _, _ = apis
    kube_clean.add_node("cpu-a", gpus=0)
    apps.create_namespaced_deployment(NS, deployment(replicas=10))
    pods = wait_until(lambda: len(p := core.list_namespaced_pod(NS).items) == 10 and
                      all(condition(x, "PodScheduled") for x in p) and p, what="10 unschedulable pods")
    assert {p.status.phase for p in pods} == {"Pending"}
    msg = condition(pods[0], "PodScheduled").message
    assert condition(pods[0], "PodScheduled").reason == "Unschedulable"
    assert msg.startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    assert ("FailedScheduling", msg) in events(core, pods[0].metadata.name)
    d = apps.read_namespaced_deployment("llm", NS)
    assert not d.status.available_replicas and d.status.unavailable_replicas == 10
    assert condition(d, "Available").status == "False"


def test_deployment_owns_a_replicaset_that_owns_the_pods(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#creating-a-deployment — the
    ReplicaSet is named <deployment>-<pod-template-hash>, the pods carry that label and owner references."""
    apps, core, _, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    apps.create_namespaced_deployment(NS, deployment(replicas=3))
    wait_until(lambda: available(apps) == 3, what="rollout")
    [rs] = apps.list_namespaced_replica_set(NS).items
    h = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"llm-{h}" and rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    pods = core.list_namespaced_pod(NS).items
    assert {p.metadata.owner_references[0].name for p in pods} == {rs.metadata.name}
    assert all(p.metadata.name.startswith(f"llm-{h}-") and p.spec.node_name == "gpu-a" for p in pods)
    assert ("ScalingReplicaSet", f"Scaled up replica set llm-{h} from 0 to 3") in events(core, "llm")
    apps.patch_namespaced_deployment_scale("llm", NS, {"spec": {"replicas": 1}})
    wait_until(lambda: len([p for p in core.list_namespaced_pod(NS).items if not p.metadata.deletion_timestamp])
               == 1, what="scale down")


def test_rolling_update_honours_max_surge_and_max_unavailable(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#max-surge — with maxSurge 1
    and maxUnavailable 0, a 4-replica rollout never runs more than 5 pods nor fewer than 4 available."""
    apps, core, _, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    d = deployment(replicas=4, strategy={"type": "RollingUpdate",
                                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    apps.create_namespaced_deployment(NS, d)
    wait_until(lambda: available(apps) == 4, what="rollout")
    kube_clean.deployments.speed(NS, "llm", 0.3)  # new pods take 0.3 s to start
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            pods = [p for p in core.list_namespaced_pod(NS).items if p.status.phase in ("Pending", "Running")
                    and not p.metadata.deletion_timestamp]
            ready = sum(bool(condition(p, "Ready") and condition(p, "Ready").status == "True") for p in pods)
            seen.append((len(pods), ready))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    apps.patch_namespaced_deployment("llm", NS, {"spec": {"template": {"spec": {"containers": [
        {"name": "server", "image": "registry.local/llm:2.0"}]}}}})
    try:
        wait_until(lambda: (s := apps.read_namespaced_deployment("llm", NS).status).updated_replicas == 4 and
                   s.available_replicas == 4 and s.replicas == 4 and s.observed_generation == 2, what="update")
    finally:
        stop.set()
        t.join()
    assert max(n for n, _ in seen) == 5 and min(r for _, r in seen) >= 4
    assert len(apps.list_namespaced_replica_set(NS).items) == 2  # the old one is kept, scaled to 0
    d = apps.read_namespaced_deployment("llm", NS)
    assert condition(d, "Progressing").reason == "NewReplicaSetAvailable"


def test_a_stalled_rollout_exceeds_its_progress_deadline(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#failed-deployment —
    Progressing=False with reason ProgressDeadlineExceeded after progressDeadlineSeconds."""
    apps, *_ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.deployments.stall(NS, "llm")
    kube_clean.clock.speed = 20
    apps.create_namespaced_deployment(NS, deployment(replicas=2, progressDeadlineSeconds=30))
    d = wait_until(lambda: (d := apps.read_namespaced_deployment("llm", NS)) and condition(d, "Progressing")
                   and condition(d, "Progressing").status == "False" and d, what="deadline")
    assert condition(d, "Progressing").reason == "ProgressDeadlineExceeded"
    assert not d.status.available_replicas and d.status.updated_replicas == 2


# ---- probes ----

def test_readiness_follows_startup_and_readiness_probes(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/ — the readiness
    probe starts once the startup probe succeeded; the pod is Ready at the first passing probe. A startup
    probe that keeps failing past failureThreshold restarts the container."""
    apps, core, _, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.clock.speed = 20
    d = deployment(replicas=1)
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["startupProbe"] = {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 10, "failureThreshold": 60}
    c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 5}
    d["spec"]["template"]["metadata"]["annotations"] = {"emulator.inferops.dev/ready-after-seconds": "95"}
    apps.create_namespaced_deployment(NS, d)
    pod = wait_until(lambda: (p := core.list_namespaced_pod(NS).items) and p[0].status.phase == "Running" and p[0])
    t0 = kube_clean.clock.time()
    assert not pod.status.container_statuses[0].started and condition(pod, "Ready").status == "False"
    ready = wait_until(lambda: (p := core.read_namespaced_pod(pod.metadata.name, NS)) and condition(p, "Ready")
                       .status == "True" and p, what="ready")
    # the app answers at 95 s; the startup probe (every 10 s) passes at 100 s, readiness then at once
    assert 90 <= kube_clean.clock.time() - t0 <= 115
    assert ready.status.container_statuses[0].started and ready.status.container_statuses[0].restart_count == 0
    # a startup probe allowing 3 x 10 s for an app that needs 95 s: killed and restarted
    d2 = deployment(name="impatient", replicas=1)
    c2 = d2["spec"]["template"]["spec"]["containers"][0]
    c2["startupProbe"] = {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 10, "failureThreshold": 3}
    d2["spec"]["template"]["metadata"]["annotations"] = {"emulator.inferops.dev/ready-after-seconds": "95"}
    apps.create_namespaced_deployment(NS, d2)
    restarted = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="app=impatient").items
                                    if p.status.container_statuses and
                                    p.status.container_statuses[0].restart_count >= 1], what="a restart")
    assert condition(restarted[0], "Ready").status == "False"
    assert any(r == "Unhealthy" for r, _ in events(core, restarted[0].metadata.name))


# ---- scheduling ----

def test_scheduler_honours_requests_selectors_and_taints(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/ and
    https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodeselector — GPUs are
    counted per node, nodeSelector and required node affinity pick nodes, untolerated taints repel."""
    _, core, batch, _ = apis
    gpu_taint = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    kube_clean.add_node("gpu-a", gpus=8, taints=gpu_taint, labels={"topology.kubernetes.io/region": "us-east-1"})
    kube_clean.add_node("gpu-b", gpus=8, taints=gpu_taint, labels={"topology.kubernetes.io/region": "eu-west-1"})

    def pod(name, gpus, tolerate=True, **spec):
        return {"metadata": {"name": name, "annotations": SLOW}, "spec": {
            **spec, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}] if tolerate else [],
            "containers": [{"name": "c", "image": "img:1", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}

    core.create_namespaced_pod(NS, pod("pinned", 6, nodeSelector={"kubernetes.io/hostname": "gpu-b"}))
    core.create_namespaced_pod(NS, pod("eu", 2, affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]}]}]}}}))
    core.create_namespaced_pod(NS, pod("untolerated", 1, tolerate=False))
    core.create_namespaced_pod(NS, pod("too-big", 3, nodeSelector={"kubernetes.io/hostname": "gpu-b"}))

    def placed(name):
        p = core.read_namespaced_pod(name, NS)
        return p.spec.node_name or (condition(p, "PodScheduled") and condition(p, "PodScheduled").message)

    assert wait_until(lambda: placed("pinned")) == "gpu-b"
    assert wait_until(lambda: placed("eu")) == "gpu-b"
    assert "2 node(s) had untolerated taint {nvidia.com/gpu: present}" in wait_until(lambda: placed("untolerated"))
    too_big = wait_until(lambda: placed("too-big"))
    assert "1 Insufficient nvidia.com/gpu" in too_big and "1 node(s) didn't match Pod's node affinity/selector" \
        in too_big


def test_preemption_deletes_lower_priority_pods_gracefully(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/#preemption — the
    victim gets a DisruptionTarget condition and a Preempted event, is deleted with its grace period
    (deletionTimestamp, then gone), and the preemptor is nominated, then runs on the node."""
    apps, core, batch, c = apis
    sched = client.SchedulingV1Api(c)
    sched.create_priority_class({"metadata": {"name": "offline-batch"}, "value": -10, "preemptionPolicy": "Never"})
    sched.create_priority_class({"metadata": {"name": "inference-critical"}, "value": 1000000})
    kube_clean.add_node("gpu-a", gpus=8)
    fill = job("fill", gpus=8, annotations=SLOW)
    fill["spec"]["template"]["spec"].update(priorityClassName="offline-batch", terminationGracePeriodSeconds=2)
    fill["spec"]["template"]["metadata"] = {"annotations": {"emulator.inferops.dev/shutdown-seconds": "1"}}
    batch.create_namespaced_job(NS, fill)
    victim = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="job-name=fill").items
                                 if p.status.phase == "Running"], what="batch running")[0]
    d = deployment(replicas=1, gpus=2)
    d["spec"]["template"]["spec"]["priorityClassName"] = "inference-critical"
    apps.create_namespaced_deployment(NS, d)
    terminating = wait_until(lambda: (p := core.read_namespaced_pod(victim.metadata.name, NS)).metadata
                             .deletion_timestamp and p, what="graceful deletion")
    assert terminating.metadata.deletion_grace_period_seconds == 2
    assert condition(terminating, "DisruptionTarget").reason == "PreemptionByScheduler"
    assert any(r == "Preempted" and m.startswith("Preempted by pod ") for r, m in events(core, victim.metadata.name))
    preemptor = core.list_namespaced_pod(NS, label_selector="app=llm").items[0]
    assert preemptor.status.phase == "Pending"
    wait_until(lambda: not core.list_namespaced_pod(NS, field_selector=f"metadata.name={victim.metadata.name}")
               .items, what="the victim to go")
    wait_until(lambda: available(apps) == 1, what="preemptor")
    # the batch Job's podFailurePolicy-less pod failed: backoffLimit 0 → the Job failed
    assert condition(wait_job(batch, "fill", "Failed"), "Failed").reason == "BackoffLimitExceeded"
    # preemptionPolicy Never never preempts
    low = job("low", gpus=8, annotations=SLOW)
    low["spec"]["template"]["spec"]["priorityClassName"] = "offline-batch"
    batch.create_namespaced_job(NS, low)
    pending = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="job-name=low").items
                                  if condition(p, "PodScheduled")])
    assert "preemptionPolicy=Never" in condition(pending[0], "PodScheduled").message


# ---- Jobs ----

def test_job_backoff_limit_deadline_and_pod_failure_policy(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy and
    #job-termination-and-cleanup — failures count against backoffLimit unless a rule ignores them (a
    preemption's DisruptionTarget); FailJob ends the Job; activeDeadlineSeconds fails it."""
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.jobs.run_for(NS, "crash", seconds=0.05, exit_code=3)
    batch.create_namespaced_job(NS, job("crash", gpus=0, backoffLimit=1))
    failed = wait_job(batch, "crash", "Failed")
    assert (condition(failed, "Failed").reason, failed.status.failed) == ("BackoffLimitExceeded", 2)
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    batch.create_namespaced_job(NS, job("ckpt", annotations={"emulator.inferops.dev/run-seconds": "3"},
                                        podFailurePolicy=policy))
    wait_until(lambda: (s := batch.read_namespaced_job_status("ckpt", NS).status) and s.ready == 1)
    kube_clean.jobs.preempt(NS, "ckpt")
    done = wait_job(batch, "ckpt", "Complete")
    assert (done.status.succeeded, done.status.failed) == (1, 0)  # a replacement pod finished the work
    batch.create_namespaced_job(NS, job("bad", annotations={"emulator.inferops.dev/exit-code": "42"},
                                        podFailurePolicy=policy, backoffLimit=5))
    assert condition(wait_job(batch, "bad", "Failed"), "Failed").reason == "PodFailurePolicy"
    batch.create_namespaced_job(NS, job("long", annotations=SLOW, activeDeadlineSeconds=1))
    j = wait_job(batch, "long", "Failed")
    assert condition(j, "Failed").reason == "DeadlineExceeded"
    wait_until(lambda: not core.list_namespaced_pod(NS, label_selector="job-name=long").items, what="pods gone")


def test_suspend_and_ttl_after_finished(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/ and
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#suspending-a-job — suspending deletes
    the active pods; a finished Job is deleted ttlSecondsAfterFinished later, a suspended one never."""
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.clock.speed = 20
    batch.create_namespaced_job(NS, job("later", annotations=SLOW, ttlSecondsAfterFinished=60))
    wait_until(lambda: (s := batch.read_namespaced_job_status("later", NS).status) and s.active == 1)
    batch.patch_namespaced_job("later", NS, {"spec": {"suspend": True}})
    j = wait_job(batch, "later", "Suspended")
    assert j.status.start_time is None
    wait_until(lambda: not core.list_namespaced_pod(NS, label_selector="job-name=later").items, what="pods gone")
    batch.create_namespaced_job(NS, job("quick", ttlSecondsAfterFinished=60))
    wait_job(batch, "quick", "Complete")
    t0 = kube_clean.clock.time()
    wait_until(lambda: not batch.list_namespaced_job(NS, field_selector="metadata.name=quick").items,
               what="TTL deletion")
    assert kube_clean.clock.time() - t0 >= 55
    kube_clean.clock.advance(3600)
    time.sleep(0.3)
    assert batch.read_namespaced_job("later", NS).spec.suspend  # never finished: no TTL
    batch.patch_namespaced_job("later", NS, {"spec": {"suspend": False}})
    wait_until(lambda: condition(batch.read_namespaced_job_status("later", NS), "Suspended").status == "False")


# ---- HPA ----

def test_hpa_scales_on_the_metric_within_its_behavior(apis, kube_clean):
    """https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details and
    #configurable-scaling-behavior — desired = ceil(current x value / target); scale-up limited by its
    policies, scale-down held by the stabilization window."""
    apps, core, _, c = apis
    kube_clean.add_node("gpu-a", gpus=16)
    apps.create_namespaced_deployment(NS, deployment(replicas=3))
    hpa = client.AutoscalingV2Api(c)
    hpa.create_namespaced_horizontal_pod_autoscaler(NS, {
        "metadata": {"name": "llm"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
                 "minReplicas": 3, "maxReplicas": 12,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": "inference_requests_per_second"},
                                                       "target": {"type": "AverageValue", "averageValue": "5000"}}}],
                 "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]},
                              "scaleDown": {"stabilizationWindowSeconds": 600}}}})
    h = wait_until(lambda: (h := hpa.read_namespaced_horizontal_pod_autoscaler_status("llm", NS)).status and
                   condition(h, "ScalingActive") and h)
    assert condition(h, "ScalingActive").reason == "FailedGetPodsMetric"  # no metric value yet
    kube_clean.hpa.set_metric(NS, "llm", "inference_requests_per_second", 15000)  # 3x the target
    wait_until(lambda: apps.read_namespaced_deployment("llm", NS).spec.replicas == 7, what="scale up by 4")
    h = hpa.read_namespaced_horizontal_pod_autoscaler_status("llm", NS)
    assert (h.status.current_replicas, h.status.desired_replicas) == (3, 7)
    assert condition(h, "ScalingLimited").status == "True" and condition(h, "ScalingLimited").reason == "ScaleUpLimit"
    assert ("SuccessfulRescale", "New size: 7; reason: pods metric inference_requests_per_second above target") \
        in events(core, "llm")
    # the same load over 7 pods: 45000 / 7 per pod → ceil(7 x 6428.6 / 5000) = 9, once the 60 s period passed
    kube_clean.hpa.set_metric(NS, "llm", "inference_requests_per_second", 45000 / 7)
    time.sleep(0.3)
    assert apps.read_namespaced_deployment("llm", NS).spec.replicas == 7  # the Pods policy: 4 per 60 s
    kube_clean.clock.advance(61)
    wait_until(lambda: apps.read_namespaced_deployment("llm", NS).spec.replicas == 9, what="the rest")
    assert condition(hpa.read_namespaced_horizontal_pod_autoscaler_status("llm", NS), "ScalingLimited").reason \
        == "DesiredWithinRange"
    kube_clean.hpa.set_metric(NS, "llm", "inference_requests_per_second", 1000)
    kube_clean.clock.advance(16)
    time.sleep(0.3)
    assert apps.read_namespaced_deployment("llm", NS).spec.replicas == 9  # within the 600 s window
    assert condition(hpa.read_namespaced_horizontal_pod_autoscaler_status("llm", NS), "ScalingLimited").status \
        == "False"  # the stabilization window is not a limit: it changes the recommendation
    kube_clean.clock.advance(601)
    wait_until(lambda: apps.read_namespaced_deployment("llm", NS).spec.replicas == 3, what="scale down to min")
    wait_until(lambda: available(apps) == 3)


# ---- PodDisruptionBudget ----

def test_pdb_status_and_eviction(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/ — the PDB's status counts
    healthy pods; an eviction that would violate it is 429, an allowed one deletes gracefully."""
    apps, core, _, c = apis
    kube_clean.add_node("gpu-a", gpus=8)
    apps.create_namespaced_deployment(NS, deployment(replicas=3))
    client.PolicyV1Api(c).create_namespaced_pod_disruption_budget(NS, {
        "metadata": {"name": "llm"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "llm"}}}})
    pdb = wait_until(lambda: (p := client.PolicyV1Api(c).read_namespaced_pod_disruption_budget_status("llm", NS))
                     .status and p.status.current_healthy == 3 and p)
    assert (pdb.status.desired_healthy, pdb.status.disruptions_allowed, pdb.status.expected_pods) == (2, 1, 3)
    first, second = [p.metadata.name for p in core.list_namespaced_pod(NS).items][:2]
    core.create_namespaced_pod_eviction(first, NS, {"metadata": {"name": first, "namespace": NS}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction(second, NS, {"metadata": {"name": second, "namespace": NS}})
    assert exc.value.status == 429
    evicted = core.list_namespaced_pod(NS, field_selector=f"metadata.name={first}").items
    assert not evicted or evicted[0].metadata.deletion_timestamp is not None
    assert condition(evicted[0], "DisruptionTarget").reason == "EvictionByEvictionAPI" if evicted else True


def test_every_conformance_test_names_its_documentation_page():
    """https://kubernetes.io/docs/home/ — each behaviour the emulator reproduces cites its page."""
    import sys

    from tests.integration import test_kube_conformance_api as api_tests

    for module in (api_tests, sys.modules[__name__]):
        tests = [f for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
        assert tests
        for f in tests:
            assert (f.__doc__ or "").startswith("https://kubernetes.io/docs/"), f.__name__


def test_run_as_non_root_with_a_root_image_never_starts(apis, kube_clean):
    """https://kubernetes.io/docs/tasks/configure-pod-container/security-context/#set-the-security-context-for-a-pod
    — with runAsNonRoot and no runAsUser, an image whose user is root fails with
    CreateContainerConfigError and stays Pending, holding its requests."""
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.pods.image_users["registry.local/root:1"] = 0
    j = job("rooted", gpus=2, annotations=SLOW)
    j["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    j["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/root:1"
    batch.create_namespaced_job(NS, j)
    pod = wait_until(lambda: [p for p in core.list_namespaced_pod(NS, label_selector="job-name=rooted").items
                              if p.status.container_statuses], what="container status")[0]
    waiting = pod.status.container_statuses[0].state.waiting
    assert (pod.status.phase, waiting.reason) == ("Pending", "CreateContainerConfigError")
    assert "container has runAsNonRoot and image will run as root" in waiting.message
    assert pod.spec.node_name == "gpu-a"  # scheduled: its GPUs are held


def test_defaults_are_set_on_write(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#strategy — the apiserver's
    defaults are in the stored object: RollingUpdate 25 %/25 %, progressDeadlineSeconds 600,
    revisionHistoryLimit 10; Job backoffLimit 6; probe timings; container requests from limits."""
    apps, core, batch, _ = apis
    kube_clean.pods.enabled = False
    d = apps.create_namespaced_deployment(NS, deployment(replicas=1))
    assert (d.spec.strategy.type, d.spec.strategy.rolling_update.max_surge,
            d.spec.strategy.rolling_update.max_unavailable) == ("RollingUpdate", "25%", "25%")
    assert (d.spec.progress_deadline_seconds, d.spec.revision_history_limit) == (600, 10)
    j = job("defaults")
    del j["spec"]["backoffLimit"]
    j = batch.create_namespaced_job(NS, j)
    assert (j.spec.backoff_limit, j.spec.completions, j.spec.parallelism, j.spec.suspend) == (6, 1, 1, False)
    p = core.create_namespaced_pod(NS, {"metadata": {"name": "p"}, "spec": {"containers": [{
        "name": "c", "image": "img:1", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2"}},
        "readinessProbe": {"httpGet": {"port": 80}}}]}})
    c = p.spec.containers[0]
    assert c.resources.requests == {"nvidia.com/gpu": "1", "cpu": "2"}
    assert (c.readiness_probe.period_seconds, c.readiness_probe.timeout_seconds, c.readiness_probe.failure_threshold,
            c.readiness_probe.http_get.path) == (10, 1, 3, "/")
    assert (p.spec.restart_policy, p.spec.termination_grace_period_seconds, p.spec.service_account_name) == (
        "Always", 30, "default")


def test_every_pod_gets_its_own_address_from_the_pod_network(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/services-networking/#the-kubernetes-network-model — every pod
    gets its own cluster-wide unique IP address (from the cluster's pod CIDR, ``kube.pods.pod_cidr``)."""
    import ipaddress

    apps, core, _, _ = apis
    kube_clean.pods.pod_cidr = "127.42.0.0/29"  # 6 addresses: a test can serve pods' endpoints on loopback
    kube_clean.add_node("gpu-a", gpus=8)
    apps.create_namespaced_deployment(NS, deployment("web", replicas=6, gpus=0))
    wait_until(lambda: available(apps, "web") == 6, what="6 pods")
    ips = [p.status.pod_ip for p in core.list_namespaced_pod(NS).items]
    assert len(set(ips)) == 6 and all(ipaddress.ip_address(ip) in ipaddress.ip_network("127.42.0.0/29") for ip in ips)
    assert all([i.ip for i in p.status.pod_ips] == [p.status.pod_ip] for p in core.list_namespaced_pod(NS).items)
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}})
    wait_until(lambda: len(core.list_namespaced_pod(NS).items) == 5, what="one pod gone")
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 6}})  # its address is free again
    wait_until(lambda: available(apps, "web") == 6, what="6 pods again")
    assert len({p.status.pod_ip for p in core.list_namespaced_pod(NS).items}) == 6


def test_several_preemptors_at_once_each_make_their_own_room(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/#user-exposed-information
    — the scheduler filters with the nominated pods added: four 2-GPU pods arriving together on a node
    full of 2-GPU batch pods each preempt a victim of their own (not four times the same one)."""
    apps, core, batch, c = apis
    sched = client.SchedulingV1Api(c)
    sched.create_priority_class({"metadata": {"name": "offline-batch"}, "value": -10, "preemptionPolicy": "Never"})
    sched.create_priority_class({"metadata": {"name": "inference-critical"}, "value": 1000000})
    kube_clean.add_node("gpu-a", gpus=8)
    for i in range(4):
        fill = job(f"fill-{i}", gpus=2, annotations=SLOW)
        fill["spec"]["template"]["spec"].update(priorityClassName="offline-batch", terminationGracePeriodSeconds=30)
        fill["spec"]["template"]["metadata"] = {"annotations": {"emulator.inferops.dev/shutdown-seconds": "3"}}
        batch.create_namespaced_job(NS, fill)
    wait_until(lambda: len([p for p in core.list_namespaced_pod(NS).items if p.status.phase == "Running"]) == 4,
               what="batch running")
    d = deployment(replicas=4, gpus=2)
    d["spec"]["template"]["spec"]["priorityClassName"] = "inference-critical"
    start = kube_clean.clock.time()
    apps.create_namespaced_deployment(NS, d)
    wait_until(lambda: available(apps) == 4, timeout=20, what="the four preemptors")
    # one victim each, each preempted once; a terminating victim still holds its GPUs (as in the
    # scheduler's cache) so a late preemptor may wait one more round, never one per preemptor
    assert kube_clean.clock.time() - start < 2 * 3 + 2
    preempted = [e for e in core.list_namespaced_event(NS).items if e.reason == "Preempted"]
    assert len({e.involved_object.name for e in preempted}) == 4 == len(preempted)
