"""The canary flow against the Kubernetes API emulator and a real Prometheus scraping simulated traffic."""

from __future__ import annotations

import json
import threading
import time

import kubernetes_validate
import pytest
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from flows.canary import planner
from flows.canary.controller import RolloutBusy
from flows.canary.flow import canary_rollout
from flows.canary.models import CanaryPolicy, RolloutState
from flows.common.errors import GateFailed, InferopsError
from flows.common.runtime import run_flow
from flows.common.settings import get_settings
from flows.standins.traffic import FAULTS, start_tracks, wait_scraped

NS, DEP = "inference", "llm"
NEW = "registry.example/llm:2.0"
MANIFEST = "s3://models/llm/int8/manifest.json"
FAST = dict(steps=[25, 50, 100], interval_s=3, samples_per_interval=3, scrape_interval_s=1, intervals_per_step=2, failure_limit=2,
            inconclusive_limit=2, readiness_timeout_s=20)


class Env:
    def __init__(self, kube, api):
        self.kube, self.api = kube, api
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def dep(self, name=DEP):
        return self.api.sanitize_for_serialization(self.apps.read_namespaced_deployment(name, NS))

    def names(self):
        return sorted(d.metadata.name for d in self.apps.list_namespaced_deployment(NS).items)

    def state(self):
        raw = (self.dep()["metadata"].get("annotations") or {}).get(planner.STATE_ANNOTATION)
        return RolloutState.model_validate_json(raw) if raw else None

    def image(self):
        return self.dep()["spec"]["template"]["spec"]["containers"][0]["image"]


class Recorder:
    """Watches Deployments and Services over the API and keeps every canary/baseline object seen."""

    def __init__(self, env: Env):
        self.env, self.seen, self._w = env, [], []
        self._threads = [threading.Thread(target=self._run, args=(f,), daemon=True) for f in
                         (env.apps.list_namespaced_deployment, env.core.list_namespaced_service)]
        for t in self._threads:
            t.start()

    def _run(self, list_fn):
        w = watch.Watch()
        self._w.append(w)
        try:
            for ev in w.stream(list_fn, NS, label_selector=planner.ROLLOUT_OF_LABEL, timeout_seconds=120):
                if ev["type"] in ("ADDED", "MODIFIED"):
                    self.seen.append(self.env.api.sanitize_for_serialization(ev["object"]))
        except ProtocolError:  # the emulator was reset under an idle watch after stop()
            pass

    def stop(self):
        for w in self._w:
            w.stop()

    def validate_all(self):
        assert self.seen, "no canary objects were created"
        for obj in self.seen:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)
        return {(o["kind"], o["metadata"]["name"]) for o in self.seen}


@pytest.fixture
def env(kube_clean, prometheus, monkeypatch):
    kube_clean.create_namespace(NS)
    kube_clean.add_node("gpu-a", gpus=16)  # stable (4), its surge, canary and baseline need GPUs
    kube_clean.install_crds("httproutes.gateway.networking.k8s.io")
    monkeypatch.setenv("INFEROPS_KUBE__KUBECONFIG", kube_clean.kubeconfig)
    monkeypatch.setenv("INFEROPS_PROMETHEUS__URL", prometheus.url)
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    get_settings.cache_clear()
    e = Env(kube_clean, kube_clean.api_client())
    e.apps.create_namespaced_deployment(NS, planner.sample_deployment(NS, DEP, 4))
    _wait(lambda: e.dep().get("status", {}).get("availableReplicas") == 4, "stable ready")
    yield e
    get_settings.cache_clear()


