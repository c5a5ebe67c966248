"""Property tests for the CUR readers and the cost report's flags (issue 16): hostile bytes, truncations,
flipped bytes, wrong types, huge and non-finite numbers, unicode paths, periods and URLs.

The invariant is the CLI contract, checked through the real error boundary (``flows.common.cli.main``,
in process so that hypothesis can afford its examples): exit 0 with a complete report, or exit 2 with
one ``inferops:`` line; never a traceback or an internal error, never a password echoed. Bounded:
about 20 s in all on 2 cores.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import io
import json
import math
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.common.cli import main
from flows.common.errors import BadInput
from flows.cost_report.models import check_url, parse_period

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"
FIXTURES = {name: (DATA / name).read_bytes() for name in ("legacy.csv.gz", "athena.parquet", "cur2.parquet",
                                                         "cur2.csv.gz")}
LEGACY_HEADER = gzip.decompress(FIXTURES["legacy.csv.gz"]).split(b"\n", 1)[0] + b"\n"
ATHENA = pl.read_parquet(DATA / "athena.parquet")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _inline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def contract(*cur: Path | str, extra: tuple[str, ...] = (), labels: frozenset[str] = frozenset()) -> dict | None:
    """Run ``inferops cost report`` on ``cur``; assert the contract; the summary when it exit 0.

    ``labels``: strings of the input that the report may show as they are (a fee's line item type
    'INF' is a name, not a number)."""
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-out-") as tmp:
        out = Path(tmp) / "out"
        args = ["cost", "report", *(a for c in cur for a in ("--cur", str(c))), "--out", str(out), *extra]
        code, stdout, stderr = cli(*args)
        assert "Traceback" not in stderr and "internal error" not in stderr, stderr
        errors = [line for line in stderr.splitlines() if line.startswith("inferops:")]
        if code:
            assert code == 2 and len(errors) == 1, (code, stderr)
            return None
        assert not errors and stdout.startswith("cost report in "), (stdout, stderr)
        summary = json.loads((out / "summary.json").read_text())
        for key in ("total_cost", "gpu_hours", "instance_hours"):
            assert isinstance(summary[key], float | int) and math.isfinite(summary[key]), summary[key]
        assert isinstance(summary["rejected_rows"], int) and summary["rejected_rows"] >= 0
        report = (out / "report.html").read_text()
        for label in labels:  # a table cell holding an input string, escaped
            report = report.replace(f">{html.escape(label)}<", "><")
        assert not re.search(r"\b(nan|inf)\b", report, re.IGNORECASE)
        return summary


# --- hostile bytes, truncations, flipped bytes -------------------------------------------------------


@settings(FUZZ, max_examples=20)
@given(body=st.binary(max_size=600), suffix=st.sampled_from([".csv", ".csv.gz", ".parquet"]),
       with_header=st.booleans(), gzipped=st.booleans())
def test_hostile_bytes(body, suffix, with_header, gzipped):
    data = (LEGACY_HEADER if with_header and suffix != ".parquet" else b"") + body
    if gzipped and suffix == ".csv.gz":
        data = gzip.compress(data)
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-") as tmp:
        part = Path(tmp) / f"part{suffix}"
        part.write_bytes(data)
        alone = contract(part)
        with_good = contract(part, DATA / "athena.parquet")
    assert with_good is not None  # a bad part never sinks the good one
    if alone is not None:
        assert with_good["input"]["files"] == alone["input"]["files"] + 1


@settings(FUZZ, max_examples=30)
@given(name=st.sampled_from(sorted(FIXTURES)), data=st.data())
def test_truncated_and_flipped_parts(name, data):
    raw = bytearray(FIXTURES[name])
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8), label="flips"):
            raw[at] ^= data.draw(st.integers(1, 255), label="xor")
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-") as tmp:
        part = Path(tmp) / name
        part.write_bytes(bytes(raw))
        s = contract(part, DATA / "cur2.parquet", extra=("--period", "2026-05"))
    assert s is not None  # a damaged part never sinks the good one


# --- hostile values and wrong types ------------------------------------------------------------------

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e400, -1e300, 1e12, 5e-324]))
TEXT = st.text(max_size=30)
DATES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC))
WRONG = st.sampled_from([pl.Boolean, pl.Int8, pl.List(pl.Float64), pl.Binary, pl.Struct({"a": pl.Int64}), pl.Date])


def _values(data, dtype: pl.DataType, n: int) -> pl.Series:
    if dtype == pl.Float64:
        return pl.Series(data.draw(st.lists(st.one_of(FLOATS, st.none()), min_size=n, max_size=n)), dtype=pl.Float64)
    if isinstance(dtype, pl.Datetime):
        return pl.Series(data.draw(st.lists(st.one_of(DATES, st.none()), min_size=n, max_size=n)),
                         dtype=pl.Datetime("us", "UTC"))
    return pl.Series(data.draw(st.lists(st.one_of(TEXT, st.none()), min_size=n, max_size=n)), dtype=pl.String)


def _wrong(dtype: pl.DataType, n: int) -> pl.Series:
    sample = {pl.Boolean: True, pl.Int8: 7, pl.Binary: b"\xff\x00", pl.Date: datetime(2026, 5, 1).date()}
    if dtype == pl.List(pl.Float64):
        return pl.Series([[1.5]] * n, dtype=dtype)
    if isinstance(dtype, pl.Struct):
        return pl.Series([{"a": 1}] * n, dtype=dtype)
    return pl.Series([sample[dtype]] * n, dtype=dtype)


@settings(FUZZ, max_examples=40)
@given(data=st.data(), fmt=st.sampled_from(["parquet", "csv"]))
def test_hostile_values_and_wrong_types(data, fmt):
    df = ATHENA
    for col in data.draw(st.lists(st.sampled_from(df.columns), max_size=4, unique=True), label="columns"):
        wrong = fmt == "parquet" and data.draw(st.booleans(), label="wrong type")
        series = _wrong(data.draw(WRONG), df.height) if wrong else _values(data, df.schema[col], df.height)
        df = df.with_columns(series.alias(col))
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-") as tmp:
        part = Path(tmp) / f"values.{fmt}"
        if fmt == "parquet":
            df.write_parquet(part)
        else:
            df.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(part)
        strings = frozenset(v for c, t in df.schema.items() if t == pl.Utf8 for v in df[c].drop_nulls() if v)
        s = contract(part, labels=strings)
    if s is not None:  # every line is either counted or quarantined, never silently dropped
        assert s["rejected_rows"] <= df.height


# --- unicode paths -----------------------------------------------------------------------------------

NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                min_size=1, max_size=40).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)


@settings(FUZZ, max_examples=15)
@given(folder=NAMES, stem=NAMES, name=st.sampled_from(sorted(FIXTURES)))
def test_unicode_paths(folder, stem, name):
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-") as tmp:
        where = Path(tmp) / folder
        where.mkdir()
        part = where / f"{stem}.{name.split('.', 1)[1]}"
        part.write_bytes(FIXTURES[name])
        s = contract(where, extra=("--period", "2026-05"))
    assert s is not None and s["total_cost"] == pytest.approx(193.3748)


def test_undecodable_path_bytes_are_shown_escaped(tmp_path):
    raw = bytes(tmp_path) + b"/cur-\xff\xfe.parquet"
    Path(raw.decode("utf-8", "surrogateescape")).write_bytes(FIXTURES["athena.parquet"])
    broken = Path(raw.decode("utf-8", "surrogateescape")).with_name("broken-\udcff.parquet")
    broken.write_bytes(b"not parquet")
    s = contract(tmp_path, extra=("--period", "2026-05"))
    assert s["total_cost"] == pytest.approx(193.3748)
    assert s["input"]["failed"] and "broken-\\udcff.parquet: unreadable" in s["input"]["failed"][0]


# --- periods and URLs ----------------------------------------------------------------------------------

PERIODS = st.one_of(st.text(max_size=12),
                    st.builds("{:04d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 99)),
                    st.builds("{}-{}".format, st.integers(-10**6, 10**6), st.integers(-10**3, 10**3)))


@settings(max_examples=300, deadline=None)
@given(PERIODS)
def test_periods_parse_or_are_one_line_bad_input(period):
    try:
        window = parse_period(period)
    except BadInput as exc:
        assert "\n" not in str(exc) and str(exc).startswith("bad --period")
        return
    start, end = window
    assert start < end and start.day == end.day == 1 and (end - start).days in (28, 29, 30, 31)


SECRET = "Pa55-w0rd-s3cr3t"
URLS = st.builds(
    "{}://{}{}{}{}".format,
    st.sampled_from(["http", "https", "ftp", "file", "s3", "HTTP", ""]),
    st.sampled_from(["", f"user:{SECRET}@", f":{SECRET}@", f"u%40x:{SECRET}@"]),
    st.one_of(st.sampled_from(["127.0.0.1", "prometheus.example", "[::1]", "[::1", "", "ex ample", "höst"]),
              st.text(max_size=10)),
    st.one_of(st.just(""), st.builds(":{}".format, st.one_of(st.integers(-5, 10**6), st.text(max_size=5)))),
    st.sampled_from(["", "/", "/api", "/x?y=1#z", "/\n"]))


@settings(max_examples=300, deadline=None)
@given(URLS)
def test_prometheus_urls_are_valid_or_bad_input_without_the_password(url):
    try:
        assert check_url(url) == url
    except BadInput as exc:
        assert "\n" not in str(exc) and str(exc).startswith("bad --prometheus") and SECRET not in str(exc)
        return
    assert url.lower().startswith(("http://", "https://"))


LOOPBACK_URLS = st.builds(  # through the whole command only loopback (or no host at all) may be dialled
    "{}://{}{}{}".format, st.sampled_from(["http", "https", "ftp", ""]),
    st.sampled_from(["", f"user:{SECRET}@"]), st.sampled_from(["127.0.0.1", "[::1]", "[::1", "", "ex ample"]),
    st.one_of(st.just(""), st.builds(":{}".format, st.one_of(st.integers(-5, 10**6), st.text(max_size=5)))))


@settings(FUZZ, max_examples=25)
@given(url=LOOPBACK_URLS, period=PERIODS)
def test_flags_through_the_cli(url, period):
    """The same flags through the whole command: a contract exit, and no password anywhere in its output."""
    with tempfile.TemporaryDirectory(prefix="cost-fuzz-out-") as tmp:
        code, stdout, stderr = cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", f"{tmp}/o",
                                   "--period", period, "--prometheus", url)
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert SECRET not in stdout + stderr
    if code:
        assert code == 2 and len([x for x in stderr.splitlines() if x.startswith("inferops:")]) == 1
