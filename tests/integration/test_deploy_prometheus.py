"""deploy/prometheus: the rules pass `promtool check rules` and their `promtool test rules` unit
tests, every alert is tested firing and not firing, and the PrometheusRule carries the same groups."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy/prometheus"
RULES = PROM / "rules/inferops.rules.yml"
TESTS = sorted((PROM / "tests").glob("*.test.yml"))
# the metric names each pipeline exports; these alerts depend on them
PIPELINE_METRICS = {
    "InferopsLogBackupMissing": "inferops_backup_last_success_timestamp_seconds",
    "InferopsDRBDResourceCritical": "inferops_drbd_resource_severity",
    "InferopsCanaryRolledBack": "inferops_canary_rollbacks_total",
    "InferopsIdleGpuJobsPastWindow": "inferops_idle_gpu_jobs_running",
    "InferopsGpuCostAnomaly": "inferops_cost_daily_usd",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        pytest.fail("promtool is missing: `apt-get install -y prometheus` (make setup does it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=300)


def alerts(groups: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for g in groups:
        for r in g["rules"]:
            out.setdefault(r["alert"], []).append(r)
    return out


def test_rule_file_checks():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0 and "SUCCESS: 8 rules found" in out.stdout, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    assert TESTS
    out = promtool("test", "rules", *map(str, TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(TESTS)


def test_every_alert_is_tested_firing_and_not_firing():
    fired, quiet = set(), set()
    for f in TESTS:
        doc = yaml.safe_load(f.read_text())
        assert [(f.parent / r).resolve() for r in doc["rule_files"]] == [RULES]
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts(yaml.safe_load(RULES.read_text())["groups"]))
    assert names == {"HighLatency", "GPUOutOfMemory", *PIPELINE_METRICS}
    assert fired == names and quiet == names


def test_alerts_use_the_dcgm_and_pipeline_metric_names():
    rules = alerts(yaml.safe_load(RULES.read_text())["groups"])
    assert "DCGM_FI_DEV_FB_USED" in rules["GPUOutOfMemory"][0]["expr"]
    for alert, metric in PIPELINE_METRICS.items():
        assert all(metric in r["expr"] for r in rules[alert]), alert
    assert "inferops_idle_gpu_window_end_timestamp_seconds" in rules["InferopsIdleGpuJobsPastWindow"][0]["expr"]
    assert "75 * 60" in rules["InferopsLogBackupMissing"][0]["expr"]


def test_prometheus_rule_carries_the_same_groups_and_checks(tmp_path):
    plain = yaml.safe_load(RULES.read_text())
    crd = yaml.safe_load((PROM / "prometheusrule.yaml").read_text())
    assert (crd["apiVersion"], crd["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert crd["spec"]["groups"] == plain["groups"]
    extracted = tmp_path / "from-prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": crd["spec"]["groups"]}))
    out = promtool("check", "rules", str(extracted))
    assert out.returncode == 0, out.stdout + out.stderr
