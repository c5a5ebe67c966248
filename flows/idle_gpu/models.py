"""Policies and data of the idle-GPU room, as pydantic models (they are the flow's UI form too).

No Prefect import here: the CLI, the flow and the benchmark share these.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.common.errors import BadInput

# a Kubernetes DNS-1123 label; Job names get a suffix, so keep room for it
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ANNOTATION_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
NAME_MAX = 40


def check_label_value(v: str, what: str) -> str:
    if len(v) > 63 or not _LABEL_VALUE.fullmatch(v):
        raise ValueError(f"{what} {v!r} is not a valid Kubernetes label value")
    return v


def check_names(namespace: str, priority_class: str = "offline-batch", kueue_queue: str | None = None,
                checkpointable_priority_class: str = "") -> None:
    """Names that reach the Kubernetes API: reject bad ones with one line before any call."""
    for what, v in (("namespace", namespace), ("priority class", priority_class),
                    *((("checkpointable priority class", checkpointable_priority_class),)
                      if checkpointable_priority_class else ())):
        if not _NAME.fullmatch(v) or len(v) > 63:
            raise BadInput(f"{what} {v!r} is not a valid Kubernetes name")
    if kueue_queue:
        try:
            check_label_value(kueue_queue, "Kueue LocalQueue")
        except ValueError as exc:
            raise BadInput(str(exc)) from None


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
    annotations: dict[str, str] = Field(default_factory=dict, description="extra pod annotations")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > NAME_MAX or not _NAME.fullmatch(v):
            raise ValueError(f"job name {v!r} must be a DNS-1123 label of at most {NAME_MAX} characters")
        return v

    @field_validator("team", "cost_center")
    @classmethod
    def _labels(cls, v: str) -> str:
        return check_label_value(v, "cost label")

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if len(key) > 253 or not _ANNOTATION_KEY.fullmatch(key) or key.startswith("inferops.io/"):
                raise ValueError(f"annotation key {key!r} is not a valid, non-reserved Kubernetes key")
        return v

    @field_validator("deadline")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("deadline needs a timezone (e.g. 2026-11-28T06:00:00+00:00)")
        return v

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.estimated_hours


MAX_NODE_GPUS = 1024  # far above any node; below what overflows
MAX_FLEET_GPUS = 1_000_000


class NodeCapacity(BaseModel):
    """A GPU node as seen now: allocatable GPUs, those requested by pods, and those idle."""

    name: str
    product: str = "unknown"
    # bounded: a snapshot is user input, and 10**30 GPUs would overflow the planner's int64 arrays
    allocatable: int = Field(ge=0, le=MAX_NODE_GPUS)
    requested: int = Field(0, ge=0, le=MAX_NODE_GPUS, description="GPUs requested by running/bound pods")
    idle: int = Field(ge=0, le=MAX_NODE_GPUS, description="free in Kubernetes and low utilisation in DCGM")


class CapacitySnapshot(BaseModel):
    """What `inferops idle-gpu plan` reads without a cluster (`capacity.json`)."""

    taken_at: datetime
    nodes: list[NodeCapacity]
    demand_forecast: list[Annotated[float, Field(ge=0, le=MAX_FLEET_GPUS, allow_inf_nan=False)]] = Field(
        default_factory=list,
        description="forecast GPUs busy with inference, per slot from the window start (empty: no history)")
    forecast_slot_seconds: int = Field(3600, ge=1, le=86400)
    notes: list[str] = Field(default_factory=list, description="what discovery could not see")

    @property
    def allocatable(self) -> int:
        return sum(n.allocatable for n in self.nodes)


class PlanPolicy(BaseModel):
    """How to pack: the knobs of the planner, shared by the flow, the CLI and the benchmark."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    slot_seconds: int = Field(300, ge=1, le=3600, description="time resolution of the plan")
    headroom_gpus: int = Field(0, ge=0, description="GPUs always left free on top of the forecast")
    grace_period_s: int = Field(20, ge=0, le=600,
                                description="SIGTERM grace at preemption/stop; keep under 30 s")
    runtime_margin: float = Field(1.1, ge=1.0, le=3.0,
                                  description="estimated hours are multiplied by this when packing")
    tail_segments: bool = Field(True, description="let a checkpointable job that cannot finish tonight run "
                                                  "until the window closes, then stop at a checkpoint")
    min_segment_minutes: float = Field(20, gt=0, le=1440, description="shortest such tail segment worth starting")
    replan_unschedulable_s: int = Field(30, ge=0, le=3600,
                                        description="a Job whose pod found no room on its planned node this "
                                                    "long (inference took the GPUs) is withdrawn, unstarted, "
                                                    "and planned again")
    keep_free_for_scale_up: bool = Field(True, description="while an autoscaler of GPU pods is held back by its "
                                                           "scale-up rate, keep free the GPUs its next waves "
                                                           "will want (no job starts there to be preempted)")


class Outcome(StrEnum):
    done = "done"
    preempted = "preempted"  # preempted, not checkpointable: dropped for tonight
    requeued = "requeued"  # preempted, checkpointable: resumed (or carried over) from its checkpoint
    stopped = "stopped"  # still running at the window's end: stopped gracefully
    failed = "failed"  # the job itself failed
    not_scheduled = "not_scheduled"  # did not fit into tonight's idle capacity


class Discovery(BaseModel):
    """Where idle capacity and the demand forecast come from (DCGM exporter metrics in Prometheus)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    lookback: str = Field("15m", description="a GPU is idle if quiet over this Prometheus duration")
    util_below: float = Field(10.0, ge=0, le=100, description="DCGM_FI_DEV_GPU_UTIL (%) below this is idle")
    fb_used_below_mib: float = Field(1024.0, ge=0, description="DCGM_FI_DEV_FB_USED (MiB) below this is idle")
    node_label: str = Field("Hostname", description="DCGM label holding the node name (Hostname or node)")
    product_label: str = Field("nvidia.com/gpu.product", description="node label with the GPU product")
    forecast_nights: int = Field(7, ge=0, le=28, description="past nights the forecast looks at")
    forecast_quantile: float = Field(0.5, ge=0, le=1, description="quantile over past nights of each slot's peak")
    forecast_slot_seconds: int = Field(900, ge=1, description="forecast resolution")

    @field_validator("lookback")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", v):
            raise ValueError(f"lookback {v!r} is not a Prometheus duration (e.g. 15m)")
        return v

    @field_validator("node_label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", v):
            raise ValueError(f"node_label {v!r} is not a Prometheus label name")
        return v
