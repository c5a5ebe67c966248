"""CUR readers: find the parts, detect the column style, normalise to one schema. No Prefect import.

Three column styles are read:

* ``legacy``: the legacy CUR CSV (``lineItem/LineItemType``, ``resourceTags/user:team``);
* ``athena``: the Parquet CUR for Athena (``line_item_line_item_type``, ``resource_tags_user_team``);
* ``cur2``: CUR 2.0 Data Exports (snake-case static columns plus the map columns ``resource_tags``
  and ``product``; maps are real Parquet maps, or JSON objects in a CSV export).

Every style becomes the internal schema below. Values that do not parse are never dropped: the row
gets a ``reason`` and goes to the quarantine query instead of the valid one. So do non-finite and
absurd numbers (NaN, inf, 1e400, magnitudes adding up to more than :data:`MAX_ABS_VALUE` on one line) and dates outside the years a CUR can
carry. A file that cannot be read at all (truncated gzip, corrupt Parquet, a column of the wrong type)
is listed in ``Sources.failed`` with its reason, and the report covers the rest.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from flows.common.errors import BadInput
from flows.common.s3 import parse_s3_uri, s3_client
from flows.cost_report.models import FIRST_YEAR, LAST_YEAR

CUR_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".snappy.parquet", ".gz.parquet")

STRING_COLS = ("line_item_type", "usage_type", "resource_id", "instance_type", "team", "currency")
FLOAT_COLS = ("usage_amount", "unblended_cost", "public_on_demand_cost", "reservation_effective_cost",
              "ri_unused_upfront", "ri_unused_recurring", "sp_effective_cost", "sp_commitment")
REQUIRED = ("usage_start", "line_item_type", "usage_type", "usage_amount", "unblended_cost")  # columns
REQUIRED_VALUES = ("usage_start", "line_item_type", "unblended_cost")  # on every row (Tax may lack a usage type)
USAGE_TYPES = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")
INTERNAL_SCHEMA = {"usage_start": pl.Datetime("us", "UTC"),
                   **{c: pl.String for c in STRING_COLS}, **{c: pl.Float64 for c in FLOAT_COLS}}
# one line item whose amounts (costs and usage, in any currency) add up beyond this is absurd: quarantined,
# never summed, so no sum can overflow to inf (a month of a large fleet is ~1e8 lines)
MAX_ABS_VALUE = 1e12
ASSUMED_CURRENCY = "USD"  # a CUR without a currency column (AWS bills in USD unless told otherwise)
DATES = (datetime(FIRST_YEAR, 1, 1, tzinfo=UTC), datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC))
# what reading a damaged or hostile file can raise (zlib/EOF: truncated gzip; Panic: a polars bug on
# hostile bytes, which must still fail only that file)
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, zlib.error, csv.Error, pl.exceptions.PolarsError, pl.exceptions.PanicException)

_ATHENA = {
    "usage_start": "line_item_usage_start_date",
    "line_item_type": "line_item_line_item_type",
    "usage_type": "line_item_usage_type",
    "resource_id": "line_item_resource_id",
    "instance_type": "product_instance_type",
    "usage_amount": "line_item_usage_amount",
    "unblended_cost": "line_item_unblended_cost",
    "public_on_demand_cost": "pricing_public_on_demand_cost",
    "reservation_effective_cost": "reservation_effective_cost",
    "ri_unused_upfront": "reservation_unused_amortized_upfront_fee_for_billing_period",
    "ri_unused_recurring": "reservation_unused_recurring_fee",
    "sp_effective_cost": "savings_plan_savings_plan_effective_cost",
    "sp_commitment": "savings_plan_total_commitment_to_date",
    "currency": "line_item_currency_code",  # the same name in CUR 2.0
}
_LEGACY = {
    "usage_start": "lineItem/UsageStartDate",
    "line_item_type": "lineItem/LineItemType",
    "usage_type": "lineItem/UsageType",
    "resource_id": "lineItem/ResourceId",
    "instance_type": "product/instanceType",
    "usage_amount": "lineItem/UsageAmount",
    "unblended_cost": "lineItem/UnblendedCost",
    "public_on_demand_cost": "pricing/publicOnDemandCost",
    "reservation_effective_cost": "reservation/EffectiveCost",
    "ri_unused_upfront": "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod",
    "ri_unused_recurring": "reservation/UnusedRecurringFee",
    "sp_effective_cost": "savingsPlan/SavingsPlanEffectiveCost",
    "sp_commitment": "savingsPlan/TotalCommitmentToDate",
    "currency": "lineItem/CurrencyCode",
}
# columns only CUR 2.0 has: its map columns and the account-name columns it added
CUR2_MARKERS = {"resource_tags", "product", "cost_category", "discount", "bill_payer_account_name",
                "line_item_usage_account_name"}
_DT_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


@dataclass
class CurFile:
    path: Path
    name: str  # what the user knows it as: the local path or the s3:// key (display-safe)
    style: str
    fmt: str  # csv | parquet
    schema: dict[str, pl.DataType]


@dataclass
class Sources:
    files: list[CurFile] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "NAME: why", never silently skipped
    missing_columns: set[str] = field(default_factory=set)  # optional internal columns absent somewhere

    def fail(self, f: CurFile, exc: BaseException) -> None:
        """``f`` turned out unreadable while its rows were read: out of ``files``, into ``failed``."""
        self.files.remove(f)
        self.failed.append(f"{f.name}: unreadable ({reason(exc)})")


_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def display(text: str) -> str:
    """A name safe to show and to write as UTF-8: URL credentials redacted, undecodable bytes
    (surrogate escapes) and control characters backslash-escaped."""
    if "://" in text:
        try:
            from flows.common.prom import redact_url  # lazy: httpx is only needed with Prometheus

            text = redact_url(text)
        except ValueError:  # not even a URL urllib can split: show the scheme only
            text = text.partition("://")[0][:20] + "://…"
        # and whatever still looks like user:password@ after "://" in a shape urllib does not parse
        text = _USERINFO.sub("***@", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def reason(exc: BaseException) -> str:
    """One line of at most 200 characters saying why reading failed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return display(text)[:200]


