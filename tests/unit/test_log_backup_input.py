"""Hostile input to `inferops backup` (issue 16): contract exit codes, one line, the JSON still printed;
property tests for the timestamp (``--at``) and URL (``s3://bucket/prefix``) parsers. No S3 needed:
every case here is refused before any request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.common.errors import BadInput
from flows.common.s3 import S3Uri, parse_s3_uri
from flows.log_backup.cli import _parse_at
from tests.integration.log_backup_support import cli

RUN = ["backup", "run", "--dest", "s3://bkt-ok/p", "--dest-region", "eu-west-1"]


def _refused(capsys, argv: list[str], message: str) -> dict:
    """Exit 2, ``inferops: ...`` as the only stderr line, and one JSON object on stdout naming it."""
    rc, out, err = cli(capsys, *argv, "--json")
    assert rc == 2, (out, err)
    assert err.startswith("inferops: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err and "ValidationError" not in err and "internal error" not in err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    summary = json.loads(lines[0])
    assert message in summary["errors"][0] and summary["failed_files"] == 0
    return summary


@pytest.mark.parametrize("flags, message", [
    (["--retention-days", "99999999"], "--retention-days: Input should be less than or equal to 36500"),
    (["--retention-days", "0"], "--retention-days: Input should be greater than or equal to 1"),
    (["--quiet-period", "-1"], "--quiet-period: Input should be greater than or equal to 0"),
])
def test_backup_run_out_of_range_flags_are_bad_input_with_json(capsys, tmp_path, flags, message):
    summary = _refused(capsys, [*RUN, "--source", str(tmp_path), *flags], message)
    assert list(summary)[:6] == ["uploaded_files", "uploaded_bytes", "skipped_files", "verified_files",
                                 "failed_files", "errors"]
    assert summary["deferred_files"] == summary["skipped_special"] == 0


@pytest.mark.parametrize("at, message", [
    ("99999999999999999999", "is out of range"),  # overflowed before: an internal error
    ("253402300800", "is out of range"),  # 10000-01-01
    ("9" * 5000, "is out of range"),
    ("2026-11-28T06:00:00", "needs a timezone"),
    ("yesterday", "not an ISO 8601 timestamp"),
])
def test_restore_at_out_of_range_or_malformed_is_bad_input_with_json(capsys, tmp_path, at, message):
    summary = _refused(capsys, ["backup", "restore", "--from", "s3://bkt-ok/p", "--to", str(tmp_path / "out"),
                                "--region", "eu-west-1", "--at", at], message)
    assert summary["restored_files"] == 0 and summary["removed_partials"] == 0


def test_restore_to_under_a_regular_file_is_bad_input_with_json(capsys, tmp_path):
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    _refused(capsys, ["backup", "restore", "--from", "s3://bkt-ok/p", "--to", str(regular / "sub" / "dir"),
                      "--region", "eu-west-1"], "which is not a directory")
    _refused(capsys, ["backup", "restore", "--from", "s3://bkt-ok/p", "--to", str(regular),
                      "--region", "eu-west-1"], "is not a directory")
    assert regular.read_text() == "not a directory"


def test_backup_run_source_a_regular_file_is_not_a_directory_and_missing_does_not_exist(capsys, tmp_path):
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    summary = _refused(capsys, [*RUN, "--source", str(regular)], f"source {str(regular)!r} is not a directory")
    assert "does not exist" not in summary["errors"][0]
    missing = tmp_path / "missing"
    _refused(capsys, [*RUN, "--source", str(missing)], f"source directory {str(missing)!r} does not exist")
    assert regular.read_text() == "not a directory"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.one_of(st.integers(max_value=0), st.integers(min_value=36501)))
def test_property_any_retention_out_of_range_is_exit_2_with_json(capsys, tmp_path, days):
    rc, out, err = cli(capsys, *RUN, "--source", str(tmp_path), "--retention-days", str(days), "--json")
    assert rc == 2 and err.startswith("inferops: --retention-days: ") and len(err.strip().splitlines()) == 1
    assert json.loads(out)["errors"][0].startswith("--retention-days: ")


# ----------------------------------------------------------------------------------- --at property

def _ok_or_bad_input(fn, arg):
    try:
        return fn(arg)
    except BadInput as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return exc


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_property_at_any_text_is_an_aware_datetime_or_bad_input(text):
    got = _ok_or_bad_input(_parse_at, text)
    assert isinstance(got, BadInput) or (isinstance(got, datetime) and got.tzinfo is not None)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(min_value=0, max_value=10**40), st.integers(min_value=0, max_value=253402300799)))
def test_property_at_unix_seconds_exact_or_out_of_range(n):
    got = _ok_or_bad_input(_parse_at, str(n))
    if n <= 253402300799:  # 9999-12-31T23:59:59Z
        assert got == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    else:
        assert isinstance(got, BadInput) and "out of range" in str(got)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
def test_property_at_iso8601_round_trips(naive, offset_min):
    when = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert _parse_at(when.isoformat()) == when
    with pytest.raises(BadInput, match="needs a timezone"):
        _parse_at(naive.isoformat())


# ------------------------------------------------------------------------------------ URL property

_bucket = st.from_regex(r"\A[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]\Z").filter(lambda b: ".." not in b)
_prefix = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r\n"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_property_any_text_is_an_s3_uri_or_bad_input(text):
    got = _ok_or_bad_input(parse_s3_uri, text)
    if isinstance(got, S3Uri):
        assert text.startswith("s3://") and got.bucket == text[5:].partition("/")[0]
        assert not got.prefix.startswith("/") and not got.prefix.endswith("/")


@settings(max_examples=300, deadline=None)
@given(_bucket, _prefix)
def test_property_valid_s3_uris_parse_and_round_trip(bucket, prefix):
    uri = parse_s3_uri(f"s3://{bucket}/{prefix}")
    assert uri == S3Uri(bucket, prefix.strip("/"))
    assert parse_s3_uri(str(uri)) == uri
    key = uri.key("node-1/serve.log")
    assert key.endswith("node-1/serve.log") and not key.startswith("/")


@pytest.mark.parametrize("uri", ["s3://bucket\n", "s3://ok-bucket/a\nb", "s3://ok-bucket/\ud800", "s3://ok-bucket/a\0",
                                 f"s3://ok-bucket/{'k' * 1025}", "s3://a..b/x", "s3://-bad/x", "S3://ok-bucket/x"])
def test_hostile_s3_uris_are_bad_input(uri):
    with pytest.raises(BadInput, match="malformed S3 URI"):
        parse_s3_uri(uri)
