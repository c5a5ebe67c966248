"""Conformance of the emulator's API server with a real 1.33 apiserver, over HTTP with the official
client. Each test's docstring starts with the Kubernetes documentation page it reproduces."""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kube import wait_until

NS = "default"
GW = ("gateway.networking.k8s.io", "v1", NS, "httproutes")



def deployment(name: str = "web", replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "server", "image": "registry.local/llm:1.0"}]}}}}


def job(name: str, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "work", "image": "registry.local/batch:1.0"}]}}}}


def route(weight: int = 1, **rule) -> dict:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "llm"},
            "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
                {"name": "llm", "port": 80, "weight": weight}], **rule}]}}


def post(kube, path: str, body: dict, **params) -> httpx.Response:
    return httpx.post(f"{kube.url}{path}", json=body, params=params, timeout=30)


def status(r: httpx.Response) -> dict:
    body = r.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == r.status_code
    return body


@pytest.fixture
def apis(kube_clean):
    c = kube_clean.api_client()
    return client.AppsV1Api(c), client.CoreV1Api(c), client.BatchV1Api(c), client.CustomObjectsApi(c)


# ---- decoding and field validation ----

def test_a_value_of_the_wrong_type_is_a_400_status(kube_clean):
    """https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/ — an undecodable body
    (``replicas: "3"``) is 400 BadRequest in the Status shape, never a 500."""
    bad = deployment()
    bad["spec"]["replicas"] = "3"
    r = post(kube_clean, f"/apis/apps/v1/namespaces/{NS}/deployments", bad)
    body = status(r)
    assert (r.status_code, body["reason"]) == (400, "BadRequest")
    assert "cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32" in body["message"]
    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "one"}}
    r = post(kube_clean, f"/apis/apps/v1/namespaces/{NS}/deployments", bad)
    assert r.status_code == 400 and "quantities must match" in status(r)["message"]


def test_unknown_fields_are_dropped_with_a_warning_or_refused_when_strict(apis, kube_clean):
    """https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation — the default is Warn:
    the field is dropped and a Warning header names it; ``fieldValidation=Strict`` makes it a 400."""
    typo = deployment()
    typo["spec"]["replicaz"] = 3
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    r = post(kube_clean, f"/apis/apps/v1/namespaces/{NS}/deployments", typo)
    assert r.status_code == 201
    assert sorted(r.headers.get_list("warning")) == ['299 - "unknown field \\"spec.replicaz\\""',
                                                     '299 - "unknown field \\"spec.template.spec.containers[0].'
                                                     'imagePullPolicyy\\""']
    stored = apis[0].read_namespaced_deployment("web", NS)
    assert stored.spec.replicas == 1 and "replicaz" not in json.dumps(r.json())
    typo["metadata"]["name"] = "strict"
    r = post(kube_clean, f"/apis/apps/v1/namespaces/{NS}/deployments", typo, fieldValidation="Strict")
    assert r.status_code == 400
    msg = status(r)["message"]
    assert "cannot be handled as a Deployment: strict decoding error: " in msg and \
        'unknown field "spec.replicaz"' in msg
    r = post(kube_clean, f"/apis/apps/v1/namespaces/{NS}/deployments", typo, fieldValidation="Ignore")
    assert r.status_code == 201 and not r.headers.get_list("warning")
    kube_clean.store.warnings.clear()  # sent on purpose above
    with pytest.raises(ApiException) as exc:  # the official client passes it through too
        apis[0].patch_namespaced_deployment("web", NS, {"spec": {"pausedd": True}}, field_validation="Strict")
    assert exc.value.status == 400


