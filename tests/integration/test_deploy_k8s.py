"""deploy/k8s: every overlay builds with `kubectl kustomize`, validates (Kubernetes 1.33 strict for
built-in kinds, the upstream CRDs' schemas for custom resources), is hardened, its RBAC is least
privilege, and the prod build applies to the strict Kubernetes emulator and rolls out."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from flows.standins.kube_emulator.crd import Validator, upstream_crds
from flows.standins.kube_emulator.validation import selector_matches

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/k8s"
OVERLAYS = ("prod", "staging", "us-east-1", "eu-west-1")
KUBE_VERSION = "1.33"
# the custom resources we ship → their upstream CRD (../shared/k8s-crds or INFEROPS_K8S_CRDS)
CRDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes.gateway.networking.k8s.io",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors.monitoring.coreos.com",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules.monitoring.coreos.com",
}


def crd_validator(api_version: str, kind: str) -> Validator:
    crd = upstream_crds()[CRDS[(api_version, kind)]]
    version = api_version.split("/")[1]
    return Validator(next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"])


def kustomize(path: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is missing: `make setup` installs it (Debian package kubernetes-client)")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_templates(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def test_every_overlay_builds_the_whole_stack(built):
    for name, docs in built.items():
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PriorityClass",
                "HTTPRoute", "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount", "PrometheusRule",
                "PodMonitor", "ConfigMap", "Namespace"} <= kinds, name
        assert {"llm-server", "prefect-worker-k8s", "prefect-worker-a100"} <= set(by_kind(docs, "Deployment"))


def test_builtin_objects_validate_strictly_against_kubernetes_1_33(built):
    checked, seen = 0, set()
    for name, docs in built.items():
        for d in docs:
            key = json.dumps(d, sort_keys=True)
            if (d["apiVersion"], d["kind"]) in CRDS or key in seen:
                continue  # overlays share most objects: validate each distinct one once
            seen.add(key)
            try:
                kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']}: {exc.message}")
            checked += 1
    assert checked >= 40


def test_custom_resources_match_the_upstream_crds(built):
    """Gateway API v1.6.1 and prometheus-operator v0.93.0 schemas: no pruned field, no violation."""
    seen = set()
    for docs in built.values():
        for d in docs:
            if (d["apiVersion"], d["kind"]) not in CRDS:
                continue
            v = crd_validator(d["apiVersion"], d["kind"])
            obj, unknown = json.loads(json.dumps(d)), []
            v.prepare(obj, unknown)
            assert not unknown, f"{d['kind']}/{d['metadata']['name']}: fields the CRD does not declare: {unknown}"
            assert not v.validate(obj), f"{d['kind']}/{d['metadata']['name']}"
            seen.add(d["kind"])
    assert seen == {"HTTPRoute", "PodMonitor", "PrometheusRule"}
    # and the schemas do reject what the real CRDs reject
    route = by_kind(next(iter(built.values())), "HTTPRoute")["llm-server"]
    bad = json.loads(json.dumps(route))
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    bad["spec"]["rules"][0]["backendRefz"] = []
    v, unknown = crd_validator(route["apiVersion"], "HTTPRoute"), []
    v.prepare(bad, unknown)
    assert unknown == ["spec.rules[0].backendRefz"]
    assert [c[0] for c in v.validate(bad)] == ["spec.rules[0].backendRefs[0].weight"]


def test_pods_are_hardened(built):
    """No root, no privilege, all capabilities dropped, RuntimeDefault seccomp, read-only root
    filesystem, requests and limits set, and images pinned (no :latest, no untagged)."""
    for name, docs in built.items():
        templates = list(pod_templates(docs))
        assert len(templates) == 3
        for what, pod in templates:
            where = f"{name}: {what}"
            psc = pod.get("securityContext") or {}
            assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, where
            assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
            assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
            for c in pod.get("initContainers", []) + pod["containers"]:
                sc = c.get("securityContext") or {}
                assert sc.get("privileged") is not True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
                assert sc.get("runAsUser", psc.get("runAsUser")) != 0, where
                image = c["image"]
                tag = image.rsplit("/", 1)[-1]
                assert "@sha256:" in image or (":" in tag and not tag.endswith(":latest")), f"{where}: {image}"
                res = c.get("resources") or {}
                for key in ("cpu", "memory"):
                    assert key in res.get("limits", {}) and key in res.get("requests", {}), f"{where}: {key}"


def test_inference_deployment_matches_the_serving_contract(built):
    for docs in built.values():
        d = by_kind(docs, "Deployment")["llm-server"]
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert (c["resources"]["requests"]["cpu"], c["resources"]["requests"]["memory"]) == ("2", "8Gi")
        assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(c)
        assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        drain = c["lifecycle"]["preStop"]["sleep"]["seconds"] + 90  # + tritonserver --exit-timeout-secs
        assert "--exit-timeout-secs=90" in c["args"] and pod["terminationGracePeriodSeconds"] > drain
        assert pod["priorityClassName"] == "inference-critical"
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert d["spec"]["template"]["metadata"]["labels"]["inferops.io/track"] == "stable"
        pdb = by_kind(docs, "PodDisruptionBudget")["llm-server"]
        assert pdb["spec"]["selector"] == d["spec"]["selector"]
    prod, staging = (by_kind(built[n], "HorizontalPodAutoscaler")["llm-server"]["spec"] for n in ("prod", "staging"))
    assert (prod["minReplicas"], prod["maxReplicas"]) == (3, 50)
    assert (staging["minReplicas"], staging["maxReplicas"]) == (1, 4)


def build_with_component(tmp_path: Path, overlay: str, component: str) -> list[dict]:
    """An overlay plus one of deploy/k8s/components, as a user's kustomization would add it."""
    rel = Path(*[".."] * len(tmp_path.parts[1:])) / K8S.relative_to("/")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(rel / "overlays" / overlay)], "components": [str(rel / "components" / component)]}))
    return kustomize(tmp_path)


