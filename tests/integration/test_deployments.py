"""`make deploy` (deploy/prefect/deploy.sh) against a fresh Prefect server: three pools, seven deployments
with their schedules, limits and closed parameter schemas, and the automations with their notification
blocks. Then deployments are run from "CI" through deploy/ci/run-deployment.sh, executed by a real
process worker, and the automations notify a webhook that a user filled into their blocks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.common.localstack import stop_group
from tests.integration.webhook import Webhook

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPECTED = {"model-build", "canary-rollout", "idle-gpu-nightly", "log-backup-hourly", "drbd-health",
            "cost-report-daily", "gpu-host-bootstrap"}
AUTOMATIONS = {"canary-rolled-back", "backup-failed", "backup-late", "drbd-resource-critical", "idle-gpu-past-window"}
RUN = str(REPO / "deploy/ci/run-deployment.sh")
DRBD = REPO / "tests/data/drbd"


def _env(api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INFEROPS_INVENTORY"}
    return {**env, "PREFECT_API_URL": api, "PREFECT": str(BIN / "prefect"), "INFEROPS_HOME": str(REPO),
            "PATH": f"{BIN}:{os.environ['PATH']}"}


def deploy_module():
    spec = importlib.util.spec_from_file_location("inferops_deploy", REPO / "deploy/prefect/deploy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def deployed(prefect_api):
    p = subprocess.run([str(REPO / "deploy/prefect/deploy.sh")], cwd=REPO, env=_env(prefect_api),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return prefect_api


def test_prefect_yaml_shape():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == EXPECTED
    for d in deps.values():
        assert d["work_pool"]["name"] in {"ops", "k8s", "a100"}
        assert d["enforce_parameter_schema"] is True
        for s in d.get("schedules") or []:
            assert s["slug"] and s["active"] is (d["name"] == "drbd-health")  # the others need CHANGE-ME values
    assert deps["model-build"]["work_pool"]["name"] == "a100" and not deps["model-build"]["schedules"]
    assert deps["canary-rollout"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    nightly = deps["idle-gpu-nightly"]["schedules"][0]
    assert nightly["cron"] == "55 0 * * *" and nightly["timezone"]
    assert deps["log-backup-hourly"]["schedules"][0]["interval"] == 3600
    assert deps["drbd-health"]["schedules"][0]["interval"] == 300
    assert "cron" in deps["cost-report-daily"]["schedules"][0]
    assert not deps["gpu-host-bootstrap"]["schedules"]


@pytest.mark.slow
def test_deploy_registers_pools_deployments_and_automations(deployed, prefect_client):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    pools = {p.name: p for p in prefect_client.read_work_pools()}
    assert pools["ops"].type == "process"
    assert pools["k8s"].type == pools["a100"].type == "kubernetes"
    a100_pod = pools["a100"].base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert a100_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    deps = {d.name: d for d in prefect_client.read_deployments()}
    assert EXPECTED <= set(deps)
    for name in EXPECTED:
        d = deps[name]
        assert d.enforce_parameter_schema
        assert d.parameter_openapi_schema.get("properties"), name
        assert d.parameter_openapi_schema.get("additionalProperties") is False, name
    cron = deps["idle-gpu-nightly"].schedules[0].schedule
    assert cron.cron == "55 0 * * *" and cron.timezone
    assert deps["log-backup-hourly"].schedules[0].schedule.interval.total_seconds() == 3600
    assert [s.active for s in deps["drbd-health"].schedules] == [True]
    assert [s.active for s in deps["log-backup-hourly"].schedules] == [False]
    canary = deps["canary-rollout"]
    assert canary.global_concurrency_limit.limit == 1
    assert canary.concurrency_options.collision_strategy == "CANCEL_NEW"

    autos = {a.name: a for a in prefect_client.read_automations()}
    assert AUTOMATIONS <= set(autos)
    for name in AUTOMATIONS:
        block = CustomWebhookNotificationBlock.load(f"inferops-{name}")
        assert block.url.startswith("http://127.0.0.1:9/")  # a placeholder that reaches nothing
        [action] = autos[name].actions
        assert action.type == "send-notification" and action.block_document_id == block._block_document_id


@pytest.mark.slow
def test_run_deployment_script_usage_rejection_timeout_and_cancel(deployed, prefect_client):
    """Unknown deployment or parameter → 2 and one line, no run; --timeout → the run is cancelled, 124;
    a run cancelled from elsewhere → 1. No worker polls the `k8s` pool here: cost-report-daily waits."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.states import Cancelled

    env = _env(deployed)
    p = subprocess.run([RUN, "no-such-deployment"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"run-deployment: no deployment named 'no-such-deployment' on {deployed}"]

    def runs_of(name):
        return prefect_client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))

    before = len(runs_of("drbd-health"))
    p = subprocess.run([RUN, "drbd-health", "--param", "no_such_param=1"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    [line] = p.stderr.strip().splitlines()
    assert "parameters rejected" in line and "no_such_param" in line
    assert len(runs_of("drbd-health")) == before  # rejected when the run is created: nothing to crash later

    p = subprocess.run([RUN, "cost-report-daily", "--timeout", "3"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 124, p.stdout + p.stderr
    [line] = p.stderr.strip().splitlines()
    assert "did not finish within 3 s; cancelled" in line and "Traceback" not in p.stdout + p.stderr
    [run] = [r for r in runs_of("cost-report-daily") if r.name in line]
    assert prefect_client.read_flow_run(run.id).state.type.value == "CANCELLED"  # never runs later

    proc = subprocess.Popen([RUN, "cost-report-daily"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (waiting := [r for r in runs_of("cost-report-daily") if not r.state.is_final()]):
        assert time.monotonic() < deadline, "the run was not created"
        time.sleep(0.5)
    prefect_client.set_flow_run_state(waiting[0].id, Cancelled(message="cancelled by an operator"), force=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "ended Cancelled: cancelled by an operator" in err, out + err


@pytest.fixture
def ops_worker(deployed, tmp_path):
    """A real process worker polling the `ops` pool, as `make up` runs it."""
    log = open(tmp_path / "worker.log", "wb")
    env = {**_env(deployed), "PREFECT_WORKER_QUERY_SECONDS": "2", "INFEROPS_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "ops", "--type", "process",
                             "--name", "test-ops"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    yield tmp_path / "worker.log"
    stop_group(proc, timeout=30)
    log.close()


@pytest.mark.slow
def test_ci_sees_the_drbd_checks_truth(deployed, ops_worker):
    """CI: run-deployment.sh → server → worker runs drbd-health → the exit code is the run's truth:
    WARNING is Completed named Warning (0), CRITICAL is Failed (1), no inventory anywhere is Failed (1)
    naming the setting. The three runs go at once; the worker runs them side by side."""
    env = _env(deployed)
    cases = {
        "warning": ["--param", f'inputs=["{DRBD / "json_resync.json"}"]'],
        "critical": ["--param", f'inputs=["{DRBD / "json_split_brain.json"}"]'],
        "unconfigured": [],  # no inputs: SSH to INFEROPS_INVENTORY, which nothing sets
    }
    procs = {k: subprocess.Popen([RUN, "drbd-health", *args, "--timeout", "600"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, args in cases.items()}
    out = {k: (p.communicate(timeout=900), p.returncode) for k, p in procs.items()}
    log = ops_worker.read_text()[-3000:]
    (stdout, _), code = out["warning"]
    assert code == 0 and "ended Warning: DRBD WARNING - " in stdout, (out["warning"], log)
    (_, stderr), code = out["critical"]
    assert code == 1 and "ended Failed: DRBD CRITICAL - " in stderr, (out["critical"], log)
    (_, stderr), code = out["unconfigured"]
    assert code == 1 and "no inventory configured" in stderr and "INFEROPS_INVENTORY" in stderr, (out["unconfigured"], log)


@pytest.mark.slow
def test_automations_notify_the_blocks_users_fill_in(deployed, prefect_client):
    """Fill in each automation's block with a webhook (as a user does in the UI), then make each one fire
    on the test server. The two proactive ones (backup late after 2 h, idle-GPU run past 6 h 15 min) run
    as copies with `within` at the 10 s minimum, on the same blocks."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events import emit_event
    from prefect.events.schemas.automations import AutomationCore
    from prefect.states import Failed, Running

    hook = Webhook()
    made = []
    try:
        for name in AUTOMATIONS:
            block = CustomWebhookNotificationBlock.load(f"inferops-{name}")
            block.url = hook.url
            block.save(f"inferops-{name}", overwrite=True)
        deploy_module().create_automations(prefect_client)  # re-deploying keeps what the user filled in
        assert CustomWebhookNotificationBlock.load("inferops-backup-failed").url == hook.url
        for path in ("backup-late.yaml", "idle-gpu-past-window.yaml"):
            [raw] = yaml.safe_load((REPO / "deploy/prefect/automations" / path).read_text())["automations"]
            copy = {**raw, "name": f"{raw['name']}-10s", "trigger": {**raw["trigger"], "within": 10}}
            copy["actions"] = [{**raw["actions"][0], "block_document_id": str(
                CustomWebhookNotificationBlock.load(f"inferops-{raw['name']}")._block_document_id)}]
            made.append(prefect_client.create_automation(AutomationCore.model_validate(copy)))
        time.sleep(3)  # the triggers service loads new automations periodically

        emit_event(event="inferops.canary.rolled_back", resource={"prefect.resource.id": "inferops.canary.inference.llm"},
                   payload={"namespace": "inference", "deployment": "llm", "reason": "step 5% fail: error_rate",
                            "image": "registry.local/llm:2", "model_manifest_uri": ""})
        msg = hook.wait_for(lambda m: m["subject"].startswith("Canary rolled back"))
        assert msg["subject"] == "Canary rolled back: inference/llm" and "step 5% fail" in msg["body"]

        deps = {d.name: d for d in prefect_client.read_deployments()}
        backup = prefect_client.create_flow_run_from_deployment(deps["log-backup-hourly"].id)
        prefect_client.set_flow_run_state(backup.id, Running(), force=True)
        prefect_client.set_flow_run_state(backup.id, Failed(message="s3://CHANGE-ME: bad bucket name"), force=True)
        msg = hook.wait_for(lambda m: m["subject"].startswith("Log backup Failed"))
        assert backup.name in msg["subject"] and "bad bucket name" in msg["body"]

        msg = hook.wait_for(lambda m: m["subject"].startswith("Log backup late"), timeout=120)
        assert "2 hours" in msg["body"]

        nightly = prefect_client.create_flow_run_from_deployment(deps["idle-gpu-nightly"].id)
        prefect_client.set_flow_run_state(nightly.id, Running(), force=True)
        msg = hook.wait_for(lambda m: m["subject"].startswith("Idle-GPU run past its window"), timeout=120)
        assert nightly.name in msg["subject"]
    finally:
        for automation_id in made:
            prefect_client.delete_automation(automation_id)
        hook.close()