def test_malformed_bodies_are_client_errors_never_500(kube_clean):
    """https://kubernetes.io/docs/reference/using-api/api-concepts/#resources — whatever a client sends,
    the answer is a 4xx Status (the emulator's old 500 for ``replicas: "3"`` was the bug)."""
    base = f"/apis/apps/v1/namespaces/{NS}/deployments"
    bodies = [[], "text", {"metadata": "x"}, {"metadata": {"name": 7}}, {**deployment(), "spec": []},
              {**deployment(), "spec": {**deployment()["spec"], "template": {"spec": {"containers": {}}}}},
              {**deployment(), "kind": "Job"}, {**deployment(), "metadata": {"name": "x", "labels": {"a": 1}}}]
    for body in bodies:
        r = post(kube_clean, base, body)
        assert 400 <= r.status_code < 500 and status(r), (body, r.status_code, r.text)
    r = httpx.patch(f"{kube_clean.url}{base}/web", content=b"{not json",
                    headers={"content-type": "application/merge-patch+json"})
    assert r.status_code in (400, 404)


# ---- validation (422) ----

def test_immutable_fields_are_422(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#label-selector-updates and
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#mutable-scheduling-directives — a
    Deployment's selector and a started Job's template cannot change; a suspended, never-started Job's
    scheduling directives can."""
    apps, _, batch, _ = apis
    kube_clean.jobs.enabled = False
    apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_deployment("web", NS, {"spec": {"selector": {"matchLabels": {"app": "x"}},
                                                              "template": {"metadata": {"labels": {"app": "x"}}}}})
    assert exc.value.status == 422 and "spec.selector: Invalid value" in exc.value.body
    assert "field is immutable" in exc.value.body
    batch.create_namespaced_job(NS, job("run"))
    with pytest.raises(ApiException) as exc:
        batch.patch_namespaced_job("run", NS, {"spec": {"template": {"spec": {"containers": [
            {"name": "work", "image": "registry.local/batch:2.0"}]}}}})
    assert exc.value.status == 422 and "spec.template: Invalid value" in exc.value.body
    batch.create_namespaced_job(NS, job("queued", suspend=True))
    done = batch.patch_namespaced_job("queued", NS, {"spec": {"template": {"spec": {
        "nodeSelector": {"kubernetes.io/hostname": "gpu-a"}}}}})
    assert done.spec.template.spec.node_selector == {"kubernetes.io/hostname": "gpu-a"}


def test_names_follow_each_kinds_rule(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/overview/working-with-objects/names/ — Services are DNS-1035
    labels (at most 63 characters), Deployments and Jobs DNS-1123 subdomains; label values at most 63
    characters (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set)."""
    apps, core, batch, _ = apis
    long_name = "llm-" + "x" * 56 + "-baseline"  # a 60-character service name plus the track suffix
    svc = {"metadata": {"name": long_name}, "spec": {"selector": {"app": "llm"}, "ports": [{"port": 80}]}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service(NS, svc)
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    assert "must be no more than 63 characters" in body["message"]
    svc["metadata"]["name"] = "1llm"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_service(NS, svc)
    assert exc.value.status == 422 and "DNS-1035 label" in exc.value.body
    long_ok = deployment()
    long_ok["metadata"]["name"] = "llm." + "x" * 60  # subdomains may be longer than 63
    apps.create_namespaced_deployment(NS, long_ok)
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, job("Nightly_Eval"))
    assert exc.value.status == 422 and "RFC 1123 subdomain" in exc.value.body
    labelled = deployment(name="labelled")
    labelled["metadata"]["labels"]["inferops.io/team"] = "t" * 64
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, labelled)
    assert exc.value.status == 422 and "must be no more than 63 characters" in exc.value.body


def test_invalid_pod_failure_policy_action_is_422(apis):
    """https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy — the action is
    one of FailJob, Ignore, Count, FailIndex; a rule has onExitCodes or onPodConditions."""
    *_, batch, _ = apis
    bad = job("pfp", podFailurePolicy={"rules": [{"action": "Retry", "onPodConditions": [
        {"type": "DisruptionTarget"}]}, {"action": "Ignore"}]})
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, bad)
    body = json.loads(exc.value.body)
    assert exc.value.status == 422
    fields = {c["field"]: c["reason"] for c in body["details"]["causes"]}
    assert fields == {"spec.podFailurePolicy.rules[0].action": "FieldValueNotSupported",
                      "spec.podFailurePolicy.rules[1]": "FieldValueInvalid"}
    assert 'Unsupported value: "Retry": supported values: "Count", "FailIndex", "FailJob", "Ignore"' in body["message"]


