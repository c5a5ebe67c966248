"""`make deploy` (deploy/prefect/deploy.sh) against a fresh Prefect server: three pools, seven
deployments with their schedules, limits and typed parameter schemas. Then a deployment is run from
"CI" through deploy/ci/run-deployment.sh and executed by a real process worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.common.localstack import stop_group

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXPECTED = {"model-build", "canary-rollout", "idle-gpu-nightly", "log-backup-hourly", "drbd-health",
            "cost-report-daily", "gpu-host-bootstrap"}


def _env(api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PREFECT": str(BIN / "prefect"), "INFEROPS_HOME": str(REPO),
            "PATH": f"{BIN}:{os.environ['PATH']}"}


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
            assert s["slug"] and s["active"] is True
    assert deps["model-build"]["work_pool"]["name"] == "a100" and not deps["model-build"]["schedules"]
    assert deps["canary-rollout"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    nightly = deps["idle-gpu-nightly"]["schedules"][0]
    assert nightly["cron"] == "0 1 * * *" and nightly["timezone"]
    assert deps["log-backup-hourly"]["schedules"][0]["interval"] == 3600
    assert deps["drbd-health"]["schedules"][0]["interval"] == 300
    assert "cron" in deps["cost-report-daily"]["schedules"][0]
    assert not deps["gpu-host-bootstrap"]["schedules"]


@pytest.mark.slow
def test_deploy_registers_pools_and_deployments(deployed, prefect_client):
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
        assert d.parameter_openapi_schema and d.parameter_openapi_schema.get("properties"), name
    cron = deps["idle-gpu-nightly"].schedules[0].schedule
    assert cron.cron == "0 1 * * *" and cron.timezone
    assert deps["log-backup-hourly"].schedules[0].schedule.interval.total_seconds() == 3600
    canary = deps["canary-rollout"]
    assert canary.global_concurrency_limit.limit == 1
    assert canary.concurrency_options.collision_strategy == "CANCEL_NEW"


@pytest.mark.slow
def test_run_deployment_script_passes_exit_code(deployed):
    """Unknown deployment → exit 2 with one line; a bad parameter → non-zero (schema enforced)."""
    env = _env(deployed)
    p = subprocess.run([str(REPO / "deploy/ci/run-deployment.sh"), "no-such-deployment"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no deployment named" in p.stderr
    p = subprocess.run([str(REPO / "deploy/ci/run-deployment.sh"), "drbd-health", "--param", "no_such_param=1",
                        "--timeout", "30"], env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode != 0


@pytest.fixture
def ops_worker(deployed, tmp_path):
    """A real process worker polling the `ops` pool, as `make up` runs it."""
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "ops", "--type", "process",
                             "--name", "test-ops"], cwd=REPO, env=_env(deployed), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    yield tmp_path / "worker.log"
    stop_group(proc, timeout=30)
    log.close()


@pytest.mark.slow
def test_ci_runs_a_deployment_end_to_end(deployed, ops_worker):
    """CI: run-deployment.sh → server → worker executes the flow → exit code reflects the final state."""
    env = _env(deployed)
    healthy = REPO / "tests/data/drbd/json_healthy_3node.json"
    p = subprocess.run([str(REPO / "deploy/ci/run-deployment.sh"), "drbd-health",
                        "--param", f'inputs=["{healthy}"]', "--timeout", "600"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:] + ops_worker.read_text()[-3000:]
    assert "Completed" in p.stdout
    # the flow itself rejects the input (BadInput) → the run ends Failed → non-zero for CI
    p = subprocess.run([str(REPO / "deploy/ci/run-deployment.sh"), "drbd-health",
                        "--param", f'inputs=["{healthy}"]', "--param", "timeout_s=0", "--timeout", "600"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode != 0 and "Completed" not in p.stdout.splitlines()[-1]