@pytest.mark.parametrize("mode", ["gateway-api", "replicas"])
def test_the_shipped_stack_passes_the_canary_label_checks(built, tmp_path, mode):
    """issue 14, defect 1: canary and baseline pods of llm-server keep app.kubernetes.io/name, so the
    NetworkPolicy (traffic, DNS, S3) and the PodMonitor (scrapes) select them, while the stable
    Deployment (its HPA, its PDB) never does; the stable Service selects them in replicas mode only
    (with the canary-replicas-mode component), and never in gateway-api mode (the HTTPRoute weights)."""
    from flows.canary import planner
    from flows.canary.models import CanaryPolicy

    docs = built["prod"] if mode == "gateway-api" else build_with_component(tmp_path, "prod", "canary-replicas-mode")
    ns = [d for d in docs if d["metadata"].get("namespace") == "inference"]
    stable = by_kind(ns, "Deployment")["llm-server"]
    service = by_kind(ns, "Service")["llm-server"]
    plan = planner.label_plan(stable, CanaryPolicy(traffic_mode=mode), network_policies=list(
        by_kind(ns, "NetworkPolicy").values()), pod_monitors=list(by_kind(ns, "PodMonitor").values()), service=service)
    assert plan.drop == ()
    assert {"NetworkPolicy default-deny", "NetworkPolicy llm-server", "PodMonitor llm-server"} <= set(plan.kept_for)
    base = stable["spec"]["template"]["metadata"]["labels"]
    for track in planner.TRACKS:
        labels = planner.track_pod_labels(base, "llm-server", track)
        assert labels["app.kubernetes.io/name"] == "llm-server"
        for selector in (stable["spec"]["selector"], by_kind(ns, "PodDisruptionBudget")["llm-server"]["spec"]["selector"]):
            assert not planner.selector_matches(selector, labels)
        assert planner.selector_matches({"matchLabels": service["spec"]["selector"]}, labels) is (mode == "replicas")


def test_regions_pin_placement_hostname_and_model_bucket(built):
    for region in ("us-east-1", "eu-west-1"):
        docs = built[region]
        pod = by_kind(docs, "Deployment")["llm-server"]["spec"]["template"]["spec"]
        term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
        assert term["matchExpressions"] == [{"key": "topology.kubernetes.io/region", "operator": "In",
                                             "values": [region]}]
        assert f"llm.{region}.inferops.example.com" in by_kind(docs, "HTTPRoute")["llm-server"]["spec"]["hostnames"]
        cm = next(c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("llm-server-config-"))
        assert cm["data"]["MODEL_REPOSITORY"] == f"s3://inferops-models-prod-{region}/triton/current"
        # the Deployment refers to the generated (hashed) ConfigMap name
        assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]