def test_network_policy_peers_ports_and_ip_blocks_are_validated(kube_clean):
    """https://kubernetes.io/docs/concepts/services-networking/network-policies/#networkpolicy-resource —
    a peer is an ipBlock or pod/namespace selectors, never both; each ``except`` lies inside the block's
    ``cidr`` (the API server: "must be a strict subset of `cidr`", so also the same address family and a
    longer prefix); ``endPort`` needs a numeric ``port`` no greater than it; policyTypes are Ingress, Egress.
    The "everything but link-local" egress block of deploy/k8s is accepted, IPv4 and IPv6."""
    net = client.NetworkingV1Api(kube_clean.api_client())
    ok = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "egress"},
          "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
              {"to": [{"namespaceSelector": {}},
                      {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
                      {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}}]},
              {"ports": [{"port": 30000, "endPort": 32767, "protocol": "TCP"}, {"port": "dns", "protocol": "UDP"}]}]}}
    made = kube_clean.api_client().sanitize_for_serialization(net.create_namespaced_network_policy(NS, ok))
    assert made["spec"]["egress"] == ok["spec"]["egress"]
    bad = copy.deepcopy(ok)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["policyTypes"] = ["Egress", "Outbound"]
    bad["spec"]["egress"] = [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["169.254.169.254/32", "10.0.0.0/8", "fd00::/8"]}},
                {"ipBlock": {"cidr": "10.0.0.0/33"}},
                {"ipBlock": {"cidr": "0.0.0.0/0"}, "namespaceSelector": {}},
                {}]},
        {"ports": [{"port": 443, "endPort": 80}, {"port": "https", "endPort": 8443}, {"endPort": 9000},
                   {"port": 70000, "protocol": "ICMP"}]}]
    with pytest.raises(ApiException) as exc:
        net.create_namespaced_network_policy(NS, bad)
    assert exc.value.status == 422
    causes = {(c["field"], c["reason"]) for c in json.loads(exc.value.body)["details"]["causes"]}
    assert causes == {
        ("spec.policyTypes[1]", "FieldValueNotSupported"),
        ("spec.egress[0].to[0].ipBlock.except[0]", "FieldValueInvalid"),  # outside the cidr
        ("spec.egress[0].to[0].ipBlock.except[1]", "FieldValueInvalid"),  # the cidr itself: not a strict subset
        ("spec.egress[0].to[0].ipBlock.except[2]", "FieldValueInvalid"),  # another address family
        ("spec.egress[0].to[1].ipBlock.cidr", "FieldValueInvalid"),
        ("spec.egress[0].to[2]", "FieldValueForbidden"),
        ("spec.egress[0].to[3]", "FieldValueRequired"),
        ("spec.egress[1].ports[0].endPort", "FieldValueInvalid"),
        ("spec.egress[1].ports[1].endPort", "FieldValueInvalid"),
        ("spec.egress[1].ports[2].endPort", "FieldValueInvalid"),
        ("spec.egress[1].ports[3].port", "FieldValueInvalid"),
        ("spec.egress[1].ports[3].protocol", "FieldValueNotSupported"),
    }
    assert "must be a strict subset of `cidr`" in exc.value.body


def test_resources_and_probes_are_validated(apis):
    """https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#extended-resources —
    extended resources (``nvidia.com/gpu``) are integers and cannot be overcommitted; a probe has
    exactly one handler (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/)."""
    apps, *_ = apis
    d = deployment()
    c = d["spec"]["template"]["spec"]["containers"][0]
    c["resources"] = {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2", "cpu": "1"}}
    c["readinessProbe"] = {"httpGet": {"path": "/", "port": 80}, "exec": {"command": ["true"]}}
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, d)
    body = json.loads(exc.value.body)
    fields = {x["field"] for x in body["details"]["causes"]}
    assert fields == {"spec.template.spec.containers[0].resources.requests[nvidia.com/gpu]",
                      "spec.template.spec.containers[0].readinessProbe.httpGet"}


# ---- custom resources ----