def list_local(spec: str) -> list[tuple[Path, str]]:
    p = Path(spec)
    if p.is_file():
        return [(p, display(spec))]
    if p.is_dir():
        return [(f, display(str(f))) for f in sorted(p.rglob("*")) if f.is_file() and f.name.endswith(CUR_SUFFIXES)]
    raise FileNotFoundError(spec)


def _readable(path: Path, workdir: Path) -> Path:
    """``path``, or for a name that is not valid UTF-8 (which polars cannot open) a link to it in
    ``workdir`` under a plain name; the report still shows the original name, escaped."""
    try:
        str(path).encode("utf-8")
        return path
    except UnicodeEncodeError:
        workdir.mkdir(parents=True, exist_ok=True)
        suffix = max((s for s in CUR_SUFFIXES if path.name.endswith(s)), key=len, default="")
        link = workdir / f"{uuid.uuid4().hex[:12]}{suffix}"
        link.symlink_to(path.absolute())
        return link


def _fmt(name: str) -> str:
    return "parquet" if name.endswith(".parquet") else "csv"


def read_schema(path: Path, fmt: str) -> dict[str, pl.DataType]:
    """Column names and types without reading the data (CSV: the header line; all strings)."""
    if fmt == "parquet":
        return dict(pl.scan_parquet(path, glob=False).collect_schema())  # a name is never a pattern
    opener: Callable[..., io.TextIOBase] = gzip.open if path.name.endswith(".gz") else open  # type: ignore[assignment]
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise ValueError("empty file, no header")
    return {c: pl.String for c in header}


def detect_style(columns: list[str], name: str) -> str:
    cols = set(columns)
    if "lineItem/LineItemType" in cols:
        style = "legacy"
    elif "line_item_line_item_type" in cols:
        style = "cur2" if CUR2_MARKERS & cols else "athena"
    else:
        shown = ", ".join(display(c)[:60] for c in columns[:25]) + (
            f", … ({len(columns)} in all)" if len(columns) > 25 else "")
        raise BadInput(f"unknown CUR column style in {name}; columns seen: {shown or '(none)'}")
    mapping = _LEGACY if style == "legacy" else _ATHENA
    missing = [mapping[c] for c in REQUIRED if mapping[c] not in cols]
    if missing:
        raise BadInput(f"{style} CUR {name} lacks required columns {', '.join(missing)}")
    return style


def _kind_ok(internal: str, dtype: pl.DataType) -> bool:
    if dtype == pl.String or dtype == pl.Null:
        return True
    if internal == "usage_start":
        return isinstance(dtype, pl.Datetime | pl.Date)
    if internal in FLOAT_COLS:
        return dtype.is_numeric()
    return isinstance(dtype, pl.Categorical | pl.Enum)