# kube-prometheus-stack with its default values (podMonitorSelectorNilUsesHelmValues and
# ruleSelectorNilUsesHelmValues true) makes its Prometheus select only the PodMonitors, ServiceMonitors
# and PrometheusRules labelled with the chart's release; deploy/k8s/README.md names the release.
OPERATOR_SELECTOR = {"release": "kube-prometheus-stack"}


def test_the_prometheus_operator_selects_every_monitor_and_rule_we_ship(built):
    """A PodMonitor without the release label is never scraped: no Triton series, so the canary's
    analysis has no data, the HPA's requests-per-second metric is missing and HighLatency never fires."""
    for name, docs in built.items():
        selected = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        assert {d["kind"] for d in selected} == {"PodMonitor", "PrometheusRule"}, name
        for d in selected:
            labels = d["metadata"].get("labels") or {}
            assert OPERATOR_SELECTOR.items() <= labels.items(), f"{name}: {d['kind']}/{d['metadata']['name']}: {labels}"
    assert "release: kube-prometheus-stack" in (K8S / "README.md").read_text()


def test_hpa_scales_on_dcgm_utilization_and_rps_served_by_the_adapter_rules(built):
    docs = built["prod"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["llm-server"]["spec"]
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"]}
    assert targets == {"dcgm_gpu_utilization": {"type": "AverageValue", "averageValue": "70"},
                       "inference_requests_per_second": {"type": "AverageValue", "averageValue": "5000"}}
    rules = yaml.safe_load(by_kind(docs, "ConfigMap")["adapter-config"]["data"]["config.yaml"])["rules"]
    assert {r["name"]["as"] for r in rules} == set(targets)
    series = {r["name"]["as"]: r["seriesQuery"].split("{")[0] for r in rules}
    assert series == {"dcgm_gpu_utilization": "DCGM_FI_DEV_GPU_UTIL",
                      "inference_requests_per_second": "nv_inference_request_success"}


def test_adapter_queries_are_valid_promql(tmp_path, built):
    """Render each rule the way prometheus-adapter does and let promtool parse the result."""
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing: `apt-get install -y prometheus`")
    rules = yaml.safe_load(by_kind(built["prod"], "ConfigMap")["adapter-config"]["data"]["config.yaml"])["rules"]
    recording = []
    for r in rules:
        series = r["seriesQuery"].split("{")[0]
        labels = list(r["resources"]["overrides"])
        expr = (r["metricsQuery"].replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", f'{labels[0]}="inference",{labels[1]}=~"llm-server-.*"')
                .replace("<<.GroupBy>>", labels[1]))
        recording.append({"record": f"adapter:{r['name']['as']}", "expr": expr})
    f = tmp_path / "adapter.rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": recording}]}))
    out = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def rules_of(docs: list[dict], kind: str, name: str) -> list[tuple[str, str, str]]:
    return sorted((g, res, v) for r in by_kind(docs, kind)[name]["rules"] for g in r["apiGroups"]
                  for res in r["resources"] for v in r["verbs"])


