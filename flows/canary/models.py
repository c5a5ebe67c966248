"""Canary policy and results: plain pydantic models (no Prefect import).

The policy is the ``policy`` parameter of the ``canary_rollout`` flow, so the Prefect UI renders
it as a form: flat fields, enums and ``Literal`` only.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

# RFC 1123 DNS label (namespaces, Services) and subdomain (Deployments, HTTPRoutes)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# an OCI image reference: [registry[:port]/]path[:tag][@digest]
_IMAGE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                    r"(:[\w][\w.-]{0,127})?(@[a-z0-9]+:[a-f0-9]{32,})?$")
_URI = re.compile(r"^(s3|file|https?)://\S+$")

EVENT_PROMOTED = "inferops.canary.promoted"
EVENT_ROLLED_BACK = "inferops.canary.rolled_back"


def resource_id(namespace: str, deployment: str) -> str:
    """The Prefect event resource of a canary target."""
    return f"inferops.canary.{namespace}.{deployment}"


def check_dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.match(value or ""):
        raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (RFC 1123 label)")
    return value


def check_dns_subdomain(value: str, what: str) -> str:
    if len(value or "") > 253 or not _DNS_SUBDOMAIN.match(value or ""):
        raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (RFC 1123 subdomain)")
    return value


class MetricsPreset(StrEnum):
    triton = "triton"
    vllm = "vllm"
    http = "http"


class Track(StrEnum):
    stable = "stable"
    baseline = "baseline"
    canary = "canary"


class Verdict(StrEnum):
    """A check's outcome. ``inconclusive`` (no data, NaN, Prometheus down) is never a pass."""

    passed = "pass"
    failed = "fail"
    inconclusive = "inconclusive"


class Classification(StrEnum):
    """Kayenta's per-metric classes, plus no data."""

    passed = "Pass"
    high = "High"
    low = "Low"
    nodata = "NoData"


class CanaryPolicy(BaseModel):
    """How a canary is rolled out and judged."""

    steps: list[int] = Field([5, 25, 50, 100], description="Canary traffic weights in percent; the last must be 100 (promotion)")
    traffic_mode: Literal["gateway-api", "replicas"] = Field(
        "replicas", description="gateway-api: weights on an HTTPRoute's backendRefs; replicas: replica ratios behind the shared Service")
    httproute: str = Field("", description="HTTPRoute to weight (gateway-api mode); default: the Deployment's name")
    service: str = Field("", description="Service of the stable Deployment in the HTTPRoute (gateway-api mode); default: the Deployment's name")
    container: str = Field("", description="Container to update; default: the first one")
    interval_s: int = Field(30, ge=1, le=3600, description="Analysis interval in seconds ({{interval}} in queries)")
    intervals_per_step: int = Field(3, ge=1, le=100, description="Passed intervals needed to finish a step")
    samples_per_interval: int = Field(5, ge=3, le=60, description="Points sampled per interval for the statistical test")
    scrape_interval_s: int = Field(30, ge=1, le=600, description=(
        "Prometheus scrape interval of the serving pods; rate() windows ({{interval}}) span at least 4 scrapes "
        "so a late or missed scrape never empties them (Grafana's $__rate_interval)"))
    metrics_preset: MetricsPreset = Field(MetricsPreset.triton, description="Built-in error-rate and latency queries")
    error_rate_query: str = Field("", description="Custom PromQL for the error ratio (0-1); placeholders {{namespace}} {{deployment}} {{interval}} {{track}}")
    latency_query: str = Field("", description="Custom PromQL for the latency in seconds (e.g. a p99); same placeholders")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Threshold: canary error ratio above this fails the interval")
    max_latency_s: float = Field(1.0, gt=0, description="Threshold: canary latency (p99; Triton preset: mean) above this fails the interval")
    tolerance: float = Field(0.25, ge=0, le=10, description="Mann-Whitney: relative difference from baseline still counted as Pass (Kayenta)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Mann-Whitney: confidence level for High/Low")
    failure_limit: int = Field(2, ge=1, le=100, description="Failed intervals that fail a step (Flagger's threshold)")
    inconclusive_limit: int = Field(3, ge=1, le=100, description="Inconclusive intervals (no data, NaN, Prometheus down) that end a step")
    on_inconclusive: Literal["rollback", "pause"] = Field(
        "rollback", description="When the inconclusive limit is reached: roll back, or pause for a human decision")
    readiness_timeout_s: int = Field(600, ge=5, description="Progress deadline for canary/baseline/stable readiness")
    approval_timeout_s: int = Field(3600, ge=10, description="How long to wait for approval before 100% (then roll back)")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 < w <= 100 for w in v) or v != sorted(set(v)) or v[-1] != 100:
            raise ValueError(f"steps {v} must be increasing percentages in 1..100 ending with 100")
        return v

    @field_validator("httproute", "container")
    @classmethod
    def _optional_subdomain(cls, v: str, info) -> str:
        return check_dns_subdomain(v, info.field_name) if v else v

    @field_validator("service")
    @classmethod
    def _optional_label(cls, v: str) -> str:
        return check_dns_label(v, "service") if v else v

    @model_validator(mode="after")
    def _room_for_baseline(self) -> CanaryPolicy:
        if any(50 < w < 100 for w in self.steps):
            raise ValueError("steps between 50 and 100 leave no room for a baseline as large as the canary")
        return self


class Target(BaseModel):
    """What to roll out, and where."""

    namespace: str
    deployment: str
    image: str = ""
    model_manifest_uri: str = ""

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        return check_dns_label(v, "namespace")

    @field_validator("deployment")
    @classmethod
    def _dep(cls, v: str) -> str:
        check_dns_subdomain(v, "deployment")
        if len(v) > 63 - len("-baseline"):
            raise ValueError(f"deployment {v!r} is too long to add -baseline/-canary (max 54 chars)")
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if v and not _IMAGE.match(v):
            raise ValueError(f"image {v!r} is not a valid image reference")
        return v

    @field_validator("model_manifest_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if v and not _URI.match(v):
            raise ValueError(f"model_manifest_uri {v!r} must be s3://, file:// or http(s)://")
        return v

    @model_validator(mode="after")
    def _something_new(self) -> Target:
        if not self.image and not self.model_manifest_uri:
            raise ValueError("give a new image and/or a model manifest URI")
        return self


class MetricResult(BaseModel):
    metric: str
    canary: float | None  # median of the interval's canary samples; None = no data
    baseline: float | None
    threshold: float
    classification: Classification
    p_value: float | None
    verdict: Verdict
    reason: str


class IntervalResult(BaseModel):
    step: int  # weight in percent
    interval: int  # 1-based within the step
    verdict: Verdict
    metrics: list[MetricResult]
    reason: str


class RolloutState(BaseModel):
    """The lease and progress of a rollout, kept as a JSON annotation on the target Deployment.

    A retried or resumed run reads it to continue (same holder, or the lease expired and the new
    version is the same) or to clean up.
    """

    holder: str  # the flow run id (or a CLI run id) that owns the lease
    expires: float  # epoch seconds; the holder renews it every interval
    image: str = ""
    model_manifest_uri: str = ""
    stable_replicas: int
    step: int = 0  # index into the policy's steps reached so far
    traffic_mode: Literal["gateway-api", "replicas"] = "replicas"
    httproute: str = ""
    service: str = ""
    phase: Literal["progressing", "promoting", "rolling-back"] = "progressing"
