"""Issue 16's backup gaps, end to end against moto: the quiet period and --checksum on the CLI,
special files counted, a killed restore's .partial files removed, stalls logged and retried, and
failed multipart uploads aborted."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.common.s3 import parse_s3_uri
from flows.log_backup.engine import BackupEngine
from flows.log_backup.models import BackupPolicy
from flows.log_backup.restore import restore
from flows.standins.faults import FaultProxy
from tests.integration.log_backup_support import OLD, bucket_name, cli_json, keys, make_tree, snapshot, write

REGION = "eu-west-1"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


@pytest.fixture
def proxy(moto_s3, monkeypatch):
    """boto3 -> fault proxy -> moto, for every client the engine builds."""
    with FaultProxy(moto_s3.endpoint) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        yield p


def _uploads(s3, bucket: str, prefix: str = "") -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]


def test_quiet_period_flag_and_deferred_files_in_json(moto_s3, offline, tmp_path, capsys):
    src = tmp_path / "logs"
    write(src / "settled.log", b"old\n" * 50)
    write(src / "fresh.log", b"just written\n", mtime=time.time())
    bucket = moto_s3.create_bucket(bucket_name("quiet"), REGION)
    args = ["backup", "run", "--source", str(src), "--dest", f"s3://{bucket}/q", "--dest-region", REGION]

    rc, summary = cli_json(capsys, *args)  # the default 60 s: the fresh file waits, and says so
    assert rc == 0
    assert (summary["uploaded_files"], summary["deferred_files"], summary["skipped_files"]) == (1, 1, 1)
    rc, summary = cli_json(capsys, *args, "--quiet-period", "0")
    assert rc == 0 and (summary["uploaded_files"], summary["deferred_files"]) == (1, 0)
    assert "q/fresh.log" in keys(moto_s3.client(REGION), bucket, "q/")


def test_checksum_flag_catches_a_same_size_same_mtime_rewrite(moto_s3, offline, tmp_path, capsys):
    src, out = tmp_path / "logs", tmp_path / "out"
    files = make_tree(src, n=4)
    bucket = moto_s3.create_bucket(bucket_name("checksum"), REGION)
    args = ["backup", "run", "--source", str(src), "--dest", f"s3://{bucket}/c", "--dest-region", REGION]
    assert cli_json(capsys, *args)[0] == 0

    rel = "node-1/app/serve-1.log"
    (tmp_path / "ref").write_bytes(b"")
    os.utime(tmp_path / "ref", ns=(os.stat(src / rel).st_atime_ns, os.stat(src / rel).st_mtime_ns))
    (src / rel).write_bytes(bytes(b ^ 7 for b in files[rel]))  # same size, new bytes...
    subprocess.run(["touch", "-r", str(tmp_path / "ref"), str(src / rel)], check=True)  # ...old mtime
    rc, plain = cli_json(capsys, *args)
    assert (rc, plain["uploaded_files"]) == (0, 0)  # size and mtime cannot see it
    rc, checked = cli_json(capsys, *args, "--checksum")
    assert (rc, checked["uploaded_files"], checked["verified_files"]) == (0, 1, len(files))
    assert checked["skipped_files"] == len(files) - 1

    # touched only: the content is the same, so --checksum sends nothing (rclone's rule)
    os.utime(src / "node-2/app/serve-2.log", (OLD + 999, OLD + 999))
    rc, touched = cli_json(capsys, *args, "--checksum")
    assert (rc, touched["uploaded_files"], touched["verified_files"]) == (0, 0, len(files))
    r = restore(moto_s3.client(REGION), parse_s3_uri(f"s3://{bucket}/c"), out)
    assert r.failed_files == 0
    assert {k: v[0] for k, v in snapshot(out).items()} == {k: v[0] for k, v in snapshot(src).items()}


def test_special_files_are_counted_not_silently_skipped(moto_s3, offline, tmp_path, capsys):
    src = tmp_path / "logs"
    write(src / "a.log", b"a" * 100)
    (src / "current.log").symlink_to(src / "a.log")
    (src / "archive").symlink_to(tmp_path)
    os.mkfifo(src / "audit.pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "syslog.sock"))
        bucket = moto_s3.create_bucket(bucket_name("special"), REGION)
        rc, summary = cli_json(capsys, "backup", "run", "--source", str(src), "--dest", f"s3://{bucket}/s",
                               "--dest-region", REGION)
    assert rc == 0
    assert (summary["uploaded_files"], summary["skipped_special"], summary["failed_files"]) == (1, 4, 0)
    assert set(keys(moto_s3.client(REGION), bucket, "s/")) - {k for k in keys(moto_s3.client(REGION), bucket,
                                                                               "s/.inferops/")} == {"s/a.log"}


def test_a_restore_killed_mid_file_leaves_partials_the_next_restore_removes(moto_s3, offline, tmp_path, capsys):
    src, out = tmp_path / "logs", tmp_path / "out"
    write(src / "big.log", os.urandom(3 * 1024 * 1024))
    write(src / "small.log", b"s" * 1000)
    bucket = moto_s3.create_bucket(bucket_name("partial"), REGION)
    dest = f"s3://{bucket}/p"
    assert BackupEngine(BackupPolicy(source=str(src), dest=dest, dest_region=REGION)).run().ok

    with FaultProxy(moto_s3.endpoint) as slow:  # big.log's body stops after 1 MiB, for a minute
        slow.stall(-1, 60, match=lambda r: r.method == "GET" and r.path.split("?")[0].endswith("/big.log"),
                   after_bytes=1024 * 1024)
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": slow.endpoint, "INFEROPS_OFFLINE": "1"}
        run = subprocess.Popen([str(Path(sys.executable).with_name("inferops")), "backup", "restore",
                                "--from", dest, "--to", str(out), "--region", REGION],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        partials: list[Path] = []
        while time.monotonic() < deadline and run.poll() is None:
            partials = [p for p in out.rglob("*.partial") if p.stat().st_size >= 1024 * 1024]
            if partials:
                break
            time.sleep(0.1)
        run.kill()  # mid-file
        run.wait(timeout=30)
    assert len(partials) == 1 and partials[0].name.startswith(".big.log.inferops-")
    assert partials[0].exists() and not (out / "big.log").exists()

    rc, restored = cli_json(capsys, "backup", "restore", "--from", dest, "--to", str(out), "--region", REGION)
    assert rc == 0
    assert (restored["removed_partials"], restored["restored_files"], restored["failed_files"]) == (1, 2, 0)
    assert not list(out.rglob("*.partial"))
    assert snapshot(out) == snapshot(src)


def test_stalls_beyond_the_read_timeout_are_logged_with_the_file_and_retried(moto_s3, proxy, tmp_path, caplog):
    bucket = moto_s3.create_bucket(bucket_name("stall"), REGION)
    src, out = tmp_path / "logs", tmp_path / "out"
    write(src / "big.log", os.urandom(11 * 1024 * 1024))
    write(src / "small.log", b"x" * 2000)
    proxy.stall(1, 3.0, match=lambda r: r.is_upload_part)  # no answer for 3 s, twice the read timeout
    proxy.stall(1, 3.0, match=lambda r: r.method == "PUT" and r.path.split("?")[0].endswith("/small.log"))
    policy = BackupPolicy(source=str(src), dest=f"s3://{bucket}/st", dest_region=REGION, read_timeout_s=1,
                          multipart_threshold_mb=5, multipart_chunksize_mb=5)

    with caplog.at_level(logging.WARNING, logger="inferops"):
        report = BackupEngine(policy).run()
    assert proxy.injected["stall"] == 2
    assert (report.uploaded_files, report.failed_files) == (2, 0), report.errors
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert any(m.startswith("big.log: S3 UploadPart stalled (no answer within the 1 s read timeout)")
               and "retrying" in m for m in stalls), stalls
    assert any(m.startswith("small.log: S3 PutObject stalled") for m in stalls), stalls
    assert _uploads(moto_s3.client(REGION), bucket) == []
    r = restore(moto_s3.client(REGION), parse_s3_uri(policy.dest), out)
    assert r.failed_files == 0 and snapshot(out) == snapshot(src)


def test_a_failed_multipart_upload_is_aborted_now_or_by_the_next_run(moto_s3, proxy, tmp_path, caplog):
    bucket = moto_s3.create_bucket(bucket_name("orphan"), REGION)
    s3 = moto_s3.client(REGION)
    src = tmp_path / "logs"
    write(src / "big.log", os.urandom(11 * 1024 * 1024))
    write(src / "small.log", b"x" * 2000)
    policy = BackupPolicy(source=str(src), dest=f"s3://{bucket}/mp", dest_region=REGION,
                          multipart_threshold_mb=5, multipart_chunksize_mb=5)
    someone_elses = s3.create_multipart_upload(Bucket=bucket, Key="other/upload.bin")["UploadId"]

    # a part is refused: s3transfer aborts the upload itself
    proxy.fail(1, 403, "AccessDenied", match=lambda r: r.is_upload_part)
    report = BackupEngine(policy).run()
    assert (report.uploaded_files, report.failed_files) == (1, 1)
    assert report.errors[0].startswith("big.log: ") and "AccessDenied" in report.errors[0]
    assert _uploads(s3, bucket, "mp/") == []

    # the abort is refused too (an endpoint that is failing): the upload stays open, logged...
    proxy.fail(1, 403, "AccessDenied", match=lambda r: r.is_upload_part)
    proxy.fail(-1, 403, "AccessDenied", match=lambda r: r.method == "DELETE" and "uploadId=" in r.path)
    with caplog.at_level(logging.WARNING, logger="inferops"):
        report = BackupEngine(policy).run()
    assert report.failed_files == 1 and _uploads(s3, bucket, "mp/") == ["mp/big.log"]
    assert any(r.getMessage().startswith("mp/big.log: failed multipart upload not aborted") for r in caplog.records)

    # ...and the next run aborts it before anything else, then backs the file up
    proxy.clear()
    report = BackupEngine(policy).run()
    assert (report.aborted_uploads, report.uploaded_files, report.failed_files) == (1, 1, 0)
    assert _uploads(s3, bucket, "mp/") == []
    assert _uploads(s3, bucket, "other/") == ["other/upload.bin"]  # outside our prefix: not ours
    s3.abort_multipart_upload(Bucket=bucket, Key="other/upload.bin", UploadId=someone_elses)
