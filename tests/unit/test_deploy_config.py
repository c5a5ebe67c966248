"""prefect.yaml and the local overlay as users get them: nothing real by default, complete forms, local inputs."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
DOCUMENTATION_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]


def deploy_module():
    spec = importlib.util.spec_from_file_location("inferops_deploy", REPO / "deploy/prefect/deploy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_production_defaults_name_no_real_bucket_host_or_system_path():
    text = (REPO / "prefect.yaml").read_text()
    assert set(re.findall(r"s3://([A-Za-z0-9._-]+)", text)) == {"CHANGE-ME"}
    for d in SPEC["deployments"]:
        for value in _walk(d.get("parameters") or {}):
            assert not (isinstance(value, str) and value.startswith(("/var/lib", "/etc"))), (d["name"], value)
    active = {d["name"] for d in SPEC["deployments"] for s in d.get("schedules") or [] if s["active"]}
    assert active == {"drbd-health"}  # reads its inventory from the worker; the rest need CHANGE-ME values first
    assert "inventory" not in DEPLOYMENTS["drbd-health"]["parameters"]
    assert "textfile" not in DEPLOYMENTS["drbd-health"]["parameters"]
    assert DEPLOYMENTS["model-build"]["parameters"]["spec"]["publish"] is False  # a smoke build starts no canary


def test_sample_inventories_use_documentation_addresses_only():
    for env in ("production", "staging"):
        for path in (REPO / "inventories" / env).rglob("*.yml"):
            for value in _walk(yaml.safe_load(path.read_text()) or {}):
                try:
                    ip = ipaddress.ip_address(str(value))
                except ValueError:
                    continue
                assert any(ip in n for n in DOCUMENTATION_NETS), f"{path}: {value} is not an RFC 5737 address"


def test_canary_trigger_uses_the_builds_serving_deployment():
    [trigger] = DEPLOYMENTS["canary-rollout"]["triggers"]
    assert trigger["match"] == {"prefect.resource.id": "inferops.model.*", "inferops.serving.deployment": "*"}
    assert trigger["parameters"]["deployment"] == "{{ event.payload.serving.deployment }}"
    assert trigger["parameters"]["namespace"] == "{{ event.payload.serving.namespace }}"
    assert trigger["parameters"]["image"] == "{{ event.payload.serving.image }}"
    assert trigger["parameters"]["require_approval"] is True


def test_local_overlay_points_every_deployment_at_local_inputs(tmp_path):
    deploy = deploy_module()
    overlay = yaml.safe_load((REPO / "deploy/prefect/local.yaml").read_text())
    now = datetime(2026, 11, 29, 7, 21, 13, tzinfo=UTC)
    local = deploy.render_local(SPEC, overlay, tmp_path / "stack", now=now)
    assert set(overlay["work_pools"]) == {"ops", "k8s", "a100"} and set(overlay["work_pools"].values()) == {"process"}
    text = json.dumps(local)
    assert "${STACK}" not in text and "CHANGE-ME" not in text
    assert set(re.findall(r"s3://([A-Za-z0-9._-]+)", text)) == {"inferops-local-backup"}  # moto, seeded by the stack
    for d in local["deployments"]:
        assert d["name"] in overlay["deployments"], d["name"]
        assert all(s["active"] for s in d.get("schedules") or [])
        for value in _walk(d["parameters"]):
            if isinstance(value, str) and value.startswith(("flows/", "model_build/")):
                assert (REPO / value).exists(), value  # relative to the checkout, the workers' cwd
    by = {d["name"]: d for d in local["deployments"]}
    assert by["model-build"]["parameters"]["spec"]["serving"]["deployment"] == "digits-cnn"
    assert by["canary-rollout"]["triggers"][0]["parameters"]["require_approval"] is False
    assert by["canary-rollout"]["triggers"][0]["parameters"]["deployment"] == "{{ event.payload.serving.deployment }}"
    assert by["drbd-health"]["parameters"]["textfile"].startswith(str(tmp_path / "stack"))
    # every 5 minutes, the first a minute after `make up` deploys (prefect.yaml keeps them on the clock)
    (schedule,) = by["drbd-health"]["schedules"]
    assert schedule["interval"] == 300 and schedule["anchor_date"] == "2026-11-29T07:17:13+00:00"
    assert SPEC["deployments"][[d["name"] for d in SPEC["deployments"]].index("drbd-health")][
        "schedules"][0]["anchor_date"] == "2026-01-01T00:00:00Z"


def _descriptions(schema):
    if isinstance(schema, dict):
        if isinstance(schema.get("description"), str):
            yield schema["description"]
        for v in schema.values():
            yield from _descriptions(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _descriptions(v)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_top_level_parameter_has_a_description_and_a_typed_default(name):
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    d = DEPLOYMENTS[name]
    schema = parameter_schema(load_flow_from_entrypoint(str(REPO / d["entrypoint"]))).model_dump()
    params = d.get("parameters") or {}
    assert set(params) <= set(schema["properties"]), f"prefect.yaml sets unknown parameters of {name}"
    for text in _descriptions(schema):
        assert "<" not in text and ">" not in text, f"{name}: the UI renders {text!r} as HTML"
    for key, prop in schema["properties"].items():
        assert any(k in prop for k in ("type", "anyOf", "allOf", "$ref")), f"{name}.{key} has no type"
        assert "default" in prop or key in params, f"{name}.{key} has no default"
        assert prop.get("description"), f"{name}.{key} has no description"


def test_ci_example_passes_a_valid_build_spec_naming_its_serving_deployment(tmp_path):
    """The model-build step run by bash as Actions would, with hostile inputs and run-deployment.sh
    stubbed: the inputs arrive verbatim in a valid spec and run nothing (GitHub's hardening guide:
    no ${{ }} expression in a `run:` script, inputs through the environment)."""
    import subprocess

    from model_build.build import BuildSpec

    wf = yaml.safe_load((REPO / "deploy/ci/github-workflow.example.yml").read_text())
    assert wf["permissions"] == {"contents": "read"}
    for job in wf["jobs"].values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step["run"]
    [step] = [s for s in wf["jobs"]["build-and-canary"]["steps"] if "run-deployment.sh model-build" in s.get("run", "")]
    hostile = {"model_src": "s3://b/m.onnx'; touch pwned; echo '", "calib": 's3://b/c.npz", "x": "$(touch pwned)',
               "eval": "s3://b/e.npz`touch pwned`"}
    env = {"PATH": "/usr/bin:/bin"}
    for name, value in step["env"].items():
        env[name] = hostile[re.fullmatch(r"\$\{\{ inputs\.(\w+) \}\}", value).group(1)]
    stub = tmp_path / "deploy/ci/run-deployment.sh"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args\n')
    stub.chmod(0o755)
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", step["run"]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "pwned").exists()
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:4] == ["model-build", "--timeout", "7200", "--param"] and args[4].startswith("spec=")
    raw = json.loads(args[4].removeprefix("spec="))
    assert (raw["source"], raw["calib"], raw["eval"]) == (hostile["model_src"], hostile["calib"], hostile["eval"])
    spec = BuildSpec.model_validate({**raw, "source": "s3://b/m.onnx", "calib": "s3://b/c.npz", "eval": "s3://b/e.npz"})
    assert spec.serving.deployment == DEPLOYMENTS["canary-rollout"]["parameters"]["deployment"]
