"""Fault tests against moto's standalone S3 server: throttling, 5xx, per-file failures, corruption, crash."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.common.s3 import parse_s3_uri
from flows.log_backup.engine import BackupEngine, Index
from flows.log_backup.models import BackupPolicy
from flows.log_backup.restore import restore
from flows.standins.faults import FaultProxy
from tests.integration.log_backup_support import bucket_name, cli_json, keys, make_tree, snapshot, write


def _policy(src, bucket, **kw) -> BackupPolicy:
    return BackupPolicy(source=str(src), dest=f"s3://{bucket}/f", dest_region="eu-west-1", **kw)


@pytest.fixture
def proxy(moto_s3, monkeypatch):
    """boto3 -> fault proxy -> moto: every client the engine builds goes through the proxy."""
    with FaultProxy(moto_s3.endpoint) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        yield p


def test_throttling_and_5xx_are_retried_with_backoff(moto_s3, proxy, tmp_path):
    bucket = moto_s3.create_bucket(bucket_name("throttle"), "eu-west-1")
    src, out = tmp_path / "logs", tmp_path / "out"
    files = make_tree(src, n=10)
    is_put = lambda r: r.method == "PUT" and "/f/node-" in r.path  # noqa: E731
    proxy.fail(4, 503, "SlowDown", match=is_put)
    proxy.fail(3, 500, "InternalError", match=is_put)
    proxy.fail(2, 503, "ServiceUnavailable", match=lambda r: r.method == "GET" and "list-type=2" in r.path)

    report = BackupEngine(_policy(src, bucket)).run()
    assert proxy.injected == {"503 SlowDown": 4, "500 InternalError": 3, "503 ServiceUnavailable": 2}
    assert (report.uploaded_files, report.verified_files, report.failed_files) == (len(files), len(files), 0)
    r = restore(moto_s3.client("eu-west-1"), parse_s3_uri(f"s3://{bucket}/f"), out)
    assert r.failed_files == 0 and snapshot(out) == snapshot(src)


def test_a_file_that_fails_is_reported_not_recorded_and_retried_next_run(moto_s3, proxy, tmp_path):
    bucket = moto_s3.create_bucket(bucket_name("perfile"), "eu-west-1")
    src = tmp_path / "logs"
    files = make_tree(src, n=6)
    bad = "node-2/app/serve-2.log"
    proxy.fail(-1, 403, "AccessDenied", match=lambda r: r.method == "PUT" and r.path.split("?")[0].endswith(bad))

    report = BackupEngine(_policy(src, bucket)).run()
    assert (report.uploaded_files, report.failed_files) == (len(files) - 1, 1)
    assert report.errors[0].startswith(f"{bad}: ") and "AccessDenied" in report.errors[0]
    assert not report.ok
    index = Index.load(moto_s3.client("eu-west-1"), parse_s3_uri(f"s3://{bucket}/f"))
    assert bad not in index.entries and len(index.entries) == len(files) - 1

    proxy.clear()
    again = BackupEngine(_policy(src, bucket)).run()
    assert (again.uploaded_files, again.skipped_files, again.failed_files) == (1, len(files) - 1, 0)


def test_corrupted_part_is_caught_by_its_checksum(moto_s3, proxy, tmp_path):
    bucket = moto_s3.create_bucket(bucket_name("corrupt"), "eu-west-1")
    src, out = tmp_path / "logs", tmp_path / "out"
    write(src / "big.log", os.urandom(11 * 1024 * 1024))
    write(src / "small.log", b"ok\n" * 100)
    policy = _policy(src, bucket, multipart_threshold_mb=5, multipart_chunksize_mb=5)
    proxy.corrupt(1)  # one UploadPart body gets a flipped byte on the wire

    report = BackupEngine(policy).run()
    assert proxy.injected["corrupt"] == 1
    assert (report.uploaded_files, report.failed_files) == (1, 1)
    assert report.errors[0].startswith("big.log: SHA256 checksum mismatch")
    assert "big.log" not in Index.load(moto_s3.client("eu-west-1"), parse_s3_uri(policy.dest)).entries

    # the next run does not adopt the corrupt object: it uploads again, and verifies
    again = BackupEngine(policy).run()
    assert (again.uploaded_files, again.adopted_files, again.failed_files) == (1, 0, 0)
    r = restore(moto_s3.client("eu-west-1"), parse_s3_uri(policy.dest), out)
    assert r.failed_files == 0 and snapshot(out) == snapshot(src)


def test_corrupted_object_at_rest_is_caught_on_restore(moto_s3, tmp_path):
    bucket = moto_s3.create_bucket(bucket_name("bitrot"), "eu-west-1")
    src, out = tmp_path / "logs", tmp_path / "out"
    write(src / "a.log", b"a" * 5000)
    write(src / "b.log", b"b" * 5000)
    assert BackupEngine(_policy(src, bucket)).run().ok
    s3 = moto_s3.client("eu-west-1")
    meta = s3.head_object(Bucket=bucket, Key="f/b.log")["Metadata"]
    s3.put_object(Bucket=bucket, Key="f/b.log", Body=b"b" * 4999 + b"X", Metadata=meta)  # bit rot

    r = restore(s3, parse_s3_uri(f"s3://{bucket}/f"), out)
    assert (r.restored_files, r.failed_files) == (1, 1)
    assert r.errors[0].startswith("b.log: sha256 mismatch")
    assert not (out / "b.log").exists()  # never written where a user would trust it
    assert [p.name for p in out.iterdir()] == ["a.log"]


@pytest.mark.slow
def test_server_killed_mid_run_next_run_completes_without_gaps_or_rework(moto_server_factory, tmp_path,
                                                                         monkeypatch, capsys):
    server = moto_server_factory(durable=True)
    bucket = server.create_bucket(bucket_name("crash"), "eu-west-1")
    src, out = tmp_path / "logs", tmp_path / "out"
    n = 240
    for i in range(n):
        write(src / f"node-{i % 4}/serve-{i}.log", os.urandom(2000 + i))
    dest = f"s3://{bucket}/crash"
    s3 = server.client("eu-west-1")

    def data_keys() -> set[str]:
        return {k for k in keys(s3, bucket, "crash/") if "/.inferops/" not in k}

    with FaultProxy(server.endpoint, delay_s=0.15) as slow:  # slow enough to be killed mid-run
        env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL_S3": slow.endpoint, "INFEROPS_OFFLINE": "1"}
        run = subprocess.Popen([str(Path(sys.executable).with_name("inferops")), "backup", "run",
                                "--source", str(src), "--dest", dest, "--dest-region", "eu-west-1", "--json"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while len(data_keys()) < 40 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert run.poll() is None, "the run finished before it could be interrupted"
        server.kill()  # the S3 endpoint dies mid-run...
        time.sleep(1.0)
        run.kill()  # ...and so does the backup process: no final index, no run record
        run.wait(timeout=30)

    server.restart()  # same port; the durable server replays what it had accepted
    present = data_keys()
    assert 40 <= len(present) < n

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    rc, summary = cli_json(capsys, "backup", "run", "--source", str(src), "--dest", dest, "--dest-region", "eu-west-1")
    assert rc == 0, summary["errors"]
    # no duplicated work: what the crashed run stored is verified and kept, only the rest is sent
    assert summary["uploaded_files"] == n - len(present)
    assert summary["verified_files"] == n and summary["failed_files"] == 0
    # no gaps: every file is there, recorded, and restores byte for byte
    assert len(data_keys()) == n
    body = s3.get_object(Bucket=bucket, Key="crash/.inferops/index.json.gz")["Body"].read()
    assert len(json.loads(gzip.decompress(body))["entries"]) == n
    r = restore(s3, parse_s3_uri(dest), out)
    assert r.failed_files == 0 and snapshot(out) == snapshot(src)