def test_rbac_is_least_privilege(built):
    docs = built["prod"]
    for d in docs:
        for rule in d.get("rules", []) if d["kind"] in ("Role", "ClusterRole") else []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], d["metadata"]["name"]
            assert not {"secrets", "pods/exec", "serviceaccounts/token"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    roles = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d["kind"] == "Role"}
    assert ("inference", "inferops-canary") in roles and ("offline-batch", "inferops-idle-gpu") in roles
    canary = rules_of(docs, "Role", "inferops-canary")
    # exactly what flows/canary/actuator.py calls (test_canary_role_grants_what_the_actuator_calls):
    # the production HTTPRoute's weights are patched, never created, replaced or deleted
    assert [v for g, r, v in canary if r == "deployments" and g == "apps"] == ["create", "delete", "get", "patch"]
    assert [v for g, r, v in canary if r == "httproutes" and g == "gateway.networking.k8s.io"] == ["get", "patch"]
    assert [v for g, r, v in canary if r == "services" and g == ""] == ["create", "delete", "get"]
    assert {r for _, r, _ in canary} == {"deployments", "httproutes", "services", "horizontalpodautoscalers",
                                         "networkpolicies", "podmonitors"}
    # read-only, for the checks before a rollout: the target's HPA, the selectors its pods must keep
    assert [v for g, r, v in canary if r == "horizontalpodautoscalers" and g == "autoscaling"] == ["list"]
    assert [v for g, r, v in canary if r == "networkpolicies" and g == "networking.k8s.io"] == ["list"]
    assert [v for g, r, v in canary if r == "podmonitors" and g == "monitoring.coreos.com"] == ["list"]
    idle = rules_of(docs, "Role", "inferops-idle-gpu")
    assert {r for _, r, _ in idle} == {"jobs", "pods"}
    assert {v for _, r, v in idle if r == "pods"} == {"get", "list", "watch"}
    cluster_roles = by_kind(docs, "ClusterRole")
    assert set(cluster_roles) == {"inferops-idle-gpu-capacity"}  # the only cluster-wide grant: read-only
    assert {v for *_, v in rules_of(docs, "ClusterRole", "inferops-idle-gpu-capacity")} == {"get", "list", "watch"}
    # cluster-wide, the autoscalers (a cache kept by a watch, as pods and nodes): a night waits while one
    # of GPU pods is held back by its scale-up rate
    assert [v for g, r, v in rules_of(docs, "ClusterRole", "inferops-idle-gpu-capacity")
            if r == "horizontalpodautoscalers" and g == "autoscaling"] == ["list", "watch"]
    # the PriorityClasses the Jobs name, checked before a night: get, by name, nothing else
    [pcs] = [r for r in by_kind(docs, "ClusterRole")["inferops-idle-gpu-capacity"]["rules"]
             if r["resources"] == ["priorityclasses"]]
    assert pcs["verbs"] == ["get"] and set(pcs["resourceNames"]) == set(by_kind(docs, "PriorityClass")) - {
        "inference-critical"}
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert all(s["kind"] == "ServiceAccount" and s["namespace"] == "inferops" for s in b["subjects"])


def test_canary_role_grants_what_the_actuator_calls(built):
    """Every Kubernetes request the canary's actuator can make (each public method of
    flows/canary/actuator.Cluster, through the real flows.common.kube.Kube methods) is granted by
    the Role inferops-canary, and the Role grants nothing the actuator never asks for."""
    from flows.canary import planner
    from flows.canary.actuator import Cluster
    from flows.common.kube import APPLY_PATCH, Conflict, Kube

    ns, name = "inference", "llm-server"
    calls: set[tuple[str, str, str]] = set()

    class Recording(Kube):
        def __init__(self) -> None:
            super().__init__(None, sleep=lambda _s: None)
            self.exists = True

        def request(self, verb, kind, namespace, name=None, **kw):
            calls.add((kind.group, kind.plural, verb))
            if kw.get("content_type") == APPLY_PATCH:
                calls.add((kind.group, kind.plural, "create"))  # apply creates what does not exist yet
            if verb == "list":
                return {"items": [], "metadata": {}}
            if verb == "create" and self.exists:
                raise Conflict("exists", reason="AlreadyExists")
            return {"metadata": {"name": name or "x", "namespace": namespace, "resourceVersion": "1",
                                 "labels": {planner.ROLLOUT_OF_LABEL: "llm-server"}, "annotations": {}},
                    "spec": {"replicas": 3, "template": {"metadata": {}},
                             "rules": [{"backendRefs": [{"name": "llm-server", "port": 80, "weight": 50}]}]}}

    kube = Recording()
    c = Cluster(kube, ns, name)
    manifest = {"metadata": {"name": f"{name}-canary", "labels": {planner.ROLLOUT_OF_LABEL: name}}}
    exercised = {
        "read_deployment": lambda: c.read_deployment(name), "read_target": c.read_target,
        "read_service": lambda: c.read_service(name), "read_route": lambda: c.read_route(name),
        "find_service": lambda: c.find_service(name), "read_autoscaler": c.read_autoscaler,
        "label_objects": c.label_objects, "read_lease": c.read_lease, "read_state": c.read_state,
        "write_lease": lambda: c.write_lease(None, "1"), "apply_track": lambda: c.apply_track(manifest),
        "apply_track_service": lambda: c.apply_track_service(manifest), "scale_target": lambda: c.scale_target(4),
        "set_target_template": lambda: c.set_target_template({"metadata": {"labels": {"a": "b"}}}, 4),
        "set_route": lambda: c.set_route(name, name, None), "delete_tracks": lambda: c.delete_tracks(service=name),
    }
    assert set(exercised) == {m for m in vars(Cluster) if not m.startswith("_")}, "a new actuator method: add it here"
    for call in exercised.values():
        call()
    kube.exists = False
    c.apply_track_service(manifest)
    granted = {(g, r, v) for g, r, v in rules_of(built["prod"], "Role", "inferops-canary")}
    assert calls == granted