def test_custom_resources_exist_only_with_their_crd(apis, kube_clean):
    """https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#create-a-customresourcedefinition
    — without its CRD an HTTPRoute path is 404; once applied it is served, and deleting the CRD deletes
    its objects."""
    *_, custom = apis
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*GW, route(weight=-1))
    assert exc.value.status == 404
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io")
    groups = {g.name for g in client.ApisApi(kube_clean.api_client()).get_api_versions().groups}
    assert "gateway.networking.k8s.io" in groups
    custom.create_namespaced_custom_object(*GW, route())
    ext = client.ApiextensionsV1Api(kube_clean.api_client())
    crd = ext.read_custom_resource_definition("httproutes.gateway.networking.k8s.io")
    assert {c.type: c.status for c in crd.status.conditions} == {"NamesAccepted": "True", "Established": "True"}
    ext.delete_custom_resource_definition("httproutes.gateway.networking.k8s.io")
    with pytest.raises(ApiException) as exc:
        custom.list_namespaced_custom_object(*GW)
    assert exc.value.status == 404


def test_custom_resources_validate_against_the_upstream_schema_with_defaults(apis, kube_clean):
    """https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation,
    #defaulting and #validation-rules — the upstream Gateway API v1.6.1 and prometheus-operator v0.93.0
    schemas: minimum, enum, pattern, CEL rules; defaults applied; unknown fields pruned with a warning."""
    *_, custom = apis
    kube_clean.install_crds("gateway.networking.k8s.io", "monitoring.coreos.com")
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*GW, route(weight=-1))
    assert exc.value.status == 422
    assert "spec.rules[0].backendRefs[0].weight: Invalid value: -1" in exc.value.body
    assert "should be greater than or equal to 0" in exc.value.body
    bad_path = route(matches=[{"path": {"type": "PathPrefix", "value": "no-slash"}}])
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*GW, bad_path)
    assert exc.value.status == 422 and "must be an absolute path" in exc.value.body  # a CEL rule
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(*GW, {**route(), "spec": {**route()["spec"], "hostnames": ["LLM"]}})
    assert exc.value.status == 422 and "should match" in exc.value.body
    body = route()
    del body["spec"]["rules"][0]["backendRefs"][0]["weight"]
    body["spec"]["rules"][0]["backendRefz"] = []
    r = post(kube_clean, f"/apis/{GW[0]}/v1/namespaces/{NS}/httproutes", body)
    assert r.status_code == 201 and r.headers.get_list("warning") == [
        '299 - "unknown field \\"spec.rules[0].backendRefz\\""']
    stored = custom.get_namespaced_custom_object(*GW, "llm")
    assert stored["spec"]["rules"][0]["backendRefs"][0] | {"name": "llm", "port": 80} == {
        "group": "", "kind": "Service", "name": "llm", "port": 80, "weight": 1}
    assert stored["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert stored["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
    kube_clean.store.warnings.clear()  # sent on purpose above
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "m"},
               "spec": {"selector": {"matchLabels": {"app": "llm"}},
                        "podMetricsEndpoints": [{"port": "metrics", "scheme": "ftp"}]}}
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", NS, "podmonitors", monitor)
    assert exc.value.status == 422 and 'Unsupported value: "ftp"' in json.loads(exc.value.body)["message"]
    del monitor["spec"]["selector"]
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object("monitoring.coreos.com", "v1", NS, "podmonitors", monitor)
    assert exc.value.status == 422 and "spec.selector: Required value" in exc.value.body


