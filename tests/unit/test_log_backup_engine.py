"""Pure parts of the log backup: globs, checksums, verification, lifecycle rule, input checks, restore paths."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from datetime import UTC, datetime

import pytest

from flows.common.errors import BadInput
from flows.common.s3 import parse_s3_uri
from flows.log_backup.cli import _parse_at
from flows.log_backup.engine import (
    VerifyError,
    check_stored,
    digest_file,
    lifecycle_rule,
    scan_local,
    selected,
    validate,
)
from flows.log_backup.models import BackupPolicy, BackupReport
from flows.log_backup.restore import _safe_target


def test_globs_match_the_relative_path_and_exclude_wins():
    assert selected("node-1/app/serve.log", ["*.log"], [])
    assert selected("node-1/app/serve.log", ["node-1/*"], [])
    assert not selected("node-1/app/serve.log", ["*.gz"], [])
    assert not selected("node-1/app/serve.log", ["*"], ["node-1/*"])
    assert not selected("a.LOG", ["*.log"], [])  # case-sensitive, like the filesystem


def test_scan_local_skips_symlinks_and_filters(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.log").write_bytes(b"a")
    (tmp_path / "b.tmp").write_bytes(b"b")
    (tmp_path / "link.log").symlink_to(tmp_path / "d" / "a.log")
    items = list(scan_local(tmp_path, ["*"], ["*.tmp"]))
    assert [(i.rel, i.size) for i in items] == [("d/a.log", 1)]


def _sha_b64(b: bytes) -> str:
    return base64.b64encode(hashlib.sha256(b).digest()).decode()


def test_digest_single_and_composite_sha256(tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    d = digest_file(p, "SHA256", part_size=2 * 1024 * 1024)
    parts = [data[i:i + 2 * 1024 * 1024] for i in range(0, len(data), 2 * 1024 * 1024)]
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert d.full == _sha_b64(data)
    assert d.parts == 3
    assert d.composite == _sha_b64(b"".join(hashlib.sha256(x).digest() for x in parts))
    assert digest_file(p, "SHA256", None).composite == ""


def test_digest_crc32_is_big_endian_base64(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello world")
    d = digest_file(p, "CRC32", None)
    assert d.full == base64.b64encode(zlib.crc32(b"hello world").to_bytes(4, "big")).decode()
    assert d.sha256 == hashlib.sha256(b"hello world").hexdigest()


def test_check_stored_accepts_full_or_composite_and_rejects_mismatch(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(3000))
    d = digest_file(p, "SHA256", part_size=1024)
    assert check_stored({"ChecksumSHA256": d.full, "ContentLength": 3000}, "SHA256", d) == d.full
    assert check_stored({"ChecksumSHA256": f"{d.composite}-3"}, "SHA256", d) == f"{d.composite}-3"
    with pytest.raises(VerifyError, match="mismatch"):
        check_stored({"ChecksumSHA256": f"{d.composite}-4"}, "SHA256", d)  # wrong part count
    with pytest.raises(VerifyError, match="mismatch"):
        check_stored({"ChecksumSHA256": _sha_b64(b"other")}, "SHA256", d)
    with pytest.raises(VerifyError, match="size"):
        check_stored({"ChecksumSHA256": d.full, "ContentLength": 2999}, "SHA256", d)
    with pytest.raises(VerifyError, match="no SHA256 checksum"):
        check_stored({}, "SHA256", d)


def test_lifecycle_rule_targets_the_prefix_only():
    rule = lifecycle_rule(parse_s3_uri("s3://bkt-backup/hosts/gpu-01"), 7)
    assert rule == {
        "ID": "inferops-backup-hosts/gpu-01", "Filter": {"Prefix": "hosts/gpu-01/"}, "Status": "Enabled",
        "Expiration": {"Days": 7}, "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


@pytest.mark.parametrize("kw, message", [
    ({"source": "/nope"}, "does not exist"),
    ({"source": "ftp://x/y"}, "malformed source"),
    ({"dest": "s3://"}, "malformed S3 URI"),
    ({"dest_region": "atlantis"}, "unknown region"),
    ({"source": "s3://src-bkt/x", "source_region": "EU"}, "unknown region"),
    ({"include": [""]}, "bad glob"),
    ({"source": "s3://bkt-ok/logs", "dest": "s3://bkt-ok/logs/backup"}, "overlap"),
    ({"source": "s3://bkt-ok/logs/a", "dest": "s3://bkt-ok/logs"}, "overlap"),
])
def test_validate_rejects_bad_input(tmp_path, kw, message):
    base = {"source": str(tmp_path), "dest": "s3://bkt-ok/p", "dest_region": "eu-west-1"}
    with pytest.raises(BadInput, match=message):
        validate(BackupPolicy(**{**base, **kw}))


def test_summary_keeps_the_cli_keys_and_only_appends():
    keys = list(BackupReport(uploaded_files=1).summary())
    assert keys[:6] == ["uploaded_files", "uploaded_bytes", "skipped_files", "verified_files", "failed_files",
                        "errors"]
    assert keys[6:] == ["deferred_files", "skipped_special", "aborted_uploads"]


@pytest.mark.parametrize("rel", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", ""])
def test_restore_refuses_keys_that_escape_the_target(tmp_path, rel):
    with pytest.raises(VerifyError, match="unsafe"):
        _safe_target(tmp_path, rel)
    assert _safe_target(tmp_path, "a/b.log") == tmp_path / "a" / "b.log"


def test_parse_at():
    assert _parse_at("2026-11-28T06:00:00Z") == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert _parse_at("1764309600") == datetime.fromtimestamp(1764309600, UTC)
    assert _parse_at(None) is None
    with pytest.raises(BadInput, match="timezone"):
        _parse_at("2026-11-28T06:00:00")
    with pytest.raises(BadInput, match="not an ISO 8601"):
        _parse_at("yesterday")


def test_a_file_deleted_after_the_scan_is_counted_as_vanished_not_failed(tmp_path):
    from flows.log_backup.engine import BackupEngine, Index, Item

    engine = BackupEngine(BackupPolicy(source=str(tmp_path), dest="s3://bkt-ok/p", dest_region="eu-west-1"))
    gone = Item("rotated.log.5", 10, 0, path=tmp_path / "rotated.log.5")  # scanned, then deleted
    report = BackupReport()
    engine._account(engine._guarded(engine._backup_local, gone, None, None, {}), Index(), report)
    assert (report.vanished_files, report.failed_files, report.errors) == (1, 0, [])