def test_workers_serve_the_pools_of_prefect_yaml(built):
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    workers = by_kind(built["prod"], "Deployment")
    served = set()
    for name in ("prefect-worker-k8s", "prefect-worker-a100"):
        args = workers[name]["spec"]["template"]["spec"]["containers"][0]["args"]
        pool = args[args.index("--pool") + 1]
        assert name == f"prefect-worker-{pool}" and "kubernetes" in args
        served.add(pool)
    assert served == {"k8s", "a100"} and served <= pools
    for name in ("k8s", "a100"):  # flow runs use the ServiceAccount the RBAC above grants
        template = yaml.safe_load((REPO / f"deploy/prefect/{name}.json").read_text())
        sa = template["variables"]["properties"]["service_account_name"]["default"]
        ns = template["variables"]["properties"]["namespace"]["default"]
        assert (ns, sa) in {(d["metadata"]["namespace"], d["metadata"]["name"])
                            for d in built["prod"] if d["kind"] == "ServiceAccount"}


@pytest.mark.parametrize("pool", ["k8s", "a100"])
def test_flow_run_jobs_take_the_prefect_api_key_from_its_secret(built, monkeypatch, pool):
    """The worker hands its Prefect settings to every flow-run Job as env. Unless it is told which
    Secret its PREFECT_API_KEY came from, the key is written in plain text into each Job's manifest,
    where anyone who may read Jobs in inferops (the `view` ClusterRole does) reads it. The real
    KubernetesWorker._create_job runs here with the worker Deployment's env; only the API call is faked."""
    import asyncio
    import uuid

    import prefect_kubernetes.worker as kworker
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    worker = by_kind(built["prod"], "Deployment")[f"prefect-worker-{pool}"]
    env = worker["spec"]["template"]["spec"]["containers"][0]["env"]
    [ref] = [e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "PREFECT_API_KEY"]
    for e in env:
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    template = json.loads((REPO / f"deploy/prefect/{pool}.json").read_text())
    assert template["variables"]["properties"]["namespace"]["default"] == worker["metadata"]["namespace"]
    created = []

    class FakeBatch:
        def __init__(self, *_a, **_k) -> None:
            pass

        async def create_namespaced_job(self, namespace, manifest):
            created.append(manifest)
            return manifest

    monkeypatch.setattr(kworker, "BatchV1Api", FakeBatch)

    async def submit() -> None:
        with temporary_settings(updates={PREFECT_API_KEY: "pnu_not_for_the_manifest",
                                         PREFECT_API_URL: "https://prefect.example.com/api"}):
            cfg = await kworker.KubernetesWorkerJobConfiguration.from_template_and_values(template, {})
            cfg.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4()))
            await kworker.KubernetesWorker(work_pool_name=pool)._create_job(cfg, None)

    asyncio.run(submit())
    [job] = created
    assert "pnu_not_for_the_manifest" not in json.dumps(job)
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["PREFECT_API_KEY"] == {"name": "PREFECT_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": ref["name"], "key": ref["key"]}}}


