"""`make demo`'s DRBD part: the bundled captures → demo-output/drbd/report.json and metrics."""

from __future__ import annotations

import json

from flows.common.settings import reload_settings


def test_demo_writes_report_and_metrics(tmp_path, monkeypatch):
    from flows.drbd_health.demo import run

    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()
    try:
        summary = run(tmp_path / "drbd")
    finally:
        monkeypatch.undo()
        reload_settings()
    report = json.loads((tmp_path / "drbd" / "report.json").read_text())
    assert summary == report["status"] and summary.startswith("DRBD CRITICAL - storage-b/models critical: ")
    hosts = {r["host"] for r in report["resources"]}
    assert hosts == {"legacy-84", "storage-a", "storage-b", "storage-c"}  # 8.4 /proc, JSON, events2, text
    assert report["nagios_code"] == 2
    assert any("--discard-my-data models" in h for h in report["hints"]["storage-b/models"])
    assert report["events"] == ["storage-b/models"]  # first sighting of a critical resource
    prom = (tmp_path / "drbd" / "inferops_drbd.prom").read_text()
    assert 'inferops_drbd_resource_severity{host="storage-b",resource="models"} 2.0' in prom
    assert json.loads((tmp_path / "state" / "drbd" / "last_severity.json").read_text())["storage-b/models"] == "critical"
