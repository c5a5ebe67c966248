"""Cost-report policy (the flow's UI form) and the classification vocabulary. No Prefect import."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.common.errors import BadInput

# AWS's rules (measures.pricing_model): Usage -> spot (usage type has SpotUsage) or on_demand,
# DiscountedUsage -> reserved, SavingsPlanCoveredUsage -> savings_plan; every other line item type
# (RIFee, SavingsPlan fees and negation, Tax, Credit, Refund, ...) is a fee or adjustment
PRICING_MODELS: tuple[str, ...] = ("on_demand", "spot", "reserved", "savings_plan")

_TAG = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)
_PERIOD = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)  # ISO 4217 (fullmatch)
# usage dates a CUR can carry: AWS bills since 2006; a line outside [FIRST_YEAR, LAST_YEAR] is absurd
# (quarantined), and so is a --period outside it (bad input)
FIRST_YEAR, LAST_YEAR = 2000, 2099


class CostPolicy(BaseModel):
    """How the report classifies and what it recommends."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    team_tag: str = Field("team", description="User cost-allocation tag holding the team (the TAG of user:TAG)")
    batch_teams: list[str] = Field(
        default_factory=lambda: ["batch"],
        description="Teams whose GPU work is interruptible batch (candidates for spot)")
    floor_percentile: float = Field(
        10.0, ge=0, le=50, description="Percentile of hourly on-demand instances taken as the steady floor")
    default_commitment_discount: float = Field(
        0.30, ge=0, lt=1, description="RI/SP discount vs on-demand when the CUR shows none to measure")
    default_spot_discount: float = Field(
        0.60, ge=0, lt=1, description="Spot discount vs on-demand when the CUR carries no public price")
    idle_util_threshold: float = Field(
        5.0, ge=0, le=100, description="A GPU-hour with mean DCGM_FI_DEV_GPU_UTIL below this % is idle")
    node_label: str = Field(
        "instance_id", description="DCGM series label holding the EC2 instance id (CUR resource id)")
    currency: str = Field(
        "auto", description="Report currency (ISO 4217, e.g. USD), or auto: the currency of most line items. "
                            "Lines in any other currency are quarantined, never summed")

    @field_validator("team_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not _TAG.fullmatch(v):
            raise ValueError(f"tag key {v!r}: letters, digits and _ only")
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v != "auto" and not CURRENCY.fullmatch(v):
            raise ValueError(f"currency {v!r}: auto or an ISO 4217 code such as USD")
        return v


_HOST = re.compile(r"[A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.]+\]", re.ASCII)


def check_url(url: str | None, flag: str = "--prometheus", *, echo: bool = True) -> str | None:
    """An http(s)://HOST[:PORT][/path] URL, or BadInput naming ``flag`` (where the value came from:
    a flag, or a setting); never echoes credentials, and with ``echo=False`` (a setting) not the value."""
    if not url:
        return None
    from urllib.parse import urlsplit

    from flows.cost_report.read import display  # redacts user:password, whatever the URL's shape

    subject = f"bad {flag} {display(url)[:200]!r}" if echo else f"bad {flag}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port out of range or not a number
    except ValueError as exc:
        raise BadInput(f"{subject}: {exc}") from None
    netloc_host = parts.netloc.rpartition("@")[2]
    host = netloc_host.rsplit(":", 1)[0] if not netloc_host.endswith("]") else netloc_host
    if (parts.scheme not in ("http", "https") or not parts.hostname or not _HOST.fullmatch(host)
            or any(c.isspace() or not c.isprintable() for c in url)):
        raise BadInput(f"{subject} (expected http(s)://HOST:PORT)")
    return url


def parse_period(period: str | None) -> tuple[datetime, datetime] | None:
    """``YYYY-MM`` -> [start, end) in UTC; BadInput on anything else."""
    if period is None:
        return None
    m = _PERIOD.fullmatch(period.strip())
    if not m or not 1 <= int(m.group(2)) <= 12 or not FIRST_YEAR <= int(m.group(1)) <= LAST_YEAR:
        raise BadInput(f"bad --period {period[:40]!r} (expected YYYY-MM from {FIRST_YEAR}-01 to {LAST_YEAR}-12, "
                       "e.g. 2026-05)")
    year, month = int(m.group(1)), int(m.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end