def _wait(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def traffic(exporter, prometheus):
    started = []

    def start(canary, baseline=None):
        started.extend(start_tracks(exporter, NS, DEP, canary=canary, baseline=baseline))
        wait_scraped(prometheus, started)

    yield start
    for t in started:
        t.stop()


def rollout(**policy):
    return run_flow(canary_rollout, namespace=NS, deployment=DEP, image=NEW, model_manifest_uri=MANIFEST,
                    policy=CanaryPolicy(**(FAST | policy)))


def assert_rolled_back(env: Env):
    assert env.names() == [DEP]
    assert env.image() == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert env.dep()["spec"]["replicas"] == 4
    assert env.state() is None


@pytest.mark.slow
def test_healthy_canary_is_promoted(env, traffic):
    traffic(canary={})
    rec = Recorder(env)
    result = rollout()
    rec.stop()
    assert result["outcome"] == "promoted"
    assert [r["step_%"] for r in result["intervals"]].count(25) >= 2
    assert all(r["verdict"] == "pass" for r in result["intervals"])
    dep = env.dep()
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == NEW and {"name": planner.MANIFEST_ENV, "value": MANIFEST} in c["env"]
    assert dep["spec"]["replicas"] == 4 and env.names() == [DEP] and env.state() is None
    kinds = rec.validate_all()
    assert {("Deployment", f"{DEP}-canary"), ("Deployment", f"{DEP}-baseline")} <= kinds


@pytest.mark.slow
@pytest.mark.parametrize("fault,preset,reason", [("5xx", "triton", "threshold"),
                                                 ("slow-p99", "http", "higher than baseline")])
def test_faulty_canary_is_rolled_back(env, traffic, fault, preset, reason):
    traffic(canary=FAULTS[fault])
    with pytest.raises(GateFailed, match="rolled back") as err:
        rollout(metrics_preset=preset)
    assert reason in str(err.value) and "step 25% fail" in str(err.value)
    assert_rolled_back(env)


@pytest.mark.slow
def test_silent_canary_is_inconclusive_never_a_pass(env, traffic):
    traffic(canary=None)
    with pytest.raises(GateFailed, match="inconclusive.*no data"):
        rollout()
    assert_rolled_back(env)


def test_prometheus_unreachable_is_inconclusive(env, monkeypatch):
    monkeypatch.setenv("INFEROPS_PROMETHEUS__URL", "http://127.0.0.1:9")  # discard port: refused
    get_settings.cache_clear()
    with pytest.raises(GateFailed, match="inconclusive.*unreachable"):
        rollout(interval_s=1)
    assert_rolled_back(env)


def test_gateway_api_weights_and_rollback(env, traffic):
    env.core.create_namespaced_service(NS, {"metadata": {"name": DEP}, "spec": {
        "selector": {"app.kubernetes.io/name": DEP}, "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}})
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": DEP},
             "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": DEP, "port": 8000}]}]}}
    env.custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", route)
    traffic(canary=FAULTS["5xx"])
    weights = []

    def watch_route():  # what the route looked like while the canary ran
        while not done.is_set():
            r = env.custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS, "httproutes", DEP)
            weights.append({b["name"]: b.get("weight") for b in r["spec"]["rules"][0]["backendRefs"]})
            time.sleep(0.2)

    done = threading.Event()
    t = threading.Thread(target=watch_route, daemon=True)
    t.start()
    rec = Recorder(env)
    try:
        with pytest.raises(GateFailed):
            rollout(traffic_mode="gateway-api")
    finally:
        done.set()
        t.join()
        rec.stop()
    assert {DEP: 50, f"{DEP}-baseline": 25, f"{DEP}-canary": 25} in weights
    assert weights[-1] == {DEP: 1}
    assert sorted(s.metadata.name for s in env.core.list_namespaced_service(NS).items) == [DEP]
    assert ("Service", f"{DEP}-canary") in rec.validate_all()
    canary = next(o for o in rec.seen if o["metadata"]["name"] == f"{DEP}-canary" and o["kind"] == "Deployment")
    assert "app.kubernetes.io/name" not in canary["spec"]["template"]["metadata"]["labels"]
    assert_rolled_back(env)


