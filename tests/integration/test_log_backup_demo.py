"""`make demo`'s log backup part: embedded moto, backup, rotation, restore, summary.json."""

from __future__ import annotations

import json
import os

from flows.log_backup.demo import run


def test_demo_writes_summary_and_restores_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    before = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID")}
    line = run(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["restored_identical"] is True
    assert summary["first_run"]["uploaded_files"] == 6 and summary["first_run"]["deferred_files"] == 1
    assert summary["after_rotation"]["copied_files"] == 1
    assert summary["restore"]["failed_files"] == 0
    assert "restore verified" in line
    assert "demo" not in (tmp_path / "summary.json").read_text().replace("inferops-demo-log-backup", "")
    # the demo's dummy credentials and endpoint do not outlive it
    assert {k: os.environ.get(k) for k in before} == before