def check_types(f: CurFile, team_tag: str) -> None:
    """A typed (Parquet) column of a type that cannot hold its values fails the file, by name."""
    for internal, src in _source_exprs(f, team_tag).items():
        if src is None:
            continue
        col, dtype = src[2], f.schema[src[2]]
        if col in ("resource_tags", "product"):  # CUR 2.0 maps: a Parquet MAP, or JSON text
            ok = isinstance(dtype, pl.Map) or dtype == pl.String
        else:
            ok = _kind_ok(internal, dtype)
        if not ok:
            raise BadInput(f"{f.name}: column {display(col)} is {dtype}, not a "
                           f"{'date' if internal == 'usage_start' else 'number' if internal in FLOAT_COLS else 'string'}")


def gather(specs: list[str], workdir: Path, *, region: str, endpoint_url: str | None = None,
           team_tag: str = "team") -> Sources:
    """Local files/folders and ``s3://`` prefixes -> detected CUR files (S3 parts are downloaded to
    ``workdir`` one at a time, so memory stays bounded). BadInput when nothing is readable."""
    sources = Sources()
    for spec in specs:
        failures = len(sources.failed)
        shown = display(spec)
        try:
            if spec.startswith("s3://"):
                paths = _download_s3(spec, workdir, region, endpoint_url, sources)
            elif "://" in spec:
                sources.failed.append(f"{shown}: not a local path or s3://bucket/prefix")
                continue
            else:
                paths = [(_readable(path, workdir), name) for path, name in list_local(spec)]
        except FileNotFoundError:
            sources.failed.append(f"{shown}: no such file or folder")
            continue
        except BadInput:  # a malformed s3:// URI (its message would repeat the URI as given)
            sources.failed.append(f"{shown}: malformed S3 URI (expected s3://BUCKET[/PREFIX])")
            continue
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a folder we may not read
            sources.failed.append(f"{shown}: {reason(exc)}")
            continue
        if not paths and len(sources.failed) == failures:
            sources.failed.append(f"{shown}: no CUR parts ({', '.join(CUR_SUFFIXES)})")
        inspect_files(paths, sources, team_tag)
    if not sources.files:
        raise nothing_readable(sources)
    return sources


def nothing_readable(sources: Sources) -> BadInput:
    """No file could be read: one line naming each failed input (each failure names its input)."""
    more = len(sources.failed) - 5
    return BadInput("no readable CUR: " + ("; ".join(sources.failed[:5]) or "no --cur given")
                    + (f" (+{more} more)" if more > 0 else ""))


def _download_s3(spec: str, workdir: Path, region: str, endpoint_url: str | None,
                 sources: Sources) -> list[tuple[Path, str]]:
    from botocore.exceptions import BotoCoreError, ClientError

    uri = parse_s3_uri(spec)
    out: list[tuple[Path, str]] = []
    try:  # CUR buckets live where billing put them: talk to the bucket's own region
        located = s3_client(region, endpoint_url=endpoint_url).get_bucket_location(Bucket=uri.bucket)
        where = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(located.get("LocationConstraint"),
                                                                          located.get("LocationConstraint"))
        client = s3_client(where, endpoint_url=endpoint_url)
        single = uri.prefix.endswith(CUR_SUFFIXES)  # one object named in full, else a "folder"
        prefix = uri.prefix if single or not uri.prefix else uri.prefix + "/"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        sources.failed.append(f"{display(spec)}: cannot list ({reason(exc)})")
        return out
    workdir.mkdir(parents=True, exist_ok=True)
    for key in (k for k in keys if k.endswith(CUR_SUFFIXES)):  # not the manifests
        dest = workdir / f"{uuid.uuid4().hex[:12]}-{Path(key).name}"
        try:
            client.download_file(uri.bucket, key, str(dest))
        except (BotoCoreError, ClientError) as exc:
            sources.failed.append(f"{display(f's3://{uri.bucket}/{key}')}: download failed ({reason(exc)})")
            continue
        out.append((dest, display(f"s3://{uri.bucket}/{key}")))
    return out