def test_progress_deadline_rolls_back(env, traffic):
    traffic(canary={})
    env.kube.deployments.stall(NS, f"{DEP}-canary")
    with pytest.raises(InferopsError, match="ProgressDeadlineExceeded|not ready"):
        rollout(readiness_timeout_s=5)
    assert_rolled_back(env)


def test_lease_held_by_another_run_is_respected(env):
    other = RolloutState(holder="someone-else", expires=time.time() + 600, image="x:1", stable_replicas=4)
    dep = env.dep()
    dep["metadata"].setdefault("annotations", {})[planner.STATE_ANNOTATION] = other.model_dump_json()
    env.apps.replace_namespaced_deployment(DEP, NS, dep)
    with pytest.raises(RolloutBusy, match="in flight"):
        rollout()
    assert env.state().holder == "someone-else" and env.names() == [DEP]


def test_resume_continues_an_abandoned_rollout(env, traffic):
    """A run that died at step 50% (lease expired) is continued by the next run, then promoted."""
    traffic(canary={})
    stale = RolloutState(holder="dead-run", expires=time.time() - 1, image=NEW, model_manifest_uri=MANIFEST,
                         stable_replicas=4, step=1)
    dep = env.dep()
    dep["metadata"].setdefault("annotations", {})[planner.STATE_ANNOTATION] = stale.model_dump_json()
    dep["spec"]["replicas"] = 1  # scaled down by the dead run
    env.apps.replace_namespaced_deployment(DEP, NS, dep)
    result = rollout()
    assert result["outcome"] == "promoted"
    assert {r["step_%"] for r in result["intervals"]} == {50}  # 25 % was not repeated
    assert env.image() == NEW and env.dep()["spec"]["replicas"] == 4 and env.state() is None


def test_abort_and_status_cli(env, run_cli):
    """`inferops canary abort` cleans up a rollout left behind; running it again is a no-op."""
    stale = RolloutState(holder="dead-run", expires=time.time() + 600, image=NEW, stable_replicas=4)
    dep = env.dep()
    dep["metadata"].setdefault("annotations", {})[planner.STATE_ANNOTATION] = stale.model_dump_json()
    dep["spec"]["replicas"] = 2
    env.apps.replace_namespaced_deployment(DEP, NS, dep)
    stable = env.dep()
    policy = CanaryPolicy()
    for track in planner.TRACKS:
        env.apps.create_namespaced_deployment(NS, planner.track_deployment(
            stable, stable["spec"]["template"], track, 1, policy, "dead-run"))
    cli_env = {"INFEROPS_KUBE__KUBECONFIG": env.kube.kubeconfig}
    st = run_cli("canary", "status", "-n", NS, "-d", DEP, "--json", env=cli_env)
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["rollout"]["holder"] == "dead-run" and status[f"{DEP}-canary"]["replicas"] == 1
    r = run_cli("canary", "abort", "-n", NS, "-d", DEP, "--json", env=cli_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["had_rollout"] and f"deployment/{DEP}-canary" in out["actions"]
    assert_rolled_back(env)
    again = run_cli("canary", "abort", "-n", NS, "-d", DEP, "--json", env=cli_env)
    assert again.returncode == 0 and json.loads(again.stdout)["actions"] == []


def test_conflict_rereads_and_retries(env):
    """A write that lands between our read and our replace gives a real 409; we re-read and retry."""
    from flows.common.kube import DEPLOYMENTS, Kube

    kube = Kube(env.api)
    calls = []

    def change(dep):
        calls.append(dep["metadata"]["resourceVersion"])
        if len(calls) == 1:  # someone else writes meanwhile: our copy is now stale
            other = env.dep()
            other["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
            env.apps.replace_namespaced_deployment(DEP, NS, other)
        dep["spec"]["replicas"] = 3
        return dep

    kube.modify(DEPLOYMENTS, NS, DEP, change)
    assert len(calls) == 2 and calls[0] != calls[1]
    dep = env.dep()
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["labels"]["touched-by"] == "someone-else"