def test_custom_resources_take_merge_and_apply_patches_but_not_strategic_ones(apis, kube_clean):
    """https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/#use-a-json-merge-patch-to-update-a-deployment
    — custom resources do not support strategic merge patch (415); merge patches are validated."""
    *_, custom = apis
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io")
    custom.create_namespaced_custom_object(*GW, route())
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(*GW, "llm", {"spec": {}},
                                              _content_type="application/strategic-merge-patch+json")
    assert exc.value.status == 415
    rules = copy.deepcopy(route(weight=-5)["spec"]["rules"])
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(*GW, "llm", {"spec": {"rules": rules}})
    assert exc.value.status == 422
    rules[0]["backendRefs"][0]["weight"] = 7
    patched = custom.patch_namespaced_custom_object(*GW, "llm", {"spec": {"rules": rules}})
    assert patched["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7 and patched["metadata"]["generation"] == 2


# ---- graceful deletion ----

def test_a_running_pod_is_deleted_gracefully(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination — deleting a
    running pod sets deletionTimestamp (now + grace period); the pod stays until its containers stop
    (preStop, then SIGTERM; killed at the end of the grace period), then it is gone."""
    _, core, *_ = apis
    kube_clean.add_node("cpu-a", gpus=0)
    kube_clean.clock.speed = 10
    pod = {"metadata": {"name": "slow-stop", "annotations": {"emulator.inferops.dev/shutdown-seconds": "60"}},
           "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": "c", "image": "img:1"}]}}
    core.create_namespaced_pod(NS, pod)
    wait_until(lambda: core.read_namespaced_pod("slow-stop", NS).status.phase == "Running")
    t0 = time.monotonic()
    deleted = core.delete_namespaced_pod("slow-stop", NS)
    assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds == 20
    assert core.read_namespaced_pod("slow-stop", NS).metadata.deletion_timestamp is not None
    gone = wait_until(lambda: not core.list_namespaced_pod(NS, field_selector="metadata.name=slow-stop").items,
                      what="the pod to go")
    assert gone and 1.5 <= time.monotonic() - t0 < 6  # 20 s of grace at 10x
    reasons = [e.reason for e in core.list_namespaced_event(NS).items if e.involved_object.name == "slow-stop"]
    assert "Killing" in reasons
    # an unscheduled pod goes at once
    core.create_namespaced_pod(NS, {"metadata": {"name": "nowhere"}, "spec": {
        "nodeSelector": {"pool": "none"}, "containers": [{"name": "c", "image": "img:1"}]}})
    core.delete_namespaced_pod("nowhere", NS)
    assert not core.list_namespaced_pod(NS, field_selector="metadata.name=nowhere").items


# ---- admission ----

def test_pod_security_admission_enforces_and_warns(apis, kube_clean):
    """https://kubernetes.io/docs/concepts/security/pod-security-admission/ — a pod breaking the
    namespace's enforced level is refused (403); the warn level adds Warning headers, for workloads too;
    a Deployment whose pods are refused reports FailedCreate on its ReplicaSet."""
    apps, core, *_ = apis
    kube_clean.add_node("cpu-a", gpus=0)
    core.create_namespace({"metadata": {"name": "locked", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}})
    plain = {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": "img:1"}]}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("locked", plain)
    body = json.loads(exc.value.body)
    assert exc.value.status == 403 and body["reason"] == "Forbidden"
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in body["message"]
    hardened = copy.deepcopy(plain)
    hardened["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    hardened["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}
    core.create_namespaced_pod("locked", hardened)
    r = post(kube_clean, "/apis/apps/v1/namespaces/locked/deployments", deployment())
    assert r.status_code == 201
    assert [w for w in r.headers.get_list("warning") if 'would violate PodSecurity \\"restricted:latest\\"' in w]
    [rs] = wait_until(lambda: apps.list_namespaced_replica_set("locked").items)
    failed = wait_until(lambda: [e for e in core.list_namespaced_event("locked").items
                                 if e.involved_object.name == rs.metadata.name and e.reason == "FailedCreate"])
    assert "violates PodSecurity" in failed[0].message and failed[0].type == "Warning"


def test_service_account_admission(apis, kube_clean):
    """https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#serviceaccount-admission-controller
    — every namespace gets a ``default`` ServiceAccount; a pod naming a missing one is refused."""
    _, core, *_ = apis
    core.create_namespace({"metadata": {"name": "team"}})
    assert core.read_namespaced_service_account("default", "team").metadata.name == "default"
    pod = {"metadata": {"name": "p"}, "spec": {"serviceAccountName": "missing",
                                               "containers": [{"name": "c", "image": "img:1"}]}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("team", pod)
    assert exc.value.status == 403 and 'serviceaccount \\"missing\\" not found' in exc.value.body
    del pod["spec"]["serviceAccountName"]
    assert core.create_namespaced_pod("team", pod).spec.service_account_name == "default"