def test_flow_runs_get_an_api_token_only_where_the_flow_calls_kubernetes(built):
    """Each deployment on a Kubernetes pool runs as a ServiceAccount: the one with the canary and
    idle-gpu grants (cluster-wide pod reads, writes to the serving Deployments) only if its flow uses
    the Kubernetes adapter; model-build (user-supplied models) and cost-report get no token at all."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    docs = built["prod"]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "ServiceAccount"}
    bound = {(s["namespace"], s["name"]) for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
             for s in d["subjects"]}
    seen = {}
    for d in spec["deployments"]:
        pool = d["work_pool"]["name"]
        if pool not in ("k8s", "a100"):
            continue
        template = json.loads((REPO / f"deploy/prefect/{pool}.json").read_text())
        props = template["variables"]["properties"]
        variables = d.get("job_variables") or d["work_pool"].get("job_variables") or {}
        who = (props["namespace"]["default"], variables.get("service_account_name") or props["service_account_name"]["default"])
        assert who in accounts, f"{d['name']}: no ServiceAccount {who}"
        pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        mounted = pod.get("automountServiceAccountToken", accounts[who].get("automountServiceAccountToken", True))
        room = REPO / "flows" / d["entrypoint"].split("/")[1]
        calls_kube = any("flows.common.kube" in f.read_text() for f in room.glob("*.py") if f.name != "cli.py")
        assert (mounted, who in bound) == (calls_kube, calls_kube), d["name"]
        seen[d["name"]] = calls_kube
    assert seen == {"canary-rollout": True, "idle-gpu-nightly": True, "model-build": False, "cost-report-daily": False}


def test_priority_classes(built):
    pcs = by_kind(built["prod"], "PriorityClass")
    assert pcs["offline-batch"]["value"] < 0 and pcs["offline-batch"]["preemptionPolicy"] == "Never"
    # checkpointable offline jobs are preempted first: they resume from a checkpoint, the others start over
    low = pcs["offline-batch-checkpointable"]
    assert low["value"] < pcs["offline-batch"]["value"] and low["preemptionPolicy"] == "Never"
    assert pcs["inference-critical"]["value"] >= 1000000
    assert not any(pc.get("globalDefault") for pc in pcs.values())


def test_the_prod_stack_applies_with_kubectl_and_rolls_out(built, kube_clean):
    """`kubectl apply --server-side` of the whole prod build into the strict emulator (with the CRDs it
    needs), onto GPU nodes: every object is accepted with no pruned field, and the inference Deployment
    rolls out to 3 available replicas under its HPA and PDB. (The emulator serves no OpenAPI document,
    hence --validate=false: the server validates, as it does for any client.)"""
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io", "monitoring.coreos.com")
    for i in range(2):
        kube_clean.add_node(f"gpu-{i}", gpus=8, taints=[{"key": "nvidia.com/gpu", "value": "present",
                                                         "effect": "NoSchedule"}])
    kube_clean.add_node("cpu-0", gpus=0)
    kube_clean.create_namespace("monitoring")  # a prerequisite: kube-prometheus-stack's namespace
    docs = built["prod"]
    out = subprocess.run(["kubectl", "--kubeconfig", kube_clean.kubeconfig, "apply", "--server-side",
                          "--validate=false", "-f", "-"], input=yaml.safe_dump_all(docs), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("serverside-applied") == len(docs)
    assert "unknown field" not in out.stderr, out.stderr  # the server warns about every pruned field
    api = kube_clean.api_client()
    apps = client.AppsV1Api(api)

    def rolled_out() -> bool:
        st = apps.read_namespaced_deployment("llm-server", "inference").status
        return bool(st and st.available_replicas == 3 and st.observed_generation == 1)

    deadline = time.monotonic() + 20
    while not rolled_out():
        assert time.monotonic() < deadline, "llm-server did not roll out"
        time.sleep(0.05)
    pods = client.CoreV1Api(api).list_namespaced_pod("inference").items
    assert {p.spec.node_name for p in pods} <= {"gpu-0", "gpu-1"} and len(pods) == 3
    assert all(p.spec.priority == 1000000 for p in pods)  # inference-critical, admitted from its PriorityClass
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "inference", "httproutes", "llm-server")
    assert [m["manager"] for m in route["metadata"]["managedFields"]] == ["kubectl"]
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget_status("llm-server", "inference")
    deadline = time.monotonic() + 10
    while (pdb.status.current_healthy or 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget_status("llm-server", "inference")
    assert (pdb.status.current_healthy, pdb.status.desired_healthy, pdb.status.disruptions_allowed) == (3, 2, 1)
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("llm-server", "inference")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (3, 50)
    for name in ("prefect-worker-k8s", "prefect-worker-a100"):
        assert apps.read_namespaced_deployment(name, "inferops").spec.replicas >= 1


# ---- NetworkPolicies: no pod of ours reaches the instance metadata service ----

# the pipelines' namespaces: flow runs and their workers, and the offline Jobs (images users bring)
EGRESS_GUARDED = ("inferops", "offline-batch")
LINK_LOCAL = [ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")]
# the instance metadata service (AWS, GCP, Azure: 169.254.169.254; AWS IPv6: fd00:ec2::254), the ECS and
# EKS Pod Identity credential endpoints, the AWS DNS and time addresses: all link-local or AWS's own
METADATA = ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "169.254.169.253",
            "169.254.169.123", "fe80::a9fe:a9fe")


def network_policies(docs: list[dict], namespace: str) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["namespace"] == namespace]


def _ports_match(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports") or []
    return not ports or any(p.get("protocol", "TCP") == protocol and (
        "port" not in p or p["port"] <= port <= p.get("endPort", p["port"])) for p in ports)


def _peer_matches(peer: dict, policy_ns: str, dest: dict) -> bool:
    if "ipBlock" in peer:
        ip, block = ipaddress.ip_address(dest["ip"]), peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        return ip.version == net.version and ip in net and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if dest.get("pod") is None:  # selectors select pods, never an address outside the pod network
        return False
    ns_sel = peer.get("namespaceSelector")
    in_ns = (selector_matches(ns_sel, {"kubernetes.io/metadata.name": dest["namespace"]}) if ns_sel is not None
             else dest["namespace"] == policy_ns)
    return in_ns and selector_matches(peer.get("podSelector") or {}, dest["pod"])


def allowed(policies: list[dict], direction: str, namespace: str, pod: dict, other: dict, port: int,
            protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
    a pod no policy of ``direction`` selects is open; one that some policy selects gets the union of the
    selecting policies' rules; a rule matches when a port and a peer do (an empty list matches all).
    ``other`` is the remote end: ``{"ip": …}`` outside the pod network, or ``{"namespace", "pod", "ip"}``."""
    kind, peers = ("Egress", "to") if direction == "egress" else ("Ingress", "from")
    selecting = [p for p in policies if p["metadata"]["namespace"] == namespace
                 and kind in p["spec"].get("policyTypes", ["Ingress"]) and selector_matches(p["spec"]["podSelector"], pod)]
    if not selecting:
        return True
    return any(_ports_match(r, port, protocol) and (not r.get(peers) or any(
        _peer_matches(peer, namespace, other) for peer in r[peers]))
        for p in selecting for r in p["spec"].get(direction) or [])


