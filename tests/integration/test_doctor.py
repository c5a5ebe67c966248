"""`inferops doctor` against real backends: ok where they answer, failed (exit 1) where they don't; on an
unconfigured checkout everything is "not configured" and nothing is contacted; every check is independent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.standins.ports import free_port
from tests.integration.connections import beyond, strace_prefix


def _by_backend(stdout):
    out = {}
    for c in json.loads(stdout)["checks"]:
        out.setdefault(c["backend"], []).append(c)
    return out


def test_doctor_reports_truthfully(run_cli, moto_s3, prometheus, prefect_api, kube, ssh_host_factory, ssh_hosts,
                                   tmp_path):
    inv = ssh_host_factory.write_inventory(tmp_path / "hosts.yml", {"gpu_hosts": ssh_hosts})
    env = {**moto_s3.env(), "INFEROPS_PROMETHEUS__URL": prometheus.url, "PREFECT_API_URL": prefect_api,
           "INFEROPS_INVENTORY": str(inv), "KUBECONFIG": kube.kubeconfig, "HOME": str(tmp_path)}
    r = run_cli("doctor", "--json", "--timeout", "10", env=env)
    by = _by_backend(r.stdout)
    assert [c["status"] for c in by["prefect"]] == ["ok"]
    assert [c["status"] for c in by["prometheus"]] == ["ok"]
    assert [c["status"] for c in by["s3"]] == ["ok", "ok"]
    assert [c["status"] for c in by["kubernetes"]] == ["ok"], by["kubernetes"]
    assert sorted(c["target"] for c in by["ssh"]) == sorted(h.name for h in ssh_hosts)
    assert {c["status"] for c in by["ssh"]} == {"ok"}, by["ssh"]
    assert r.returncode == 0, r.stdout + r.stderr

    # Prometheus configured but nothing listening, and one host that never answers:
    # each is failed with its reason, the rest still ok, exit 1
    dead = ssh_host_factory.unreachable("dead")
    inv = ssh_host_factory.write_inventory(tmp_path / "hosts2.yml", {"gpu_hosts": [*ssh_hosts, dead]})
    env.update({"INFEROPS_PROMETHEUS__URL": f"http://127.0.0.1:{free_port()}", "INFEROPS_INVENTORY": str(inv)})
    r = run_cli("doctor", "--json", "--timeout", "3", env=env)
    by = _by_backend(r.stdout)
    assert r.returncode == 1
    assert by["prometheus"][0]["status"] == "failed" and "unreachable" in by["prometheus"][0]["detail"]
    ssh = {c["target"]: c for c in by["ssh"]}
    assert ssh["dead"]["status"] == "failed" and ssh["dead"]["detail"]
    assert all(ssh[h.name]["status"] == "ok" for h in ssh_hosts)
    assert "Traceback" not in r.stderr


def _clean_env(tmp_path, **extra):
    """An unconfigured checkout: none of the user's Prefect, AWS, Kubernetes or inferops settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "INFEROPS_", "AWS_", "KUBE")) and k != "DO_NOT_TRACK"}
    env.update(HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / ".prefect"), **extra)
    return env


def test_unconfigured_doctor_contacts_nothing_beyond_loopback(tmp_path):
    """Every backend 'not configured', exit 0, and strace saw no connection leave loopback."""
    trace = tmp_path / "doctor.strace"
    exe = Path(sys.executable).with_name("inferops")
    p = subprocess.run([*strace_prefix(trace), str(exe), "doctor", "--json"], cwd=tmp_path, env=_clean_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    checks = json.loads(p.stdout)["checks"]
    assert {c["backend"] for c in checks} == {"prefect", "s3", "prometheus", "kubernetes", "ssh"}
    assert all(c["status"] == "skipped" and c["detail"].startswith("not configured") for c in checks), checks
    ssh = next(c for c in checks if c["backend"] == "ssh")
    assert "INFEROPS_INVENTORY" in ssh["detail"]
    if not strace_prefix(trace):
        pytest.skip("strace is not installed: connections not recorded")
    assert beyond(trace) == []


def _doctor(*args, env, cwd):
    exe = Path(sys.executable).with_name("inferops")
    return subprocess.run([str(exe), "doctor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_bad_settings_fail_their_own_rows_and_the_table_is_printed(tmp_path):
    """A bad value fails the row it configures, naming the setting; the other rows still run."""
    env = _clean_env(tmp_path, INFEROPS_PROMETHEUS__URL="http://scraper:s3cr3t-pw@127.0.0.1:99999",
                     INFEROPS_SSH__PORT="twenty-two", INFEROPS_LOCAL__PORT="0")
    r = _doctor("--json", env=env, cwd=tmp_path)
    by = _by_backend(r.stdout)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert by["prometheus"][0]["status"] == "failed" and by["prometheus"][0]["target"] == "settings"
    assert "INFEROPS_PROMETHEUS__URL" in by["prometheus"][0]["detail"]  # a port out of range, named as a setting
    assert by["ssh"] == [{"backend": "ssh", "target": "settings", "status": "failed",
                          "detail": by["ssh"][0]["detail"]}] and "INFEROPS_SSH__PORT" in by["ssh"][0]["detail"]
    assert "INFEROPS_LOCAL__PORT" in by["settings"][0]["detail"]
    assert [c["status"] for c in by["s3"]] == ["skipped"] and [c["status"] for c in by["kubernetes"]] == ["skipped"]
    assert "s3cr3t-pw" not in r.stdout + r.stderr

    # a garbage config file: its own row; the table (human mode) still has every backend
    (tmp_path / "inferops.toml").write_text("inventory = [\n")
    r = _doctor(env=_clean_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    for row in ("config", "prefect", "s3", "prometheus", "kubernetes", "ssh"):
        assert row in r.stdout, row
    assert "inferops.toml" in r.stdout
