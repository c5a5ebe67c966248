"""Pure parts of the log backup: globs, checksums, verification, lifecycle rule, input checks, restore paths."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import socket
import zlib
from datetime import UTC, datetime

import pytest

from flows.common.errors import BadInput
from flows.common.s3 import parse_s3_uri
from flows.log_backup.cli import _parse_at
from flows.log_backup.engine import (
    Entry,
    Item,
    Matcher,
    ScanNotes,
    VerifyError,
    check_stored,
    digest_file,
    lifecycle_rule,
    scan_local,
    selected,
    validate,
)
from flows.log_backup.models import BackupPolicy, BackupReport
from flows.log_backup.restore import _safe_target, check_target, remove_stale_partials


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


def test_scan_local_counts_symlinks_fifos_sockets_and_names_s3_cannot_hold(tmp_path):
    root = tmp_path / "logs"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.log").write_bytes(b"a")
    (root / "file-link.log").symlink_to(root / "d" / "a.log")
    (root / "dir-link").symlink_to(root / "d")  # never followed: its files are not backed up twice
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(root / "d" / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "d" / "app.sock"))
        os.mkfifo(root / "excluded.fifo")
        with open(os.fsencode(root) + b"/bad-\xff.log", "wb") as fh:  # not UTF-8: no S3 key can hold it
            fh.write(b"x")
        notes = ScanNotes()
        items = list(scan_local(root, ["*"], ["*.fifo"], notes))
    assert [i.rel for i in items] == ["d/a.log"]
    assert sorted(notes.special) == ["d/app.sock", "d/pipe", "dangling", "dir-link", "file-link.log"]
    assert len(notes.errors) == 1 and "bad-\\xff.log" in notes.errors[0] and "not UTF-8" in notes.errors[0]


def test_scan_local_reports_a_directory_it_cannot_list(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.log").write_bytes(b"a")
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path):  # what EACCES looks like to a non-root run (tests run as root in CI)
        if str(path).rstrip("/").endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    notes = ScanNotes()
    assert [i.rel for i in scan_local(tmp_path, ["*"], [], notes)] == ["ok/a.log"]
    assert notes.errors == ["locked/: cannot list: Permission denied"]


def _entry(size: int, mtime_ns: int, data: bytes = b"") -> Entry:
    return Entry(size, mtime_ns, hashlib.sha256(data).hexdigest(), "", "")


def test_matcher_size_mtime_reads_nothing_checksum_compares_content(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"hello")
    item = Item("a.log", 5, 100, path=path)
    digest = digest_file(path, "SHA256", None)
    base = {"source": str(tmp_path), "dest": "s3://bkt-ok/p", "dest_region": "eu-west-1"}
    plain = Matcher(BackupPolicy(**base))
    by_content = Matcher(BackupPolicy(**base, compare="checksum"))
    assert Matcher(BackupPolicy(**base, verify_unchanged=True)).checksum  # the deployment's old spelling

    assert plain.skip_unread(_entry(5, 100), item)
    assert not plain.skip_unread(_entry(5, 101), item) and not plain.skip_unread(_entry(6, 100), item)
    assert not plain.skip_unread(None, item)
    assert not plain.same_content(_entry(5, 100, b"hello"), item, digest)  # never reads in this mode

    assert not by_content.skip_unread(_entry(5, 100), item)  # always read: a same-mtime rewrite shows
    assert by_content.same_content(_entry(5, 100, b"hello"), item, digest)
    assert by_content.same_content(_entry(5, 999, b"hello"), item, digest)  # only touched: same content
    assert not by_content.same_content(_entry(5, 100, b"HELLO"), item, digest)
    s3_item = Item("a.log", 5, 100, key="src/a.log", etag="abc")
    assert by_content.skip_unread(Entry(5, 0, "", "", "abc"), s3_item)
    assert not by_content.skip_unread(Entry(5, 0, "", "", "abd"), s3_item)


def test_stale_partials_removed_unless_locked_or_not_ours(tmp_path):
    (tmp_path / "d").mkdir()
    stale = tmp_path / "d" / ".serve.log.inferops-ab12cd_3.partial"
    live = tmp_path / ".other.log.inferops-zz99zz99.partial"
    foreign = [tmp_path / ".serve.log.partial", tmp_path / "notes.partial", tmp_path / ".x.inferops-short.partial"]
    for p in [stale, live, *foreign]:
        p.write_bytes(b"half a file")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another restore is still writing it
        assert remove_stale_partials(tmp_path) == 1
    finally:
        os.close(fd)
    assert not stale.exists() and live.exists() and all(p.exists() for p in foreign)
    assert remove_stale_partials(tmp_path) == 1 and not live.exists()


def test_check_target(tmp_path):
    check_target(tmp_path / "new" / "dir")
    check_target(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is not a directory"):
        check_target(tmp_path / "f")
    with pytest.raises(BadInput, match="which is not a directory"):
        check_target(tmp_path / "f" / "sub")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadInput, match="is not a directory"):
        check_target(tmp_path / "dangling")


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
    with pytest.raises(BadInput, match="out of range"):
        _parse_at("99999999999999999999")  # overflowed before
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
