"""Metrics pushed to a real Prometheus Pushgateway (Debian prometheus-pushgateway), and a push that fails."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.common.runtime import run_flow
from flows.common.settings import reload_settings
from tests.fixtures.pushgateway import free_port

DATA = Path(__file__).parents[1] / "data" / "drbd"


@pytest.fixture
def offline_state(tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()
    yield tmp_path
    monkeypatch.undo()
    reload_settings()


def test_push_to_gateway(pushgateway, offline_state):
    from flows.drbd_health.flow import drbd_health

    report = run_flow(drbd_health, inputs=[str(DATA / "json_split_brain.json"), str(DATA / "proc84_sync.txt")],
                      pushgateway=pushgateway)
    assert report["metrics"]["pushgateway"] == "pushed"
    body = urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5).read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    sev = {(s.labels["host"], s.labels["resource"], s.labels["job"]): s.value
           for s in fams["inferops_drbd_resource_severity"].samples}
    assert sev == {("json_split_brain", "models", "inferops_drbd"): 2.0, ("proc84_sync", "0", "inferops_drbd"): 1.0,
                   ("proc84_sync", "1", "inferops_drbd"): 1.0}


def test_failed_push_is_reported_and_the_check_still_stands(offline_state):
    from flows.drbd_health.flow import drbd_health

    report = run_flow(drbd_health, inputs=[str(DATA / "json_resync.json")],
                      pushgateway=f"http://127.0.0.1:{free_port()}")
    assert report["metrics"]["pushgateway"].startswith("failed: ")
    assert report["severity"] == "warning" and report["nagios_code"] == 1
