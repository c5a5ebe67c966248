"""Policies and data of the idle-GPU room, as pydantic models (they are the flow's UI form too).

No Prefect import here: the CLI, the flow and the benchmark share these.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

# a Kubernetes DNS-1123 label; Job names get a suffix, so keep room for it
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NAME_MAX = 40


def check_label_value(v: str, what: str) -> str:
    if len(v) > 63 or not _LABEL_VALUE.match(v):
        raise ValueError(f"{what} {v!r} is not a valid Kubernetes label value")
    return v


class OfflineJob(BaseModel):
    """One offline job of the queue: an evaluation run, an embedding backfill, a calibration run..."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="DNS-1123 label, unique in the queue (at most 40 characters)")
    image: str = Field(min_length=1, description="container image")
    command: list[str] = Field(min_length=1, description="container command (argv; no shell)")
    gpus: int = Field(ge=1, le=8, description="GPUs per pod (the pod runs on one node)")
    estimated_hours: float = Field(gt=0, le=24, description="estimated run time on its GPUs")
    priority: int = Field(0, description="higher runs first")
    checkpointable: bool = Field(False, description="can resume after preemption from a checkpoint")
    deadline: datetime | None = Field(None, description="must finish by then (timezone-aware)")
    team: str = Field("unassigned", description="cost attribution (label inferops.io/team)")
    cost_center: str = Field("unassigned", description="cost attribution (label inferops.io/cost-center)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > NAME_MAX or not _NAME.match(v):
            raise ValueError(f"job name {v!r} must be a DNS-1123 label of at most {NAME_MAX} characters")
        return v

    @field_validator("team", "cost_center")
    @classmethod
    def _labels(cls, v: str) -> str:
        return check_label_value(v, "cost label")

    @field_validator("deadline")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("deadline needs a timezone (e.g. 2026-11-28T06:00:00+00:00)")
        return v

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.estimated_hours


class NodeCapacity(BaseModel):
    """A GPU node as seen now: allocatable GPUs, those requested by pods, and those idle."""

    name: str
    product: str = "unknown"
    allocatable: int = Field(ge=0)
    requested: int = Field(0, ge=0, description="GPUs requested by running/bound pods")
    idle: int = Field(ge=0, description="free in Kubernetes and low utilisation in DCGM")


class CapacitySnapshot(BaseModel):
    """What `inferops idle-gpu plan` reads without a cluster (`capacity.json`)."""

    taken_at: datetime
    nodes: list[NodeCapacity]
    demand_forecast: list[float] = Field(
        default_factory=list,
        description="forecast GPUs busy with inference, per slot from the window start (empty: no history)")
    forecast_slot_seconds: int = Field(3600, ge=1)
    notes: list[str] = Field(default_factory=list, description="what discovery could not see")

    @property
    def allocatable(self) -> int:
        return sum(n.allocatable for n in self.nodes)


class PlanPolicy(BaseModel):
    """How to pack: the knobs of the planner, shared by the flow, the CLI and the benchmark."""

    slot_seconds: int = Field(300, ge=1, le=3600, description="time resolution of the plan")
    headroom_gpus: int = Field(0, ge=0, description="GPUs always left free on top of the forecast")
    grace_period_s: int = Field(20, ge=0, le=600,
                                description="SIGTERM grace at preemption/stop; keep under 30 s")
    runtime_margin: float = Field(1.1, ge=1.0, le=3.0,
                                  description="estimated hours are multiplied by this when packing")
    tail_segments: bool = Field(True, description="let a checkpointable job that cannot finish tonight run "
                                                  "until the window closes, then stop at a checkpoint")
    min_segment_minutes: int = Field(20, ge=1, description="shortest such tail segment worth starting")


class Outcome(StrEnum):
    done = "done"
    preempted = "preempted"  # preempted, not checkpointable: dropped for tonight
    requeued = "requeued"  # preempted, checkpointable: resumed (or carried over) from its checkpoint
    stopped = "stopped"  # still running at the window's end: stopped gracefully
    failed = "failed"  # the job itself failed
    not_scheduled = "not_scheduled"  # did not fit into tonight's idle capacity
