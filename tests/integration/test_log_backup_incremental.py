"""Incremental behaviour of the sync engine against moto: skips, rewrites, quiet period, rotation, multipart."""

from __future__ import annotations

import os
import time

import pytest

from flows.common.s3 import parse_s3_uri
from flows.log_backup.engine import BackupEngine, Index
from flows.log_backup.models import BackupPolicy
from flows.log_backup.restore import restore
from tests.integration.log_backup_support import OLD, bucket_name, keys, make_tree, snapshot, write


def _policy(src, bucket, **kw) -> BackupPolicy:
    return BackupPolicy(source=str(src), dest=f"s3://{bucket}/inc", dest_region="eu-west-1", **kw)


@pytest.fixture
def bucket(moto_s3):
    return moto_s3.create_bucket(bucket_name("inc"), "eu-west-1")


def test_skip_unchanged_reupload_same_size_newer_mtime(moto_s3, bucket, tmp_path):
    src = tmp_path / "logs"
    files = make_tree(src, n=8)
    first = BackupEngine(_policy(src, bucket)).run()
    assert (first.uploaded_files, first.failed_files) == (len(files), 0)

    # same size, different bytes, newer mtime: uploaded again
    rel = "node-1/app/serve-1.log"
    new = bytes(b ^ 1 for b in files[rel])
    write(src / rel, new, mtime=OLD + 60)
    second = BackupEngine(_policy(src, bucket)).run()
    assert (second.uploaded_files, second.skipped_files, second.copied_files) == (1, len(files) - 1, 0)
    got = moto_s3.client("eu-west-1").get_object(Bucket=bucket, Key=f"inc/{rel}")["Body"].read()
    assert got == new

    # touched only (same bytes, newer mtime): still sent again, as asked
    os.utime(src / rel, (OLD + 120, OLD + 120))
    third = BackupEngine(_policy(src, bucket)).run()
    assert (third.uploaded_files, third.adopted_files) == (1, 0)


def test_verify_unchanged_catches_content_changed_under_same_mtime(moto_s3, bucket, tmp_path):
    src = tmp_path / "logs"
    files = make_tree(src, n=4)
    BackupEngine(_policy(src, bucket)).run()
    rel = "node-2/app/serve-2.log"
    st = (src / rel).stat()
    write(src / rel, bytes(b ^ 2 for b in files[rel]), mtime=st.st_mtime)  # same size, same mtime
    os.utime(src / rel, ns=(st.st_atime_ns, st.st_mtime_ns))

    plain = BackupEngine(_policy(src, bucket)).run()
    assert plain.uploaded_files == 0  # size+mtime cannot see it
    checked = BackupEngine(_policy(src, bucket, verify_unchanged=True)).run()
    assert checked.uploaded_files == 1
    assert checked.verified_files == len(files)
    assert checked.skipped_files == len(files) - 1


def test_quiet_period_defers_then_next_run_catches_it(moto_s3, bucket, tmp_path):
    src = tmp_path / "logs"
    write(src / "old.log", b"settled\n" * 100)
    write(src / "live.log", b"still being written\n", mtime=time.time())
    policy = _policy(src, bucket, quiet_period_s=300)
    report = BackupEngine(policy).run()
    assert (report.uploaded_files, report.deferred_files, report.skipped_files) == (1, 1, 1)
    assert "inc/live.log" not in keys(moto_s3.client("eu-west-1"), bucket, "inc/")

    later = BackupEngine(policy, now=lambda: time.time() + 600).run()
    assert (later.uploaded_files, later.deferred_files) == (1, 0)
    assert "inc/live.log" in keys(moto_s3.client("eu-west-1"), bucket, "inc/")


def test_rotated_log_is_a_server_side_copy(moto_s3, bucket, tmp_path):
    src = tmp_path / "logs"
    body = os.urandom(200_000)
    write(src / "serve.log", body)
    assert BackupEngine(_policy(src, bucket)).run().uploaded_files == 1

    # logrotate: serve.log -> serve.log.1 (same bytes), a fresh serve.log
    os.rename(src / "serve.log", src / "serve.log.1")
    write(src / "serve.log", b"new day\n")
    report = BackupEngine(_policy(src, bucket)).run()
    assert (report.uploaded_files, report.copied_files, report.failed_files) == (2, 1, 0)
    # the copy moved no bytes from the node: only the new small file was sent
    s3 = moto_s3.client("eu-west-1")
    assert s3.get_object(Bucket=bucket, Key="inc/serve.log.1")["Body"].read() == body
    # the old key stays (a mirror never deletes): the backup keeps what was there
    assert s3.get_object(Bucket=bucket, Key="inc/serve.log")["Body"].read() == b"new day\n"


