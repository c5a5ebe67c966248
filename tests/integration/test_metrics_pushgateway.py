"""Batch-job metrics pushed to a real Pushgateway: the shared publisher, log-backup and idle-gpu."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from flows.common.errors import BadInput
from flows.common.metrics import publish, pushgateway_url
from flows.common.runtime import run_flow
from flows.common.settings import reload_settings
from flows.log_backup.flow import METRIC, log_backup
from flows.log_backup.models import BackupPolicy
from tests.fixtures.pushgateway import free_port
from tests.integration.log_backup_support import bucket_name, make_tree


def _samples(url: str, name: str) -> list:
    body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return [s for f in text_string_to_metric_families(body) if f.name == name for s in f.samples]


@pytest.fixture
def configured(pushgateway, monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_PROMETHEUS__PUSHGATEWAY", pushgateway)
    reload_settings()
    yield pushgateway
    monkeypatch.undo()
    reload_settings()


def test_publish_groups_by_key_and_reports_failures(pushgateway, tmp_path):
    reg = CollectorRegistry()
    Gauge("inferops_test_value", "test", registry=reg).set(7)
    out = publish(reg, job="inferops_test", pushgateway=pushgateway, grouping={"dest": "s3://b/with/slashes"},
                  textfile=tmp_path / "sub" / "t.prom")
    assert out == {"textfile": str(tmp_path / "sub" / "t.prom"), "pushgateway": "pushed"}
    [sample] = _samples(pushgateway, "inferops_test_value")
    assert sample.value == 7 and sample.labels["job"] == "inferops_test"
    assert sample.labels["dest"] == "s3://b/with/slashes"  # base64-encoded in the push URL, decoded here
    dead = publish(reg, job="inferops_test", pushgateway=f"http://127.0.0.1:{free_port()}")
    assert dead["pushgateway"].startswith("failed: ")
    blocked = publish(reg, job="inferops_test", textfile=tmp_path / "sub" / "t.prom" / "under-a-file.prom")
    assert blocked["textfile"].startswith("failed: ")
    with pytest.raises(BadInput, match="http"):
        pushgateway_url("file:///etc/passwd")


def test_log_backup_pushes_its_last_success(configured, moto_s3, tmp_path):
    bucket = moto_s3.create_bucket(bucket_name("push"), "eu-west-1")
    make_tree(tmp_path / "logs", n=3)
    dest = f"s3://{bucket}/push"
    result = run_flow(log_backup, policy=BackupPolicy(source=str(tmp_path / "logs"), dest=dest,
                                                      dest_region="eu-west-1"))
    assert result["failed_files"] == 0 and result["metrics"] == {"textfile": None, "pushgateway": "pushed"}
    [sample] = [s for s in _samples(configured, METRIC) if s.labels.get("dest") == dest]
    assert sample.labels["job"] == "inferops_log_backup" and abs(sample.value - time.time()) < 600


def test_idle_gpu_gauges_go_to_the_pushgateway(configured):
    from flows.idle_gpu.flow import _write_metrics

    end = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    _write_metrics(None, "offline-batch", 3, end)
    [running] = [s for s in _samples(configured, "inferops_idle_gpu_jobs_running")
                 if s.labels.get("namespace") == "offline-batch"]
    [window] = _samples(configured, "inferops_idle_gpu_window_end_timestamp_seconds")
    assert running.value == 3 and running.labels["job"] == "inferops_idle_gpu"
    assert window.value == end.timestamp()


def test_push_with_credentials_in_the_url_uses_basic_auth_and_never_shows_them(tmp_path, caplog):
    """``http://user:pass@host`` is HTTP basic auth, not a host name; the password is never logged."""
    import base64
    import http.server
    import threading

    seen: list[str | None] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # prometheus_client pushes with PUT
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reg = CollectorRegistry()
        Gauge("inferops_test_value", "test", registry=reg).set(1)
        port = server.server_address[1]
        out = publish(reg, job="inferops_test", pushgateway=f"http://ops:s3cr%2Fet@127.0.0.1:{port}")
        assert out["pushgateway"] == "pushed", out
        assert seen == ["Basic " + base64.b64encode(b"ops:s3cr/et").decode()]
        server.shutdown()
        out = publish(reg, job="inferops_test", pushgateway=f"http://ops:s3cr%2Fet@127.0.0.1:{port}", timeout_s=1)
        assert out["pushgateway"].startswith("failed") and "s3cr" not in out["pushgateway"]
        assert "s3cr" not in caplog.text
    finally:
        server.server_close()
