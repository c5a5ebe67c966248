"""Data integrity of the cost report (issue 16): currencies, non-finite and absurd values, damaged parts,
and the totals against an independent DuckDB computation (benchmarks/cost_report.py's peer).

The fixture lines are those of tests/data/cur/build.py: 193.3748 amortized in 2026-05, all in USD.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import struct
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.cost_report import comparable, duckdb_summary, mismatches
from flows.common.errors import BadInput
from flows.common.runtime import run_flow
from flows.cost_report import sample
from flows.cost_report.flow import cost_report
from flows.cost_report.models import CostPolicy

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"
ONE = 193.3748
CURRENCY_COLUMN = {"legacy.csv.gz": "lineItem/CurrencyCode", "athena.parquet": "line_item_currency_code",
                   "cur2.parquet": "line_item_currency_code", "cur2.csv.gz": "line_item_currency_code"}
COST_COLUMN = {"legacy.csv.gz": "lineItem/UnblendedCost"}


@pytest.fixture(autouse=True)
def _inline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


def report(tmp_path: Path, *cur: str | Path, **kw) -> dict:
    return run_flow(cost_report, cur=[str(c) for c in cur], out=str(tmp_path / "out"), **kw)


def read(name: str) -> pl.DataFrame:
    if name.endswith(".csv.gz"):
        return pl.read_csv(DATA / name, infer_schema=False)
    return pl.read_parquet(DATA / name)


def write(df: pl.DataFrame, path: Path) -> Path:
    if path.name.endswith(".csv.gz"):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(df.columns)
        w.writerows([["" if v is None else v for v in row] for row in df.rows()])
        path.write_bytes(gzip.compress(buf.getvalue().encode()))
    else:
        df.write_parquet(path)
    return path


def with_line(name: str, path: Path, **values) -> Path:
    """The fixture plus a copy of its first line (p5 on-demand, 98.32, 2026-05-01) with ``values`` set."""
    df = read(name)
    line = df.head(1).with_columns(**{c: pl.lit(v).cast(df.schema[c]) for c, v in values.items()})
    return write(pl.concat([df, line]), path / name)


def cost_column(name: str) -> str:
    return COST_COLUMN.get(name, "line_item_unblended_cost")


# --- currencies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CURRENCY_COLUMN))
def test_a_line_in_another_currency_is_quarantined_not_summed(tmp_path, name):
    cur = with_line(name, tmp_path, **{CURRENCY_COLUMN[name]: "EUR", cost_column(name): "1000" if name.endswith(
        ".csv.gz") else 1000.0})
    s = report(tmp_path, cur, period="2026-05")
    assert s["currency"] == "USD" and s["total_cost"] == pytest.approx(ONE)
    assert s["rejected_rows"] == 1 and s["rejected_by_cause"] == {"malformed": 0, "other_currency": 1}
    assert s["other_currencies"] == {"EUR": {"lines": 1, "cost": 1000.0}}
    assert any("EUR (1 lines)" in n for n in s["notes"])
    q = pl.read_csv(tmp_path / "out" / "quarantine.csv", infer_schema=False)
    assert q["reason"].to_list() == ["currency EUR, the report is in USD"] and q["currency"].to_list() == ["EUR"]
    assert "EUR (1)" in (tmp_path / "out" / "report.html").read_text()


def test_a_cur_in_another_currency_is_reported_in_it(tmp_path):
    cur = write(read("athena.parquet").with_columns(line_item_currency_code=pl.lit("EUR")), tmp_path / "eur.parquet")
    s = report(tmp_path, cur, period="2026-05")
    assert s["currency"] == "EUR" and s["total_cost"] == pytest.approx(ONE) and s["rejected_rows"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "All amounts are in <b>EUR</b>" in html and f"EUR {ONE:,.2f}" in html and "$" not in html
    prom = (tmp_path / "out" / "inferops_cost.prom").read_text()
    assert "inferops_cost_daily_usd" not in prom and "inferops_cost_report_rejected_rows 0.0" in prom
    assert any("the report is in EUR" in n for n in s["notes"])


def test_mixed_currencies_never_add_up(tmp_path):
    usd = DATA / "athena.parquet"
    eur = write(read("athena.parquet").with_columns(line_item_currency_code=pl.lit("EUR")), tmp_path / "eur.parquet")
    s = report(tmp_path, usd, eur, period="2026-05")
    # as many lines in each: USD wins the tie, every EUR line is quarantined, nothing is converted
    assert s["currency"] == "USD" and s["total_cost"] == pytest.approx(ONE)
    assert s["other_currencies"]["EUR"]["lines"] == s["rejected_rows"] == 12  # 13 lines, 1 outside the period
    s = report(tmp_path, usd, eur, period="2026-05", policy=CostPolicy(currency="EUR"))
    assert s["currency"] == "EUR" and s["total_cost"] == pytest.approx(ONE) and s["other_currencies"]["USD"]


def test_currency_codes_are_normalised_and_blank_ones_quarantined(tmp_path):
    df = read("athena.parquet")
    codes = ["usd", " USD "] + ["USD"] * (df.height - 3) + [""]
    cur = write(df.with_columns(line_item_currency_code=pl.Series(codes)), tmp_path / "codes.parquet")
    s = report(tmp_path, cur)
    assert s["currency"] == "USD" and s["other_currencies"] == {"(missing)": {"lines": 1, "cost": 0.8048}}
    q = pl.read_csv(tmp_path / "out" / "quarantine.csv", infer_schema=False)
    assert q["reason"].to_list() == ["missing currency code"]


def test_the_policy_currency_is_validated():
    with pytest.raises(ValueError, match="ISO 4217"):
        CostPolicy(currency="euro")


# --- non-finite, absurd and out-of-range values ----------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "inf", "-inf", "1e400", "2e12"])
def test_non_finite_and_absurd_costs_are_rejected_rows(tmp_path, value):
    csv_cur = with_line("legacy.csv.gz", tmp_path, **{"lineItem/UnblendedCost": value})
    parquet_cur = with_line("athena.parquet", tmp_path, line_item_unblended_cost=float(value))
    for cur in (csv_cur, parquet_cur):
        s = report(tmp_path, cur, period="2026-05")
        assert s["total_cost"] == pytest.approx(ONE) and s["rejected_rows"] == 1
        summary = (tmp_path / "out" / "summary.json").read_text()
        assert json.loads(summary)["total_cost"] == pytest.approx(ONE) and "NaN" not in summary
        html = (tmp_path / "out" / "report.html").read_text()
        assert not re.search(r"\b(nan|inf)\b", html, re.IGNORECASE)
        q = pl.read_csv(tmp_path / "out" / "quarantine.csv", infer_schema=False)
        assert q["reason"][0].startswith("non-finite or absurd amounts")


def test_absurd_usage_amounts_and_dates_are_rejected(tmp_path):
    from datetime import UTC, datetime

    df = read("athena.parquet")
    first = df.head(1)
    bad = pl.concat([df, first.with_columns(line_item_usage_amount=pl.lit(1e300)),
                     first.with_columns(line_item_usage_start_date=pl.lit(datetime(1970, 1, 1, tzinfo=UTC))),
                     first.with_columns(line_item_usage_start_date=pl.lit(datetime(2262, 1, 1, tzinfo=UTC)))])
    s = report(tmp_path, write(bad, tmp_path / "bad.parquet"))
    assert s["rejected_rows"] == 3 and s["gpu_hours"] == 34.0  # every fixture line counts, none of the bad ones
    assert s["hours_in_period"] == 31  # usage from 04-30 23:00 to 05-02 05:00, not from 1970 to 2262
    reasons = pl.read_csv(tmp_path / "out" / "quarantine.csv", infer_schema=False)["reason"].to_list()
    assert reasons[0].startswith("non-finite or absurd") and reasons[1:] == ["usage_start outside 2000-2099"] * 2


# --- damaged parts ---------------------------------------------------------------------------------


def corrupt_pages(src: Path, dest: Path) -> Path:
    """The same Parquet with its data pages scrambled and its footer intact: the schema reads, the data
    does not."""
    buf = io.BytesIO()
    pl.read_parquet(src).write_parquet(buf, compression="zstd")
    data = bytearray(buf.getvalue())
    footer = struct.unpack("<I", data[-8:-4])[0]
    for i in range(4, len(data) - 8 - footer, 3):
        data[i] ^= 0xFF
    dest.write_bytes(bytes(data))
    assert pl.scan_parquet(dest).collect_schema()  # the footer is intact: only reading the rows fails
    return dest


def test_a_truncated_gzip_and_corrupt_pages_fail_their_part_only(tmp_path):
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes((DATA / "legacy.csv.gz").read_bytes()[:300])
    pages = corrupt_pages(DATA / "athena.parquet", tmp_path / "pages.parquet")
    s = report(tmp_path, truncated, pages, DATA / "cur2.parquet", period="2026-05")
    assert s["total_cost"] == pytest.approx(ONE) and s["input"]["files"] == 1
    failed = s["input"]["failed"]
    assert len(failed) == 2 and "truncated.csv.gz: unreadable (" in failed[0] and "pages.parquet: unreadable (" in failed[1]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["input"]["failed"] == failed


def test_nothing_readable_names_every_damaged_part(tmp_path):
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes((DATA / "legacy.csv.gz").read_bytes()[:300])
    pages = corrupt_pages(DATA / "athena.parquet", tmp_path / "pages.parquet")
    with pytest.raises(BadInput, match=r"no readable CUR: .*truncated.csv.gz: unreadable .*pages.parquet: unreadable"):
        report(tmp_path, truncated, pages)


def test_a_column_of_the_wrong_type_fails_its_file_by_name(tmp_path):
    df = read("athena.parquet").with_columns(line_item_unblended_cost=pl.col("line_item_unblended_cost")
                                             .map_elements(lambda v: [v], return_dtype=pl.List(pl.Float64)))
    s = report(tmp_path, write(df, tmp_path / "listy.parquet"), DATA / "cur2.parquet", period="2026-05")
    assert s["total_cost"] == pytest.approx(ONE)
    assert s["input"]["failed"] == [f"{tmp_path / 'listy.parquet'}: column line_item_unblended_cost is "
                                    "List(Float64), not a number"]


def test_a_part_of_another_style_among_good_ones_is_listed_not_fatal(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("date,cost\n2026-05-01,3\n")
    s = report(tmp_path, odd, DATA / "athena.parquet", period="2026-05")
    assert s["total_cost"] == pytest.approx(ONE)
    assert s["input"]["failed"] == [f"unknown CUR column style in {odd}; columns seen: date, cost"]


def test_urls_in_cur_specs_are_redacted(tmp_path):
    with pytest.raises(BadInput) as err:
        report(tmp_path, "ftp://user:hunter2@host/cur.csv", "s3://user:hunter2@bucket/cur")
    assert "hunter2" not in str(err.value)
    assert "ftp://***@host/cur.csv: not a local path or s3://bucket/prefix" in str(err.value)
    assert "malformed S3 URI" in str(err.value)


# --- the same numbers as DuckDB ---------------------------------------------------------------------


def test_every_number_matches_an_independent_duckdb_computation(tmp_path):
    """The bundled sample month (flows/cost_report/sample.py), plus hostile lines, against the DuckDB peer
    of benchmarks/cost_report.py: totals, per-model measures, fees, utilization, coverage, spot savings,
    teams, instance types, recommendations and rejected rows."""
    df = sample.generate("2026-05")
    first = df.filter(pl.col("line_item_line_item_type") == "Usage").head(1)
    hostile = pl.concat([first.with_columns(line_item_unblended_cost=pl.lit(float("nan"))),
                         first.with_columns(line_item_currency_code=pl.lit("EUR")),
                         first.with_columns(line_item_usage_amount=pl.lit(None, pl.Float64))])
    sample.write_athena_parquet(pl.concat([df, hostile]), tmp_path / "cur", parts=3)
    ours = report(tmp_path, tmp_path / "cur")
    peer = json.loads(json.dumps(duckdb_summary(f"{tmp_path / 'cur'}/*.parquet"), default=str))
    assert ours["rejected_rows"] == peer["rejected_rows"] == 3
    assert ours["recommendations"] and peer["recommendations"]
    assert mismatches(comparable(json.loads((tmp_path / "out" / "summary.json").read_text())), peer) == []


def test_metrics_are_published_through_the_shared_publisher(tmp_path):
    s = report(tmp_path, DATA / "athena.parquet", period="2026-05")
    assert s["metrics"] == {"textfile": str(tmp_path / "out" / "inferops_cost.prom"), "pushgateway": None}
    families = {f.name: f for f in text_string_to_metric_families((tmp_path / "out" / "inferops_cost.prom").read_text())}
    daily = pl.read_parquet(tmp_path / "out" / "daily.parquet")
    last = daily.filter(pl.col("date") == daily["date"].max())
    assert families["inferops_cost_daily_usd"].samples[0].value == pytest.approx(last["cost"].sum())
    assert {x.labels["pricing_model"] for x in families["inferops_cost_daily_by_model_usd"].samples} == set(
        last["pricing_model"])
    assert families["inferops_cost_report_rejected_rows"].samples[0].value == 0
