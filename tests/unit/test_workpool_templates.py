"""The k8s and a100 work-pool templates render to Jobs that validate against Kubernetes 1.33 (strict)."""

import json
from pathlib import Path

import kubernetes_validate
import pytest
from prefect.utilities.templating import apply_values

HERE = Path(__file__).resolve().parents[2] / "deploy" / "prefect"


def render(name: str, **overrides) -> dict:
    t = json.loads((HERE / f"{name}.json").read_text())
    values = {k: v.get("default") for k, v in t["variables"]["properties"].items()}
    values.update({"name": "flow-run-x", "command": "prefect flow-run execute", "labels": {"app": "inferops"},
                   "annotations": {}, **overrides})
    cfg = apply_values(t["job_configuration"], values)
    # what the Kubernetes worker does before submitting: env dict -> list, command string -> argv
    c = cfg["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    c["env"] = [{"name": k, "value": v} for k, v in (c.get("env") or {}).items()]
    c["args"] = c["args"].split()
    return cfg


@pytest.mark.parametrize("pool", ["k8s", "a100"])
def test_job_manifest_is_valid_and_hardened(pool):
    job = render(pool)["job_manifest"]
    kubernetes_validate.validate(job, "1.33", strict=True)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"]
    assert not c["image"].endswith(":latest") and ":" in c["image"]
    assert pod["serviceAccountName"] == "inferops-flows"


@pytest.mark.parametrize("pool", ["k8s", "a100"])
def test_finished_flow_run_jobs_are_cleaned_up(pool):
    """The worker never deletes a finished Job: without a TTL, every flow run's Job and pod stay in
    inferops for ever."""
    job = render(pool)["job_manifest"]
    assert isinstance(job["spec"]["ttlSecondsAfterFinished"], int) and job["spec"]["ttlSecondsAfterFinished"] > 0


def test_a100_pool_targets_gpus():
    pod = render("a100", gpu_count=2)["job_manifest"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_templates_are_current_renderings():
    """k8s.json/a100.json are generated; a stale hand edit would drift from the default template."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_templates", HERE / "render_templates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    default = json.loads((HERE / "kubernetes-default.json").read_text())
    assert json.loads((HERE / "k8s.json").read_text()) == mod.k8s_template(default)
    assert json.loads((HERE / "a100.json").read_text()) == mod.a100_template(default)
