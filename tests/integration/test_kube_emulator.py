"""The Kubernetes API emulator's mechanics, proven over HTTP with the official client (and kubectl):
CRUD, concurrency, selectors, patches, watches, discovery and the Python test hooks. What it must
reproduce of a real apiserver and its controllers is in test_kube_conformance_*.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from flows.common.kube import api_client, is_not_found, retry_on_conflict
from tests.fixtures.kube import wait_until

NS = "default"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"



def deployment(name: str = "web", replicas: int = 2, annotations: dict | None = None, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "server", "image": "registry.local/llm:1.0",
                                         "env": [{"name": "A", "value": "1"}],
                                         "ports": [{"containerPort": 8000, "name": "http"}]}],
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
                     **spec}}


def job(name: str, gpus: int = 1, annotations: dict | None = None, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "work", "image": "registry.local/batch:1.0",
                                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}}


@pytest.fixture
def apis(kube_clean):
    c = kube_clean.api_client()
    return client.AppsV1Api(c), client.CoreV1Api(c), client.BatchV1Api(c), client.CustomObjectsApi(c)


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


# ---- CRUD semantics ----

def test_create_duplicate_and_missing_are_real_status_errors(apis):
    apps, *_ = apis
    created = apps.create_namespaced_deployment(NS, deployment())
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.generation == 1
    with pytest.raises(ApiException) as dup:
        apps.create_namespaced_deployment(NS, deployment())
    assert dup.value.status == 409
    assert status_of(dup.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("nope", NS)
    body = status_of(missing.value)
    assert (missing.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["message"] == 'deployments.apps "nope" not found' and is_not_found(missing.value)


def test_namespace_must_exist_and_its_deletion_cascades(apis, kube_clean):
    apps, core, *_ = apis
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment("team-a", deployment())
    assert exc.value.status == 404 and status_of(exc.value)["message"] == 'namespaces "team-a" not found'
    core.create_namespace({"metadata": {"name": "team-a"}})
    apps.create_namespaced_deployment("team-a", deployment())
    core.delete_namespace("team-a")
    assert apps.list_deployment_for_all_namespaces().items == []


def test_stale_resource_version_conflicts_and_retry_on_conflict_recovers(apis):
    apps, *_ = apis
    first = apps.create_namespaced_deployment(NS, deployment())
    newer = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"touched": "yes"}}})
    assert int(newer.metadata.resource_version) > int(first.metadata.resource_version)
    first.spec.replicas = 5
    with pytest.raises(ApiException) as put:
        apps.replace_namespaced_deployment("web", NS, first)
    assert (put.value.status, status_of(put.value)["reason"]) == (409, "Conflict")
    with pytest.raises(ApiException) as patch:
        apps.patch_namespaced_deployment("web", NS, {"metadata": {"resourceVersion": first.metadata.resource_version},
                                                     "spec": {"replicas": 5}})
    assert patch.value.status == 409

    attempts = []

    def bump():
        current = apps.read_namespaced_deployment("web", NS)
        if not attempts:  # someone else writes between our read and our write, once
            apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"race": "1"}}})
        attempts.append(1)
        current.spec.replicas = 7
        return apps.replace_namespaced_deployment("web", NS, current)

    assert retry_on_conflict(bump, backoff_s=0.01).spec.replicas == 7
    assert len(attempts) == 2


def test_generation_moves_with_spec_only_and_status_only_via_subresource(apis, kube_clean):
    kube_clean.deployments.enabled = False
    apps, *_ = apis
    apps.create_namespaced_deployment(NS, deployment())
    d = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 4}})
    assert d.metadata.generation == 2
    d = apps.patch_namespaced_deployment_status("web", NS, {"status": {"observedGeneration": 2, "replicas": 4}})
    assert (d.metadata.generation, d.status.replicas) == (2, 4)
    d = apps.patch_namespaced_deployment("web", NS, {"status": {"replicas": 99}})  # ignored on the main resource
    assert d.status.replicas == 4
    before = d.metadata.resource_version
    same = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 4}})
    assert same.metadata.resource_version == before  # a no-op write is not a new version


def test_scale_subresource(apis, kube_clean):
    kube_clean.deployments.enabled = False
    apps, *_ = apis
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert scale.spec.replicas == 2 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 6}})
    d = apps.read_namespaced_deployment("web", NS)
    assert (d.spec.replicas, d.metadata.generation) == (6, 2)


def test_invalid_bodies_are_422(apis, kube_clean):
    """Sent raw (the client validates some required fields itself before sending)."""
    apps, *_ = apis
    bad = deployment()
    del bad["spec"]["selector"]
    r = httpx.post(f"{kube_clean.url}/apis/apps/v1/namespaces/{NS}/deployments", json=bad)
    assert (r.status_code, r.json()["reason"]) == (422, "Invalid") and "spec.selector" in r.json()["message"]
    j = job("j")
    j["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    r = httpx.post(f"{kube_clean.url}/apis/batch/v1/namespaces/{NS}/jobs", json=j)
    assert r.status_code == 422 and "restartPolicy" in r.json()["message"]
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, deployment(name="Bad_Name"))
    assert exc.value.status == 422
    apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, {"spec": {"selector": {"matchLabels": {"app": "other"}}}})
    assert exc.value.status == 422 and "immutable" in exc.value.body


def test_delete_returns_status_and_finalizers_hold_the_object(apis):
    _, core, *_ = apis
    core.create_namespaced_config_map(NS, {"metadata": {"name": "plain"}, "data": {"a": "1"}})
    gone = core.delete_namespaced_config_map("plain", NS)
    assert gone["status"] == "Success" and gone["details"]["name"] == "plain"  # the client returns a dict
    core.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["inferops.dev/x"]}})
    core.delete_namespaced_config_map("held", NS)
    held = core.read_namespaced_config_map("held", NS)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("held", NS)
    assert exc.value.status == 404


# ---- selectors and paging ----

def test_label_and_field_selectors(apis, kube_clean):
    _, core, *_ = apis
    kube_clean.pods.enabled = False
    for name, labels, node in [("a", {"app": "llm", "track": "stable"}, "n1"),
                               ("b", {"app": "llm", "track": "canary"}, "n2"),
                               ("c", {"app": "web"}, "n1"), ("d", {}, None)]:
        spec = {"containers": [{"name": "c", "image": "img:1"}], **({"nodeName": node} if node else {})}
        core.create_namespaced_pod(NS, {"metadata": {"name": name, "labels": labels}, "spec": spec})

    def names(**kw):
        return sorted(p.metadata.name for p in core.list_namespaced_pod(NS, **kw).items)

    assert names(label_selector="app=llm") == ["a", "b"]
    assert names(label_selector="app==llm,track!=canary") == ["a"]
    assert names(label_selector="track in (stable, canary)") == ["a", "b"]
    assert names(label_selector="app notin (llm)") == ["c", "d"]
    assert names(label_selector="track") == ["a", "b"]
    assert names(label_selector="!track") == ["c", "d"]
    assert names(field_selector="spec.nodeName=n1") == ["a", "c"]
    assert names(field_selector="metadata.name=b,metadata.namespace=default") == ["b"]
    assert names(field_selector="status.phase=Pending", label_selector="app=web") == ["c"]
    assert names(field_selector="status.phase!=Pending") == []
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_pod(NS, field_selector="spec.schedulerName=x")
    assert exc.value.status == 400
    first = core.list_namespaced_pod(NS, limit=3)
    rest = core.list_namespaced_pod(NS, limit=3, _continue=first.metadata._continue)
    assert [p.metadata.name for p in first.items + rest.items] == ["a", "b", "c", "d"]
    assert rest.metadata._continue is None


# ---- patches ----

def test_strategic_merge_patch_merges_by_key_and_replaces_atomic_lists(apis):
    apps, *_ = apis
    apps.create_namespaced_deployment(NS, deployment())
    d = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "server", "image": "registry.local/llm:2.0",
                        "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 9000}]},
                       {"name": "sidecar", "image": "envoy:1.30"}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference"}]}}}})
    spec = d.spec.template.spec
    server = next(c for c in spec.containers if c.name == "server")
    assert [c.name for c in spec.containers] == ["server", "sidecar"]
    assert server.image == "registry.local/llm:2.0"
    assert [(e.name, e.value) for e in server.env] == [("A", "1"), ("B", "2")]
    assert sorted(p.container_port for p in server.ports) == [8000, 9000]
    assert [t.key for t in spec.tolerations] == ["dedicated"]  # no merge key: replaced
    d = apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}]}}}})
    assert [c.name for c in d.spec.template.spec.containers] == ["server"]


def test_merge_patch_replaces_lists_and_null_deletes(apis):
    apps, *_ = apis
    apps.create_namespaced_deployment(NS, deployment(annotations={"keep": "1", "drop": "1"}))
    d = apps.patch_namespaced_deployment("web", NS, {"metadata": {"annotations": {"drop": None}}, "spec": {
        "template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}}, _content_type=MERGE)
    assert d.metadata.annotations == {"keep": "1"}
    assert [(c.name, c.env) for c in d.spec.template.spec.containers] == [("only", None)]


def test_json_patch_applies_ops_and_a_failed_test_is_rejected(apis):
    apps, *_ = apis
    apps.create_namespaced_deployment(NS, deployment())
    d = apps.patch_namespaced_deployment("web", NS, [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/track", "value": "canary"}])
    assert (d.spec.replicas, d.metadata.labels["track"]) == (3, "canary")
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, [{"op": "test", "path": "/spec/replicas", "value": 99}])
    assert exc.value.status == 422


def test_server_side_apply_creates_merges_and_guards_ownership(apis):
    apps, *_ = apis
    body = deployment()
    created = apps.patch_namespaced_deployment("web", NS, body, field_manager="inferops-canary",
                                               _content_type="application/apply-patch+yaml")
    assert created.metadata.generation == 1
    assert [m.manager for m in created.metadata.managed_fields] == ["inferops-canary"]
    # another manager changes replicas with an ordinary patch and so owns spec.replicas
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}}, field_manager="hpa")
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, deployment(replicas=2), field_manager="inferops-canary",
                                         _content_type="application/apply-patch+yaml")
    assert exc.value.status == 409 and "hpa" in exc.value.body
    forced = apps.patch_namespaced_deployment("web", NS, deployment(replicas=2), field_manager="inferops-canary",
                                              force=True, _content_type="application/apply-patch+yaml")
    assert forced.spec.replicas == 2
    # a field the manager stops applying is removed
    smaller = deployment(replicas=2)
    del smaller["metadata"]["labels"]
    again = apps.patch_namespaced_deployment("web", NS, smaller, field_manager="inferops-canary",
                                             _content_type="application/apply-patch+yaml")
    assert not again.metadata.labels
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, body, _content_type="application/apply-patch+yaml",
                                         field_manager="")
    assert exc.value.status == 400


def test_custom_resources_httproute(apis, kube_clean):
    *_, custom = apis
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io")
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "llm", "labels": {"app": "llm"}},
             "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                 {"name": "llm-stable", "port": 80, "weight": 100}, {"name": "llm-canary", "port": 80, "weight": 0}]}]}}
    args = ("gateway.networking.k8s.io", "v1", NS, "httproutes")
    created = custom.create_namespaced_custom_object(*args, route)
    assert created["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*args, route)
    assert exc.value.status == 409
    rules = [{"backendRefs": [{"name": "llm-stable", "port": 80, "weight": 95},
                              {"name": "llm-canary", "port": 80, "weight": 5}]}]
    patched = custom.patch_namespaced_custom_object(*args, "llm", {"spec": {"rules": rules}})
    assert [b["weight"] for b in patched["spec"]["rules"][0]["backendRefs"]] == [95, 5]
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(*args, "llm", {"spec": {}}, _content_type=SMP)
    assert exc.value.status == 415  # CRDs take no strategic merge patch, as in Kubernetes
    listed = custom.list_namespaced_custom_object(*args, label_selector="app=llm")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["llm"]
    custom.delete_namespaced_custom_object(*args, "llm")
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(*args, "llm")
    assert exc.value.status == 404


def test_leases_events_priorityclasses_and_discovery(kube_clean):
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io")
    c = kube_clean.api_client()
    coord = client.CoordinationV1Api(c)
    lease = coord.create_namespaced_lease(NS, {"metadata": {"name": "canary-web"},
                                              "spec": {"holderIdentity": "run-1", "leaseDurationSeconds": 30}})
    lease.spec.holder_identity = "run-2"
    coord.replace_namespaced_lease("canary-web", NS, lease)
    with pytest.raises(ApiException) as exc:
        coord.replace_namespaced_lease("canary-web", NS, lease)  # stale now
    assert exc.value.status == 409
    client.CoreV1Api(c).create_namespaced_event(NS, {"metadata": {"name": "e1"}, "reason": "Promoted",
                                                     "involvedObject": {"kind": "Deployment", "name": "web"}})
    sched = client.SchedulingV1Api(c)
    sched.create_priority_class({"metadata": {"name": "offline-batch"}, "value": -10, "preemptionPolicy": "Never"})
    assert sched.read_priority_class("offline-batch").preemption_policy == "Never"
    assert client.VersionApi(c).get_code().minor == "33"
    groups = {g.name for g in client.ApisApi(c).get_api_versions().groups}
    assert {"apps", "batch", "gateway.networking.k8s.io", "coordination.k8s.io"} <= groups
    res = client.AppsV1Api(c).get_api_resources()
    assert {"deployments", "deployments/status", "deployments/scale"} <= {r.name for r in res.resources}


# ---- watch ----

def test_watch_streams_events_resumes_and_expires(apis, kube_clean):
    _, core, *_ = apis
    core.create_namespaced_config_map(NS, {"metadata": {"name": "one", "labels": {"w": "1"}}})
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    core.patch_namespaced_config_map("one", NS, {"data": {"k": "v"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "other"}})
    core.patch_namespaced_config_map("one", NS, {"metadata": {"labels": {"w": None}}})
    core.delete_namespaced_config_map("other", NS)

    w = watch.Watch()
    seen = [(e["type"], e["object"].metadata.name) for e in w.stream(
        core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=1)]
    assert seen == [("MODIFIED", "one"), ("ADDED", "other"), ("MODIFIED", "one"), ("DELETED", "other")]
    # with a selector, leaving the selection reads as DELETED
    seen = [(e["type"], e["object"].metadata.name) for e in w.stream(
        core.list_namespaced_config_map, NS, resource_version=start, label_selector="w=1", timeout_seconds=1)]
    assert seen == [("MODIFIED", "one"), ("DELETED", "one")]
    # no resourceVersion: the current state as ADDED, then live changes from another thread
    import threading
    threading.Timer(0.3, lambda: core.create_namespaced_config_map(NS, {"metadata": {"name": "late"}})).start()
    seen = []
    for e in w.stream(core.list_namespaced_config_map, NS, timeout_seconds=3):
        seen.append((e["type"], e["object"].metadata.name))
        if e["object"].metadata.name == "late":
            w.stop()
    assert seen == [("ADDED", "one"), ("ADDED", "late")]
    kube_clean.reset()  # history compacted: resuming from before is 410 Gone
    with pytest.raises(ApiException) as exc:
        list(w.stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=1))
    assert exc.value.status == 410


# ---- controllers ----

def condition(obj, type_):
    return next((c for c in (obj.status and obj.status.conditions) or [] if c.type == type_), None)


def test_python_api_sets_rollout_speed_and_job_outcome(apis, kube_clean):
    apps, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    kube_clean.deployments.speed(NS, "web", 60)  # containers take a minute to start: still progressing below
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    d = wait_until(lambda: condition(d := apps.read_namespaced_deployment("web", NS), "Progressing") and
                   d.status.updated_replicas == 2 and d, what="status")
    assert (condition(d, "Progressing").reason, condition(d, "Available").status) == ("ReplicaSetUpdated", "False")
    assert not d.status.available_replicas
    waiting = core.list_namespaced_pod(NS, label_selector="app=web").items[0].status.container_statuses[0]
    assert waiting.state.waiting.reason == "ContainerCreating"
    kube_clean.jobs.run_for(NS, "flaky", seconds=0.1, exit_code=1)
    batch.create_namespaced_job(NS, job("flaky"))
    assert condition(wait_job(batch, "flaky", "Failed"), "Failed").reason == "BackoffLimitExceeded"
    kube_clean.deployments.enabled = False  # a switched-off controller leaves status alone
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
    time.sleep(0.3)
    assert apps.read_namespaced_deployment("web", NS).status.observed_generation == 1


def wait_job(batch, name, type_):
    return wait_until(lambda: (j := batch.read_namespaced_job_status(name, NS)) and condition(j, type_)
                      and condition(j, type_).status == "True" and j, what=f"job {name} {type_}")


def job_ready(batch, name) -> bool:
    status = batch.read_namespaced_job_status(name, NS).status
    return bool(status and status.ready)


def test_job_runs_on_a_gpu_node_and_completes(apis, kube_clean):
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    batch.create_namespaced_job(NS, job("eval", gpus=4))
    done = wait_job(batch, "eval", "Complete")
    assert (done.status.succeeded, done.status.failed or 0, done.status.active or 0) == (1, 0, 0)
    assert condition(done, "SuccessCriteriaMet").status == "True" and done.status.completion_time
    pods = core.list_namespaced_pod(NS, label_selector="job-name=eval").items
    assert [(p.spec.node_name, p.status.phase) for p in pods] == [("gpu-a", "Succeeded")]
    assert not pods[0].metadata.finalizers  # the job-tracking finalizer is released once counted


def test_jobs_respect_gpu_capacity(apis, kube_clean):
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    slow = {"emulator.inferops.dev/run-seconds": "30"}
    batch.create_namespaced_job(NS, job("big-1", gpus=6, annotations=slow))
    batch.create_namespaced_job(NS, job("big-2", gpus=6, annotations=slow))
    wait_until(lambda: len(core.list_namespaced_pod(NS, field_selector="status.phase=Running").items) == 1
               and len(core.list_namespaced_pod(NS, field_selector="status.phase=Pending").items) == 1)
    pending = core.list_namespaced_pod(NS, field_selector="status.phase=Pending").items[0]
    wait_until(lambda: condition(core.read_namespaced_pod(pending.metadata.name, NS), "PodScheduled"))
    assert "Insufficient nvidia.com/gpu" in condition(core.read_namespaced_pod(pending.metadata.name, NS),
                                                      "PodScheduled").message


def test_job_deletion_propagation(apis, kube_clean):
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8)
    for name in ("orphaner", "cleaner"):
        batch.create_namespaced_job(NS, job(name, annotations={"emulator.inferops.dev/run-seconds": "60"}))
        wait_until(lambda name=name: core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items)
    batch.delete_namespaced_job("orphaner", NS)  # the API default for batch/v1 Jobs orphans the pods
    orphan = core.list_namespaced_pod(NS, label_selector="job-name=orphaner").items
    assert len(orphan) == 1 and not orphan[0].metadata.owner_references
    wait_until(lambda: not core.read_namespaced_pod(orphan[0].metadata.name, NS).metadata.finalizers,
               what="the job controller to release the orphan's tracking finalizer")
    batch.delete_namespaced_job("cleaner", NS, propagation_policy="Background")  # pods deleted gracefully
    wait_until(lambda: not core.list_namespaced_pod(NS, label_selector="job-name=cleaner").items, what="cascade")


def test_priority_class_admission(kube_clean):
    core = client.CoreV1Api(kube_clean.api_client())
    sched = client.SchedulingV1Api(kube_clean.api_client())
    sched.create_priority_class({"metadata": {"name": "inference-critical"}, "value": 1000000})
    created = core.create_namespaced_pod(NS, {"metadata": {"name": "llm-0"}, "spec": {
        "priorityClassName": "inference-critical", "containers": [{"name": "s", "image": "llm:1"}]}})
    assert (created.spec.priority, created.spec.preemption_policy) == (1000000, "PreemptLowerPriority")
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(NS, {"metadata": {"name": "x"}, "spec": {
            "priorityClassName": "nope", "containers": [{"name": "s", "image": "i:1"}]}})
    assert exc.value.status == 403


def test_removed_node_disrupts_its_pods(apis, kube_clean):
    _, core, batch, _ = apis
    kube_clean.add_node("gpu-a", gpus=8, product="NVIDIA-H100-80GB-HBM3")
    assert core.read_node("gpu-a").metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    batch.create_namespaced_job(NS, job("n", annotations={"emulator.inferops.dev/run-seconds": "60"}))
    wait_until(lambda: job_ready(batch, "n"))
    kube_clean.remove_node("gpu-a")
    assert condition(wait_job(batch, "n", "Failed"), "Failed").reason == "BackoffLimitExceeded"


# ---- the kubeconfig works for the shared adapter and for kubectl ----

def test_shared_adapter_and_kubectl_use_the_generated_kubeconfig(kube_clean):
    kube_clean.add_node("gpu-a")
    c = api_client(kube_clean.kubeconfig)
    assert [n.metadata.name for n in client.CoreV1Api(c).list_node().items] == ["gpu-a"]
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "--kubeconfig", kube_clean.kubeconfig, "get", "nodes", "-o", "name"],
                         capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout.strip()) == (0, "node/gpu-a")
    out = subprocess.run(["kubectl", "--kubeconfig", kube_clean.kubeconfig, "get", "ns"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "kube-system" in out.stdout


def test_newer_server_fields_are_kept_only_when_declared(apis, kube_clean):
    apps, *_ = apis
    body = deployment()
    body["spec"]["rolloutHints"] = {"surgeProfile": "gentle"}
    r = httpx.post(f"{kube_clean.url}/apis/apps/v1/namespaces/{NS}/deployments", json=body)
    assert r.status_code == 201 and "rolloutHints" not in r.json()["spec"]  # 1.33 does not know it: dropped
    kube_clean.store.warnings.clear()
    kube_clean.serve_newer_fields("apps", "Deployment", "spec.rolloutHints")
    body["metadata"]["name"] = "newer"
    r = httpx.post(f"{kube_clean.url}/apis/apps/v1/namespaces/{NS}/deployments", json=body)
    assert r.json()["spec"]["rolloutHints"] == {"surgeProfile": "gentle"} and not r.headers.get_list("warning")
