"""Cost-report policy (the flow's UI form) and the classification vocabulary. No Prefect import."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_validator

from flows.common.errors import BadInput

# AWS's rules (measures.pricing_model): Usage -> spot (usage type has SpotUsage) or on_demand,
# DiscountedUsage -> reserved, SavingsPlanCoveredUsage -> savings_plan; every other line item type
# (RIFee, SavingsPlan fees and negation, Tax, Credit, Refund, ...) is a fee or adjustment
PRICING_MODELS: tuple[str, ...] = ("on_demand", "spot", "reserved", "savings_plan")

_TAG = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


class CostPolicy(BaseModel):
    """How the report classifies and what it recommends."""

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

    @field_validator("team_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not _TAG.match(v):
            raise ValueError(f"tag key {v!r}: letters, digits and _ only")
        return v


def parse_period(period: str | None) -> tuple[datetime, datetime] | None:
    """``YYYY-MM`` -> [start, end) in UTC; BadInput on anything else."""
    if period is None:
        return None
    m = _PERIOD.match(period.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise BadInput(f"bad --period {period!r} (expected YYYY-MM, e.g. 2026-05)")
    year, month = int(m.group(1)), int(m.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end