@pytest.mark.parametrize("algorithm", ["SHA256", "CRC32"])
def test_multipart_checksum_composite_verified_and_restored(moto_s3, bucket, tmp_path, algorithm):
    src, out = tmp_path / "logs", tmp_path / "out"
    write(src / "big/model-server.log", os.urandom(12 * 1024 * 1024 + 12345))
    write(src / "small.log", b"tiny")
    policy = _policy(src, bucket, checksum_algorithm=algorithm, multipart_threshold_mb=5,
                     multipart_chunksize_mb=5)
    report = BackupEngine(policy).run()
    assert (report.uploaded_files, report.verified_files, report.failed_files) == (2, 2, 0)
    head = moto_s3.client("eu-west-1").head_object(Bucket=bucket, Key="inc/big/model-server.log",
                                                   ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"]
    index = Index.load(moto_s3.client("eu-west-1"), parse_s3_uri(policy.dest))
    assert index.entries["big/model-server.log"].checksum.split("-")[0] == head[f"Checksum{algorithm}"].split("-")[0]

    r = restore(moto_s3.client("eu-west-1"), parse_s3_uri(policy.dest), out)
    assert (r.restored_files, r.failed_files) == (2, 0)
    assert snapshot(out) == snapshot(src)


def test_include_exclude_globs(moto_s3, bucket, tmp_path):
    src = tmp_path / "logs"
    make_tree(src, n=6)
    report = BackupEngine(_policy(src, bucket, include=["*.log", "*.gz"], exclude=["node-2/*"])).run()
    stored = {k for k in keys(moto_s3.client("eu-west-1"), bucket, "inc/") if "/.inferops/" not in k}
    assert stored == {"inc/node-0/app/serve-0.log", "inc/node-0/app/serve-3.log", "inc/node-1/app/serve-1.log",
                      "inc/node-1/app/serve-4.log", "inc/node-0/app/serve-0.log.1.gz"}
    assert report.uploaded_files == len(stored)


def test_versioning_and_restore_at_a_past_time(moto_s3, bucket, tmp_path):
    from datetime import UTC, datetime

    src = tmp_path / "logs"
    write(src / "serve.log", b"version one\n")
    policy = _policy(src, bucket, versioning=True)
    assert BackupEngine(policy).run().uploaded_files == 1
    s3 = moto_s3.client("eu-west-1")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    time.sleep(1.1)  # S3 timestamps have one-second resolution
    between = datetime.now(UTC)
    time.sleep(1.1)
    write(src / "serve.log", b"version two, longer\n", mtime=OLD + 100)
    assert BackupEngine(policy).run().uploaded_files == 1

    uri = parse_s3_uri(policy.dest)
    r = restore(s3, uri, tmp_path / "then", at=between)
    assert r.failed_files == 0 and (tmp_path / "then/serve.log").read_bytes() == b"version one\n"
    r = restore(s3, uri, tmp_path / "now")
    assert (tmp_path / "now/serve.log").read_bytes() == b"version two, longer\n"


def test_object_lock_governance(moto_s3, tmp_path):
    from flows.common.errors import BadInput

    src = tmp_path / "logs"
    write(src / "audit.log", b"keep me\n")
    plain = moto_s3.create_bucket(bucket_name("nolock"), "eu-west-1")
    with pytest.raises(BadInput, match="no Object Lock"):
        BackupEngine(_policy(src, plain, object_lock=True)).run()

    locked = moto_s3.create_bucket(bucket_name("locked"), "eu-west-1", ObjectLockEnabledForBucket=True)
    report = BackupEngine(_policy(src, locked, object_lock=True, retention_days=2)).run()
    assert report.ok and report.uploaded_files == 1
    head = moto_s3.client("eu-west-1").head_object(Bucket=locked, Key="inc/audit.log")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    days = (head["ObjectLockRetainUntilDate"].timestamp() - time.time()) / 86400
    assert 1.9 < days <= 2.0


def test_large_destination_listed_in_parallel_ranges_without_gaps(moto_s3, bucket, tmp_path, monkeypatch):
    import flows.log_backup.engine as engine

    monkeypatch.setattr(engine, "LIST_PAGE_KEYS", 10)  # 10-key pages: 95 objects are many ranges
    src = tmp_path / "logs"
    for i in range(80):
        write(src / f"n{i % 3}/f-{i:03d}.log", f"{i}\n".encode())
    policy = _policy(src, bucket)
    assert BackupEngine(policy).run().uploaded_files == 80
    s3 = moto_s3.client("eu-west-1")
    for i in range(15):  # objects the index does not know (another writer): listed all the same
        s3.put_object(Bucket=bucket, Key=f"inc/n{i % 4}/zz-{i}.log", Body=b"x")
    dest = parse_s3_uri(policy.dest)
    index = Index.load(s3, dest)

    lister = engine.DestListing(s3, dest)
    first_half = lister.first()
    assert lister.rest(list(index.entries)) == {}  # the first lister already listed everything
    lister = engine.DestListing(s3, dest)
    rest = lister.rest(list(index.entries))  # the index arrives before the first lister starts
    listed = {**lister.first(), **rest}
    want = {k.removeprefix("inc/"): v for k, v in keys(s3, bucket, "inc/").items() if "/.inferops/" not in k}
    assert lister.ranges > 5 and listed == want == first_half and len(want) == 95

    # and a whole run over many ranges keeps everything (nothing re-sent, nothing missed)
    again = BackupEngine(policy).run()
    assert (again.uploaded_files, again.skipped_files, again.failed_files) == (0, 80, 0)