def test_the_pipeline_namespaces_have_an_egress_policy_that_excludes_link_local(built):
    """Every pod in inferops and offline-batch is selected by an egress policy, and no egress rule there
    reaches a link-local address: no rule without peers (that is every address), and each ipBlock that
    overlaps 169.254.0.0/16, fe80::/10 or fd00:ec2::254 excepts all of it."""
    for name, docs in built.items():
        for ns in EGRESS_GUARDED:
            policies = network_policies(docs, ns)
            assert any(p["spec"]["podSelector"] == {} and "Egress" in p["spec"]["policyTypes"] for p in policies), \
                f"{name}: no egress policy selects every pod of {ns}"
            for p in policies:
                for i, rule in enumerate(p["spec"].get("egress") or []):
                    where = f"{name}: {ns}/{p['metadata']['name']} egress[{i}]"
                    assert rule.get("to"), f"{where}: a rule without peers allows the metadata service"
                    for peer in rule["to"]:
                        if "ipBlock" not in peer:
                            continue
                        cidr = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                        excepts = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except") or []]
                        for ll in LINK_LOCAL:
                            if ll.version == cidr.version and ll.overlaps(cidr):
                                assert any(ll.subnet_of(e) for e in excepts if e.version == ll.version), \
                                    f"{where}: {peer['ipBlock']} allows {ll}"
                    for addr in METADATA:
                        assert not any(_peer_matches(peer, ns, {"ip": addr}) for peer in rule["to"]), \
                            f"{where}: reaches {addr}"


# the destinations the flows need (flows/common: Prefect API, Kubernetes API, S3, Prometheus, the
# Pushgateway; drbd_health and host_bootstrap: SSH; model_build: the model registry), as the remote end
KUBE_DNS = {"namespace": "kube-system", "pod": {"k8s-app": "kube-dns"}, "ip": "10.96.0.10"}
NEEDED = {
    "DNS (UDP)": (KUBE_DNS, 53, "UDP"), "DNS (TCP)": (KUBE_DNS, 53, "TCP"),
    "S3": ({"ip": "52.216.8.1"}, 443, "TCP"), "S3 (IPv6)": ({"ip": "2600:1fa0:80c0::1"}, 443, "TCP"),
    "Prefect Cloud / external Prefect API": ({"ip": "203.0.113.7"}, 443, "TCP"),
    "Kubernetes API (EKS endpoint)": ({"ip": "10.0.12.34"}, 443, "TCP"),
    "Kubernetes API (kubeadm)": ({"ip": "10.0.0.5"}, 6443, "TCP"),
    "Prometheus": ({"namespace": "monitoring", "pod": {"app.kubernetes.io/name": "prometheus"}, "ip": "10.244.3.4"},
                   9090, "TCP"),
    "Pushgateway": ({"namespace": "monitoring", "pod": {"app": "prometheus-pushgateway"}, "ip": "10.244.3.5"},
                    9091, "TCP"),
    "SSH to a storage host": ({"ip": "198.51.100.21"}, 22, "TCP"),
}
BLOCKED = {f"{a}:{port}": ({"ip": a}, port, "TCP") for a in METADATA for port in (80, 443)}


