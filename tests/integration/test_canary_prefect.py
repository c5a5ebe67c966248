"""The canary flow as a recorded Prefect run: approval via the UI form, and rollback by state hooks
when the run crashes (SIGTERM) or is cancelled (through a runner, as a deployment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from prefect.client.schemas.objects import StateType

from flows.canary import planner
from flows.canary.flow import canary_rollout
from flows.canary.models import CanaryPolicy, RolloutState
from flows.common.settings import get_settings
from flows.standins.traffic import start_tracks, wait_scraped
from tests.fixtures.common import REPO
from tests.fixtures.kube import wait_until

NS, DEP, NEW = "inference", "llm", "registry.example/llm:2.0"
STEP = dict(steps=[25, 100], interval_s=2, samples_per_interval=3, scrape_interval_s=1, intervals_per_step=1, readiness_timeout_s=20)
SLOW = dict(steps=[25, 50, 100], interval_s=60, readiness_timeout_s=20)  # sleeps in analysis: killed there


@pytest.fixture
def env(kube_clean, prometheus, prefect_api, monkeypatch, exporter):
    from kubernetes import client

    kube_clean.create_namespace(NS)
    kube_clean.add_node("gpu-a", gpus=16)  # stable (4), its surge, canary and baseline need GPUs
    monkeypatch.setenv("INFEROPS_KUBE__KUBECONFIG", kube_clean.kubeconfig)
    monkeypatch.setenv("INFEROPS_PROMETHEUS__URL", prometheus.url)
    get_settings.cache_clear()
    apps = client.AppsV1Api(kube_clean.api_client())
    apps.create_namespaced_deployment(NS, planner.sample_deployment(NS, DEP, 4))
    traffic = start_tracks(exporter, NS, DEP, canary={})
    wait_scraped(prometheus, traffic)
    yield apps
    for t in traffic:
        t.stop()
    get_settings.cache_clear()


def wait(check, what, timeout=120.0):
    return wait_until(check, timeout, what)


def state_of(apps) -> RolloutState | None:
    ann = apps.read_namespaced_deployment(DEP, NS).metadata.annotations or {}
    raw = ann.get(planner.STATE_ANNOTATION)
    return RolloutState.model_validate_json(raw) if raw else None


def mid_step(apps) -> RolloutState | None:
    """The run holds the lease and the stable Deployment was scaled down for the canary."""
    s = state_of(apps)
    return s if s and apps.read_namespaced_deployment(DEP, NS).spec.replicas < 4 else None


def assert_rolled_back(apps):
    names = sorted(d.metadata.name for d in apps.list_namespaced_deployment(NS).items)
    dep = apps.read_namespaced_deployment(DEP, NS)
    assert names == [DEP] and dep.spec.replicas == 4 and state_of(apps) is None
    assert dep.spec.template.spec.containers[0].image != NEW


def subprocess_env(prefect_api: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO), **extra}


def test_approval_form_promotes(env, prefect_client):
    from prefect.flow_runs import resume_flow_run

    result: dict = {}
    t = threading.Thread(target=lambda: result.update(out=canary_rollout(
        namespace=NS, deployment=DEP, image=NEW, policy=CanaryPolicy(**STEP), require_approval=True)))
    t.start()
    run_id = wait(lambda: (s := state_of(env)) and s.holder, "the lease")
    wait(lambda: prefect_client.read_flow_run(run_id).state.type == StateType.PAUSED, "the approval pause")
    assert env.read_namespaced_deployment(f"{DEP}-canary", NS)  # still running the canary while paused
    resume_flow_run(run_id, run_input={"approve": True, "comment": "looks good"})
    t.join(timeout=120)
    assert result["out"]["outcome"] == "promoted"
    assert env.read_namespaced_deployment(DEP, NS).spec.template.spec.containers[0].image == NEW
    assert prefect_client.read_flow_run(run_id).state.type == StateType.COMPLETED
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    arts = {a.key: a for a in prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    assert {f"canary-{DEP}-approval", f"canary-{DEP}-intervals", f"canary-{DEP}-summary"} <= set(arts)
    assert arts[f"canary-{DEP}-summary"].type == "markdown" and "promoted" in arts[f"canary-{DEP}-summary"].data
    assert "error_rate_canary" in arts[f"canary-{DEP}-intervals"].data


@pytest.mark.slow
def test_crash_mid_step_rolls_back(env, prefect_api, prefect_client):
    code = ("from flows.canary.flow import canary_rollout; from flows.canary.models import CanaryPolicy; "
            f"canary_rollout(namespace={NS!r}, deployment={DEP!r}, image={NEW!r}, policy=CanaryPolicy(**{SLOW!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(prefect_api),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        held = wait(lambda: mid_step(env), "the canary step", timeout=180)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert prefect_client.read_flow_run(held.holder).state.type == StateType.CRASHED
    assert_rolled_back(env)


@pytest.mark.slow
def test_cancellation_rolls_back(env, prefect_api, prefect_client, tmp_path):
    from prefect.states import Cancelling

    code = "from flows.canary.flow import canary_rollout; canary_rollout.serve(name='canary-cancel-test')"
    log = open(tmp_path / "runner.log", "w")
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True,
                              env=subprocess_env(prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="1"))
    try:
        dep = wait(lambda: _deployment(prefect_client), "the served deployment", timeout=300)
        run = prefect_client.create_flow_run_from_deployment(dep.id, parameters={
            "namespace": NS, "deployment": DEP, "image": NEW, "policy": SLOW})
        wait(lambda: mid_step(env), "the canary step", timeout=300)
        prefect_client.set_flow_run_state(run.id, Cancelling(), force=True)
        wait(lambda: prefect_client.read_flow_run(run.id).state.type == StateType.CANCELLED, "cancelled")
        wait(lambda: state_of(env) is None, "the rollback")
    except AssertionError:
        print((tmp_path / "runner.log").read_text()[-6000:])
        raise
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        runner.wait(timeout=60)
        log.close()
    assert_rolled_back(env)


def _deployment(client):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name("canary-rollout/canary-cancel-test")
    except ObjectNotFound:
        return None
