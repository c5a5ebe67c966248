"""`inferops backup run|restore` end to end against moto's S3 server in two regions."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.integration.log_backup_support import (
    bucket_name,
    cli,
    cli_json,
    keys,
    make_tree,
    snapshot,
    write,
)

SUMMARY_KEYS = ["uploaded_files", "uploaded_bytes", "skipped_files", "verified_files", "failed_files", "errors",
                "deferred_files", "skipped_special", "aborted_uploads"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


def test_backup_rerun_lifecycle_and_restore_byte_for_byte(moto_s3, offline, tmp_path, capsys):
    src, out = tmp_path / "logs", tmp_path / "restored"
    files = make_tree(src)
    total = sum(len(b) for b in files.values())
    before = snapshot(src)
    bucket = moto_s3.create_bucket(bucket_name("backup"), "eu-west-1")
    s3 = moto_s3.client("eu-west-1")
    other_rule = {"ID": "keep-me", "Filter": {"Prefix": "other/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [other_rule]})

    dest = f"s3://{bucket}/hosts/gpu-01"
    rc, summary = cli_json(capsys, "backup", "run", "--source", str(src), "--dest", dest,
                           "--dest-region", "eu-west-1", "--retention-days", "3")
    assert rc == 0
    assert list(summary) == SUMMARY_KEYS
    assert summary == {"uploaded_files": len(files), "uploaded_bytes": total, "skipped_files": 0,
                       "verified_files": len(files), "failed_files": 0, "errors": [], "deferred_files": 0,
                       "skipped_special": 0, "aborted_uploads": 0}

    # a plain mirror, bookkeeping only under .inferops/
    stored = keys(s3, bucket, "hosts/gpu-01/")
    data_keys = {k for k in stored if "/.inferops/" not in k}
    assert data_keys == {f"hosts/gpu-01/{rel}" for rel in files}
    assert {k.split("/.inferops/")[1].split("/")[0] for k in set(stored) - data_keys} == {"index.json.gz", "runs"}
    body = s3.get_object(Bucket=bucket, Key="hosts/gpu-01/.inferops/index.json.gz")["Body"].read()
    assert set(json.loads(gzip.decompress(body))["entries"]) == set(files)
    # what S3 stored is the checksum of the source bytes
    head = s3.head_object(Bucket=bucket, Key="hosts/gpu-01/node-0/app/serve-0.log", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"]

    # lifecycle: our rule on the prefix, the other rule kept
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["keep-me"]["Expiration"] == {"Days": 30}
    ours = rules["inferops-backup-hosts/gpu-01"]
    assert ours["Status"] == "Enabled"
    assert ours["Filter"] == {"Prefix": "hosts/gpu-01/"}
    assert ours["Expiration"] == {"Days": 3}
    assert ours["NoncurrentVersionExpiration"] == {"NoncurrentDays": 3}
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    # unchanged re-run: nothing transferred
    rc, summary = cli_json(capsys, "backup", "run", "--source", str(src), "--dest", dest,
                           "--dest-region", "eu-west-1", "--retention-days", "3")
    assert (rc, summary["uploaded_files"], summary["skipped_files"]) == (0, 0, len(files))

    # restore, byte for byte, with the source mtimes; sources untouched
    rc, restored = cli_json(capsys, "backup", "restore", "--from", dest, "--to", str(out), "--region", "eu-west-1")
    assert rc == 0
    assert restored["restored_files"] == restored["verified_files"] == len(files)
    assert snapshot(out) == before == snapshot(src)


def test_restore_include_and_at(moto_s3, offline, tmp_path, capsys):
    src = tmp_path / "logs"
    files = make_tree(src, n=6)
    bucket = moto_s3.create_bucket(bucket_name("restore"), "eu-west-1")
    dest = f"s3://{bucket}/r"
    assert cli_json(capsys, "backup", "run", "--source", str(src), "--dest", dest, "--dest-region", "eu-west-1")[0] == 0

    out = tmp_path / "only-node-1"
    rc, restored = cli_json(capsys, "backup", "restore", "--from", dest, "--to", str(out),
                            "--region", "eu-west-1", "--include", "node-1/*")
    assert rc == 0
    assert set(snapshot(out)) == {r for r in files if r.startswith("node-1/")}

    # --at before the backup existed restores nothing
    rc, restored = cli_json(capsys, "backup", "restore", "--from", dest, "--to", str(tmp_path / "past"),
                            "--region", "eu-west-1", "--at", "2020-01-01T00:00:00Z")
    assert (rc, restored["restored_files"]) == (0, 0)


@pytest.mark.parametrize("args, message", [
    (["--source", "/nonexistent/logs", "--dest", "s3://bkt-ok/p", "--dest-region", "eu-west-1"],
     "source directory '/nonexistent/logs' does not exist"),
    (["--source", "{src}", "--dest", "http://bkt-ok/p", "--dest-region", "eu-west-1"], "malformed S3 URI"),
    (["--source", "{src}", "--dest", "s3://Bad_Bucket/p", "--dest-region", "eu-west-1"], "bad bucket name"),
    (["--source", "{src}", "--dest", "s3://bkt-ok/p", "--dest-region", "mars-north-9x"], "unknown region"),
    (["--source", "s3://src-bkt/p", "--source-region", "nowhere", "--dest", "s3://bkt-ok/p",
      "--dest-region", "eu-west-1"], "unknown region"),
])
def test_bad_input_exits_2_with_one_line(moto_s3, offline, tmp_path, capsys, args, message):
    tmp_path.joinpath("logs").mkdir()
    argv = [a.replace("{src}", str(tmp_path / "logs")) for a in args]
    rc, out, err = cli(capsys, "backup", "run", *argv, "--json")
    assert rc == 2
    assert err.startswith("inferops: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["failed_files"] == 0 and message in summary["errors"][0]


def test_destination_bucket_missing_or_in_wrong_region(moto_s3, offline, tmp_path, capsys):
    write(tmp_path / "logs/a.log", b"x")
    rc, _, err = cli(capsys, "backup", "run", "--source", str(tmp_path / "logs"),
                     "--dest", f"s3://{bucket_name('missing')}/p", "--dest-region", "eu-west-1")
    assert rc == 2 and "does not exist" in err
    bucket = moto_s3.create_bucket(bucket_name("wrongregion"), "us-east-1")
    rc, _, err = cli(capsys, "backup", "run", "--source", str(tmp_path / "logs"),
                     "--dest", f"s3://{bucket}/p", "--dest-region", "eu-west-1")
    assert rc == 2 and "is in region us-east-1, not eu-west-1" in err


def test_s3_source_copied_server_side_across_regions(moto_s3, offline, tmp_path, capsys):
    primary = moto_s3.create_bucket(bucket_name("primary"), "us-east-1")
    backup = moto_s3.create_bucket(bucket_name("backup"), "eu-west-1")
    src_client = moto_s3.client("us-east-1")
    objects = {f"logs/node-{i}/serve.log": (f"line {i}\n" * (200 + i)).encode() for i in range(5)}
    for key, body in objects.items():
        src_client.put_object(Bucket=primary, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    src_client.put_object(Bucket=primary, Key="logs/node-0/core.dump", Body=b"no checksum stored here")
    args = ["backup", "run", "--source", f"s3://{primary}/logs", "--source-region", "us-east-1",
            "--dest", f"s3://{backup}/mirror", "--dest-region", "eu-west-1"]

    rc, summary = cli_json(capsys, *args)
    assert rc == 0, summary["errors"]
    assert summary["uploaded_files"] == summary["verified_files"] == 6
    s3 = moto_s3.client("eu-west-1")
    for key, body in objects.items():
        rel = key.removeprefix("logs/")
        assert s3.get_object(Bucket=backup, Key=f"mirror/{rel}")["Body"].read() == body
    # the source is only read
    assert keys(src_client, primary, "") == {**{k: len(v) for k, v in objects.items()},
                                             "logs/node-0/core.dump": 23}

    rc, summary = cli_json(capsys, *args)
    assert (rc, summary["uploaded_files"], summary["skipped_files"]) == (0, 0, 6)

    out = tmp_path / "restored"
    rc, restored = cli_json(capsys, "backup", "restore", "--from", f"s3://{backup}/mirror", "--to", str(out),
                            "--region", "eu-west-1")
    assert rc == 0 and restored["verified_files"] == 6
    assert (out / "node-3/serve.log").read_bytes() == objects["logs/node-3/serve.log"]