@pytest.mark.parametrize("namespace, pod", [
    ("inferops", {"app.kubernetes.io/name": "prefect-worker", "app.kubernetes.io/instance": "k8s"}),
    ("inferops", {"batch.kubernetes.io/job-name": "canary-rollout-x7k2p"}),  # a flow-run Job's pod
    ("offline-batch", {"batch.kubernetes.io/job-name": "idle-eval-20261129", "inferops.io/component": "idle-gpu"}),
])
def test_pipeline_pods_reach_what_they_need_and_never_the_metadata_service(built, namespace, pod):
    for name, docs in built.items():
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        for what, (dest, port, proto) in NEEDED.items():
            assert allowed(policies, "egress", namespace, pod, dest, port, proto), f"{name}: {namespace} → {what}"
        for what, (dest, port, proto) in BLOCKED.items():
            assert not allowed(policies, "egress", namespace, pod, dest, port, proto), f"{name}: {namespace} → {what}"


def test_every_overlays_network_policies_are_accepted_by_the_strict_emulator(built, kube_clean):
    """The API server's NetworkPolicy validation (peers, ports, ipBlock ``except`` a strict subset of its
    ``cidr``, in the emulator since the schema alone does not check it), for every overlay's build."""
    for name, docs in built.items():
        wanted = [d for d in docs if d["kind"] in ("Namespace", "NetworkPolicy")]
        out = subprocess.run(["kubectl", "--kubeconfig", kube_clean.kubeconfig, "apply", "--server-side",
                              "--validate=false", "-f", "-"], input=yaml.safe_dump_all(wanted), capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{name}: {out.stderr}"
        assert "unknown field" not in out.stderr, out.stderr
    net = client.NetworkingV1Api(kube_clean.api_client())
    for ns in EGRESS_GUARDED:
        names = {p.metadata.name for p in net.list_namespaced_network_policy(ns).items}
        assert "egress-no-link-local" in names, ns


def test_the_in_cluster_prefect_api_of_the_base_is_open_to_the_workers_and_flow_runs_only(built):
    """The base's PREFECT_API_URL names the official prefect-server Helm chart installed into inferops
    with its defaults (Service prefect-server, port 4200, pods app.kubernetes.io/name=prefect-server and
    component=server); inferops denies ingress by default, so the policy prefect-server opens that port
    to the workers and the flow-run Jobs' pods, and to nothing else."""
    from urllib.parse import urlsplit

    base = kustomize(K8S / "base")
    cm = next(c for n, c in by_kind(base, "ConfigMap").items() if n.startswith("prefect-worker-config-"))
    url = urlsplit(cm["data"]["PREFECT_API_URL"])
    assert (url.hostname, url.port) == ("prefect-server.inferops.svc", 4200)
    server = {"app.kubernetes.io/name": "prefect-server", "app.kubernetes.io/component": "server",
              "app.kubernetes.io/instance": "prefect-server"}
    worker = by_kind(base, "Deployment")["prefect-worker-k8s"]["spec"]["template"]["metadata"]["labels"]
    flow_run = {"batch.kubernetes.io/job-name": "model-build-x7k2p", "job-name": "model-build-x7k2p"}
    for name, docs in {"base": base, **built}.items():
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

        def reach(ns: str, pod: dict, port: int = 4200, policies: list[dict] = policies) -> bool:
            here = {"namespace": ns, "pod": pod, "ip": "10.244.1.9"}
            there = {"namespace": "inferops", "pod": server, "ip": "10.244.2.7"}
            return (allowed(policies, "egress", ns, pod, there, port)
                    and allowed(policies, "ingress", "inferops", server, here, port))

        assert reach("inferops", worker) and reach("inferops", flow_run), name
        assert not reach("inferops", worker, port=5432), name
        assert not reach("inferops", {"app": "debug"}), name  # neither a worker nor a Job's pod
        assert not reach("offline-batch", {"batch.kubernetes.io/job-name": "idle-eval"}), name  # users' images
        assert not reach("inference", {"app.kubernetes.io/name": "llm-server"}), name