def inspect_files(paths: list[tuple[Path, str]], sources: Sources, team_tag: str = "team") -> None:
    """Detect each readable file's style and check its column types; a file that fails either is
    recorded in ``sources.failed`` (with the reason) and the rest go on."""
    for path, name in paths:
        fmt = _fmt(path.name)
        try:
            schema = read_schema(path, fmt)
            f = CurFile(path, name, detect_style(list(schema), name), fmt, schema)
            check_types(f, team_tag)
        except BadInput as exc:  # an unknown style or a wrong column type: names the file already
            sources.failed.append(str(exc))
            continue
        except READ_ERRORS as exc:
            sources.failed.append(f"{name}: unreadable ({reason(exc)})")
            continue
        sources.files.append(f)


# --- normalisation -------------------------------------------------------------------------------


def _blank_to_null(e: pl.Expr) -> pl.Expr:
    e = e.cast(pl.String).str.strip_chars()
    return pl.when(e == "").then(None).otherwise(e)


def _parse_float(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_numeric():
        return raw.cast(pl.Float64)
    return _blank_to_null(raw).cast(pl.Float64, strict=False)


def _parse_datetime(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        e = raw if dtype.time_unit == "us" else raw.cast(pl.Datetime("us", dtype.time_zone))
        if dtype.time_zone == "UTC":
            return e
        return e.dt.convert_time_zone("UTC") if dtype.time_zone else e.dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    # CUR timestamps are UTC: 2026-05-01T00:00:00Z, …00.000Z, "2026-05-01 00:00:00", +00:00
    s = _blank_to_null(raw).str.replace(r"(Z|[+-]00:?00)$", "").str.replace("T", " ")
    parsed = pl.coalesce([s.str.to_datetime(format=f, strict=False, time_unit="us") for f in _DT_FORMATS])
    return parsed.dt.replace_time_zone("UTC")


def _source_exprs(f: CurFile, team_tag: str) -> dict[str, tuple[pl.Expr, pl.DataType, str] | None]:
    """Internal column -> (expression over the file's columns, its dtype, the column read), or None."""
    mapping = _LEGACY if f.style == "legacy" else _ATHENA
    out: dict[str, tuple[pl.Expr, pl.DataType, str] | None] = {}
    for internal, col in mapping.items():
        out[internal] = (pl.col(col), f.schema[col], col) if col in f.schema else None
    tag_col = {"legacy": f"resourceTags/user:{team_tag}", "athena": f"resource_tags_user_{team_tag}"}
    if f.style in tag_col:
        col = tag_col[f.style]
        out["team"] = (pl.col(col), f.schema[col], col) if col in f.schema else None
    else:  # CUR 2.0: map columns (Parquet MAP, or a JSON object in CSV)
        out["team"] = _map_get(f, "resource_tags", f"user_{team_tag}")
        if out["instance_type"] is None:
            out["instance_type"] = _map_get(f, "product", "instance_type")
    return out


def _map_get(f: CurFile, col: str, key: str) -> tuple[pl.Expr, pl.DataType, str] | None:
    dtype = f.schema.get(col)
    if dtype is None:
        return None
    if not isinstance(dtype, pl.Map):  # JSON text (CSV), or a wrong type that check_types refuses
        return pl.col(col).cast(pl.String).str.json_path_match(f"$.{key}"), pl.String, col
    return pl.col(col).map.get(key), pl.String, col


def currency_code(raw: pl.Expr) -> pl.Expr:
    """The currency code as reported: trimmed, upper case, blank -> null. The cube applies it to its few
    groups (lines are grouped by the raw value); the quarantine pass to each line."""
    return _blank_to_null(raw).str.to_uppercase()


@dataclass
class Normalised:
    """One CUR file in the internal schema.

    ``rows``: every line, with a boolean ``rejected`` (malformed, non-finite, absurd); ``quarantine(c)``:
    the lines to quarantine once the report currency ``c`` is known (the rejected ones, and every line
    in another currency), as raw strings with ``source``, ``row`` and ``reason``.
    """

    file: CurFile
    rows: pl.LazyFrame
    _lf: pl.LazyFrame
    _first_row: int
    _raw: list[pl.Expr]
    _problems: list[tuple[pl.Expr, str]]
    _currency: pl.Expr
    _start: pl.Expr

    def quarantine(self, currency: str, period: tuple[datetime, datetime] | None) -> pl.LazyFrame:
        code = self._currency
        other = code.is_null() | (code != currency)
        if period is not None:  # lines outside the period are out of the report, whatever their currency
            other = other & self._start.is_between(*period, closed="left")
        other_why = (pl.when(code.is_null()).then(pl.lit("missing currency code"))
                     .otherwise(pl.format("currency {}, the report is in {}", code, pl.lit(currency))))
        bad = pl.any_horizontal([cond for cond, _ in self._problems] + [other]).fill_null(False)
        why = [pl.when(cond).then(pl.lit(text)) for cond, text in self._problems] + [pl.when(other).then(other_why)]
        return (self._lf.with_row_index("row", offset=self._first_row).filter(bad)
                .select(pl.lit(self.file.name).alias("source"), "row", *self._raw,
                        pl.concat_str(why, separator="; ", ignore_nulls=True).alias("reason")))


def normalise(f: CurFile, team_tag: str, missing: set[str]) -> Normalised:
    """Every row of ``f`` in the internal schema plus ``rejected`` (see :class:`Normalised`).

    Typed (Parquet) columns need no parsing, so their checks are cheap null and range tests; text (CSV)
    columns are parsed, and a value that is there but does not parse rejects the row.
    """
    if f.fmt == "parquet":
        lf, first_row = pl.scan_parquet(f.path, glob=False), 1
    else:  # the header is line 1, so data row N is file line N + 1
        lf, first_row = pl.scan_csv(f.path, infer_schema=False, encoding="utf8-lossy", glob=False,
                                    truncate_ragged_lines=True), 2
    srcs = _source_exprs(f, team_tag)
    parsed: dict[str, pl.Expr] = {}
    raw: list[pl.Expr] = []
    problems: list[tuple[pl.Expr, str]] = []  # (row is bad, why)
    for name, dtype in INTERNAL_SCHEMA.items():
        src = srcs.get(name)
        if src is None:
            missing.add(name)
            parsed[name] = pl.lit(ASSUMED_CURRENCY if name == "currency" else None, dtype)
            raw.append(pl.lit(None, pl.String).alias(name))
            continue
        expr, sdtype, _ = src
        if name == "usage_start":
            value = _parse_datetime(expr, sdtype)
            # (null compares to null: a missing date is its own problem below; any_horizontal ignores it)
            problems.append((~value.is_between(*DATES, closed="left"), f"usage_start outside {FIRST_YEAR}-{LAST_YEAR}"))
        elif name in FLOAT_COLS:
            value = _parse_float(expr, sdtype)
            if not sdtype.is_numeric() and name not in REQUIRED_VALUES:
                problems.append((_blank_to_null(expr).is_not_null() & value.is_null(), f"bad {name}"))
        elif f.fmt == "csv" and name != "currency":
            value = _blank_to_null(expr)
        else:  # typed strings: "" stays "" here and becomes null after aggregation (measures.classified)
            value = expr.cast(pl.String)
        parsed[name] = value
        raw.append(expr.cast(pl.String).alias(name))
        if name in REQUIRED_VALUES:
            missing_value = value.is_null() | (value == "") if name in STRING_COLS else value.is_null()
            problems.append((missing_value, f"missing or bad {name}"))
    # NaN, inf (1e400 parses to inf) and absurd sizes, in one test per line: NaN and inf carry through the
    # sum of magnitudes (nulls are skipped), and no line's amounts may add up to more than MAX_ABS_VALUE
    magnitude = pl.sum_horizontal([parsed[c].abs() for c in FLOAT_COLS if srcs.get(c) is not None])
    problems.append((~(magnitude <= MAX_ABS_VALUE), f"non-finite or absurd amounts (NaN, inf, or |sum| > {MAX_ABS_VALUE:g})"))
    # usage lines need their amount; the amortized cost of covered usage lives in its own column
    problems.append((parsed["line_item_type"].is_in(USAGE_TYPES) & parsed["usage_amount"].is_null(),
                     "usage line without usage_amount"))
    for line_type, name in (("DiscountedUsage", "reservation_effective_cost"),
                            ("SavingsPlanCoveredUsage", "sp_effective_cost")):
        problems.append(((parsed["line_item_type"] == line_type) & parsed[name].is_null(),
                         f"{line_type} without {name}"))
    bad = pl.any_horizontal([cond for cond, _ in problems]).fill_null(False)
    rows = lf.select(**parsed, rejected=bad)
    return Normalised(f, rows, lf, first_row, raw, problems, currency_code(parsed["currency"]),
                      parsed["usage_start"])
