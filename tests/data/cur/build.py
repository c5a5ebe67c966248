"""Rebuild the small CUR fixtures beside this file: ``.venv/bin/python tests/data/cur/build.py``.

The same 13 line items in each column style (hand-checked totals in tests/unit/test_cost_report_read.py):
``legacy.csv.gz`` (legacy CUR CSV), ``athena.parquet`` (Parquet CUR for Athena), ``cur2.parquet``
(CUR 2.0 with real Parquet MAP columns) and ``cur2.csv.gz`` (CUR 2.0 CSV, maps as JSON objects).
``malformed.csv.gz`` is legacy CSV with 5 bad rows among 4 good ones (and no currency column: taken as USD).
Every other file carries the currency column of its style (``lineItem/CurrencyCode``,
``line_item_currency_code``), USD on every line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
COLS = ["start", "type", "usage_type", "resource", "itype", "amount", "unblended", "public", "ri_eff",
        "ri_unused_upfront", "ri_unused_recurring", "sp_eff", "sp_commit", "team"]
# start          type                       usage type                   resource  instance      amount unblended public ri_eff ri_unused(up,rec) sp_eff sp_commit team
LINES = [
    ("05-01 00", "Usage", "USE1-BoxUsage:p5.48xlarge", "i-a", "p5.48xlarge", 1, 98.32, 98.32, None, None, None, None, None, "inference"),
    ("05-01 00", "Usage", "USE1-SpotUsage:g5.12xlarge", "i-b", "g5.12xlarge", 2, 4.0, 11.344, None, None, None, None, None, "batch"),
    ("05-01 00", "DiscountedUsage", "USE1-BoxUsage:p4d.24xlarge", "i-c", "p4d.24xlarge", 1, 0.0, 32.7726, 20.0, None, None, None, None, "inference"),
    ("05-01 01", "SavingsPlanCoveredUsage", "USE1-BoxUsage:p5.48xlarge", "i-d", "p5.48xlarge", 1, 98.32, 98.32, None, None, None, 70.0, None, "training"),
    ("05-01 01", "SavingsPlanNegation", "USE1-BoxUsage:p5.48xlarge", "i-d", None, 1, -98.32, None, None, None, None, None, None, "training"),
    ("05-01 01", "Usage", "USE1-EBS:VolumeUsage.gp3", "vol-1", None, 0.5, 0.25, 0.25, None, None, None, None, None, "inference"),
    ("05-01 00", "RIFee", "USE1-HeavyUsage:p4d.24xlarge", "ri-1", None, 744, 14880.0, None, None, 0.0, 5.0, None, None, None),
    ("05-01 01", "SavingsPlanRecurringFee", "ComputeSP:1yrNoUpfront", "sp-1", None, 1, 75.0, None, None, None, None, None, 75.0, None),
    ("05-31 23", "Tax", "Tax", None, None, 0, 12.34, None, None, None, None, None, None, None),
    ("05-02 00", "Credit", "Credit", None, None, 0, -10.0, None, None, None, None, None, None, None),
    ("05-02 00", "Refund", "Refund", None, None, 0, -2.5, None, None, None, None, None, None, None),
    ("05-02 05", "Usage", "USE1-BoxUsage:g6.xlarge", "i-e", "g6.xlarge", 1, 0.8048, 0.8048, None, None, None, None, None, None),
    ("04-30 23", "Usage", "USE1-BoxUsage:g6.xlarge", "i-e", "g6.xlarge", 1, 0.8048, 0.8048, None, None, None, None, None, None),
]
LEGACY = {"start": "lineItem/UsageStartDate", "type": "lineItem/LineItemType", "usage_type": "lineItem/UsageType",
          "resource": "lineItem/ResourceId", "itype": "product/instanceType", "amount": "lineItem/UsageAmount",
          "unblended": "lineItem/UnblendedCost", "public": "pricing/publicOnDemandCost",
          "ri_eff": "reservation/EffectiveCost",
          "ri_unused_upfront": "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod",
          "ri_unused_recurring": "reservation/UnusedRecurringFee",
          "sp_eff": "savingsPlan/SavingsPlanEffectiveCost", "sp_commit": "savingsPlan/TotalCommitmentToDate",
          "team": "resourceTags/user:team"}
ATHENA = {"start": "line_item_usage_start_date", "type": "line_item_line_item_type",
          "usage_type": "line_item_usage_type", "resource": "line_item_resource_id",
          "itype": "product_instance_type", "amount": "line_item_usage_amount",
          "unblended": "line_item_unblended_cost", "public": "pricing_public_on_demand_cost",
          "ri_eff": "reservation_effective_cost",
          "ri_unused_upfront": "reservation_unused_amortized_upfront_fee_for_billing_period",
          "ri_unused_recurring": "reservation_unused_recurring_fee",
          "sp_eff": "savings_plan_savings_plan_effective_cost",
          "sp_commit": "savings_plan_total_commitment_to_date", "team": "resource_tags_user_team"}


def _when(s: str) -> datetime:
    return datetime.strptime(f"2026-{s}", "%Y-%m-%d %H").replace(tzinfo=UTC)


def _rows() -> list[dict]:
    return [dict(zip(COLS, line, strict=True)) for line in LINES]


def _write_gz_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime=0: byte-identical rebuilds
        fh.write(buf.getvalue().encode())


def _fmt(v: object) -> str:
    return "" if v is None else str(v)


def build() -> None:
    rows = _rows()
    # legacy CSV: identity/bill columns first, as AWS writes them
    header = ["identity/LineItemId", "bill/PayerAccountId", *LEGACY.values(), "lineItem/CurrencyCode"]
    body = [[f"li-{i}", "123456789012", _when(r["start"]).strftime("%Y-%m-%dT%H:%M:%SZ"),
             *(_fmt(r[c]) for c in COLS[1:]), "USD"] for i, r in enumerate(rows)]
    _write_gz_csv(HERE / "legacy.csv.gz", header, body)

    typed = pl.DataFrame([{**r, "start": _when(r["start"])} for r in rows],
                         schema={c: pl.Datetime("us", "UTC") if c == "start" else
                                 pl.String if c in ("type", "usage_type", "resource", "itype", "team")
                                 else pl.Float64 for c in COLS})
    typed = typed.with_columns(pl.lit("USD").alias("currency"))
    typed.rename({**ATHENA, "currency": "line_item_currency_code"}).write_parquet(HERE / "athena.parquet")

    tags = [[{"key": "user_team", "value": r["team"]}] if r["team"] else [] for r in rows]
    product = [[{"key": "region", "value": "us-east-1"}, {"key": "vcpu", "value": "192"}] for _ in rows]
    cur2 = (typed.drop("team").rename({**{k: v for k, v in ATHENA.items() if k != "team"},
                                       "currency": "line_item_currency_code"})
            .with_columns(pl.Series("resource_tags", tags).cast(pl.Map(pl.String, pl.String)),
                          pl.Series("product", product).cast(pl.Map(pl.String, pl.String)),
                          pl.lit("acme-payer").alias("bill_payer_account_name")))
    cur2.write_parquet(HERE / "cur2.parquet")
    csv_header = [*(v for k, v in ATHENA.items() if k != "team"), "resource_tags", "product",
                  "line_item_currency_code"]
    csv_body = [[_when(r["start"]).strftime("%Y-%m-%dT%H:%M:%S.000Z"), *(_fmt(r[c]) for c in COLS[1:-1]),
                 json.dumps({"user_team": r["team"]} if r["team"] else {}),
                 json.dumps({"region": "us-east-1"}), "USD"] for r in rows]
    _write_gz_csv(HERE / "cur2.csv.gz", csv_header, csv_body)

    bad = [
        ["2026-05-03T00:00:00Z", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "1", "0.8048", "0.8048"],
        ["2026-05-03T00:00:00Z", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "1", "abc", "0.8048"],
        ["not-a-date", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "1", "0.8048", "0.8048"],
        ["2026-05-03T01:00:00Z", "DiscountedUsage", "USE1-BoxUsage:p4d.24xlarge", "i-g", "p4d.24xlarge", "1",
         "0", "32.7726"],  # covered usage without its reservation effective cost
        ["2026-05-03T01:00:00Z", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "1", "0.8048", "x"],
        ["2026-05-03T02:00:00Z", "Tax", "Tax", "", "", "0", "1.5", ""],
        ["2026-05-03T02:00:00Z", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "1", "0.8048", ""],
        ["2026-05-03T03:00:00Z", "Tax", "", "", "", "", "0.5", ""],  # fees may have no usage type/amount
        ["2026-05-03T03:00:00Z", "Usage", "USE1-BoxUsage:g6.xlarge", "i-f", "g6.xlarge", "", "0.8048", ""],
    ]
    _write_gz_csv(HERE / "malformed.csv.gz", [LEGACY[c] for c in COLS[:8]] + ["reservation/EffectiveCost"],
                  [[*b, ""] for b in bad])


if __name__ == "__main__":
    build()
