"""Canary policy and results: plain pydantic models (no Prefect import).

The policy is the ``policy`` parameter of the ``canary_rollout`` flow, so the Prefect UI renders
it as a form: flat fields, enums and ``Literal`` only.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.canary.promql import check_template
from flows.common.errors import BadInput, bad_input_from

# RFC 1123 DNS label (namespaces, Services) and subdomain (Deployments, HTTPRoutes)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# an OCI image reference: [registry[:port]/]path[:tag][@digest]
_IMAGE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                    r"(:[\w][\w.-]{0,127})?(@[a-z0-9]+:[a-f0-9]{32,})?$")
_URI = re.compile(r"^(s3|file|https?)://\S+$")
_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PRESETS_DIR = Path(__file__).resolve().parent / "presets"
# the metrics the two-metric shorthand fields of CanaryPolicy refer to, in every preset
SHORTHAND = {"error_rate": ("error_rate_query", "max_error_rate"), "latency_s": ("latency_query", "max_latency_s")}

# a rollback waits up to the readiness timeout for stable; the k8s work pool's job template gives
# flow-run pods a terminationGracePeriodSeconds above this (deploy/prefect/render_templates.py)
READINESS_TIMEOUT_MAX_S = 1800

EVENT_PROMOTED = "inferops.canary.promoted"
EVENT_ROLLED_BACK = "inferops.canary.rolled_back"


def resource_id(namespace: str, deployment: str) -> str:
    """The Prefect event resource of a canary target."""
    return f"inferops.canary.{namespace}.{deployment}"


def check_dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.fullmatch(value or ""):
        raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (RFC 1123 label)")
    return value


def check_dns_subdomain(value: str, what: str) -> str:
    if len(value or "") > 253 or not _DNS_SUBDOMAIN.fullmatch(value or ""):
        raise ValueError(f"{what} {value!r} is not a valid Kubernetes name (RFC 1123 subdomain)")
    return value


class MetricsPreset(StrEnum):
    """The analysis files shipped in flows/canary/presets/ (copy one to start your own)."""

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


class MetricSpec(BaseModel):
    """One analysis metric, in the manner of an Argo Rollouts AnalysisTemplate metric (flat, for the form).

    Each interval, the query is sampled for the canary and the baseline track. The interval fails
    on the metric when the failure condition holds (canary worse than ``failure_threshold``, or
    worse than the baseline beyond the tolerance); it is inconclusive when there is no data or the
    success condition (``success_threshold``) is not met while no failure condition holds.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="Metric name, snake_case; the columns of the interval table start with it")
    query: str = Field(description=(
        "PromQL template returning one value for one track. Placeholders: {{namespace}}, {{deployment}}, "
        "{{track}} (quoted label values; {{track}} is required), {{interval}} (the rate window), "
        "{{args.NAME}} (a quoted value from args)"))
    args: dict[str, str] = Field(default_factory=dict, description="Named arguments of the query: label values "
                                 "for its {{args.NAME}} placeholders")
    judge: Literal["mann-whitney", "binomial", "threshold"] = Field(
        "mann-whitney", description="mann-whitney: Mann-Whitney U test of the step's samples against the "
        "baseline (Kayenta); binomial: for a ratio of requests (errors over all), an exact test on the "
        "request counts of the interval's window (needs count_query), so a handful of errors at low "
        "traffic is not mistaken for a regression; threshold: compare the interval's median only")
    count_query: str = Field("", description=(
        "binomial: PromQL template for the number of requests the ratio is taken over, in the same "
        "window, e.g. sum(increase(requests_total{track={{track}}}[{{interval}}])); same placeholders"))
    compare: Literal["baseline", "absolute"] = Field(
        "baseline", description="baseline: judge the canary against the fresh baseline (and the thresholds); "
        "absolute: against the thresholds only")
    higher_is: Literal["worse", "better"] = Field("worse", description="worse for errors and latency, "
                                                  "better for throughput or accuracy")
    failure_threshold: float | None = Field(None, description="Failure condition: a canary median worse than "
                                            "this fails the interval (above it when higher is worse)")
    success_threshold: float | None = Field(None, description="Success condition: a canary median must be at "
                                            "least this good to pass; otherwise the interval is inconclusive "
                                            "(failed, when no failure_threshold is set)")
    tolerance: float | None = Field(None, ge=0, le=10, description="Relative difference from the baseline still "
                                    "counted as a pass; empty: the policy's tolerance")
    scale_floor: float = Field(0.0, ge=0, description="Smallest baseline scale the tolerance applies to, so a "
                               "zero baseline does not make every difference infinitely large")
    failure_limit: int | None = Field(None, ge=1, le=100, description="Intervals failed on this metric that "
                                      "fail a step; empty: only the policy's limit (intervals failed on any metric)")
    inconclusive_limit: int | None = Field(None, ge=1, le=100, description="Intervals inconclusive on this "
                                           "metric that end a step; empty: only the policy's limit")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _METRIC_NAME.fullmatch(v):
            raise ValueError(f"metric name {v!r} must be snake_case (a-z, 0-9, _), starting with a letter")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        try:
            check_template(self.query, self.name, self.args, sibling=self.count_query)
            if self.count_query:
                check_template(self.count_query, self.name, self.args, sibling=self.query)
        except BadInput as exc:
            raise ValueError(str(exc).removeprefix(f"metric {self.name}: ")) from None
        if self.judge != "threshold" and self.compare != "baseline":
            raise ValueError(f"judge {self.judge} compares against the baseline (use judge threshold with "
                             "compare absolute)")
        if (self.judge == "binomial") != bool(self.count_query):
            raise ValueError("judge binomial needs a count_query (the requests behind the ratio), and only it "
                             "reads one")
        if self.compare == "absolute" and self.failure_threshold is None and self.success_threshold is None:
            raise ValueError("compare absolute needs a failure_threshold or a success_threshold")
        f, s = self.failure_threshold, self.success_threshold
        if f is not None and s is not None and (s > f if self.higher_is == "worse" else s < f):
            raise ValueError(f"success_threshold {s:g} is worse than failure_threshold {f:g}")
        return self


def load_metrics(text: str, source: str) -> list[MetricSpec]:
    """Metrics from an analysis file: YAML (or JSON) with a ``metrics`` list, like the presets."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"analysis {source} is not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    raw = doc.get("metrics") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"analysis {source}: expected a mapping with a non-empty 'metrics' list")
    out = []
    for i, m in enumerate(raw):
        try:
            out.append(MetricSpec.model_validate(m))
        except ValidationError as exc:
            name = m.get("name", f"#{i}") if isinstance(m, dict) else f"#{i}"
            raise bad_input_from(exc, f"analysis {source}, metric {name}") from None
    return out


@cache
def _preset(name: str) -> tuple[MetricSpec, ...]:
    path = PRESETS_DIR / f"{MetricsPreset(name)}.yaml"
    return tuple(load_metrics(path.read_text(), path.name))


def preset_metrics(preset: MetricsPreset | str) -> list[MetricSpec]:
    """A shipped preset's metrics (flows/canary/presets/NAME.yaml)."""
    return [m.model_copy(deep=True) for m in _preset(str(MetricsPreset(preset)))]


class CanaryPolicy(BaseModel):
    """How a canary is rolled out and judged."""

    # a misspelt key is refused, never ignored; NaN or inf would turn a condition off (NaN compares false)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    metrics: list[MetricSpec] = Field(default_factory=list, description=(
        "The analysis: any number of metrics, each judged every interval (Argo Rollouts AnalysisTemplate "
        "style). Empty: the error_rate and latency_s metrics of metrics_preset, with the shorthand fields below"))
    metrics_preset: MetricsPreset = Field(MetricsPreset.triton, description=(
        "Shorthand when metrics is empty: the shipped preset (flows/canary/presets/NAME.yaml) whose "
        "error_rate and latency_s metrics are used"))
    error_rate_query: str = Field("", description="Shorthand: custom PromQL for the error ratio (0-1); placeholders {{namespace}} {{deployment}} {{interval}} {{track}}")
    latency_query: str = Field("", description="Shorthand: custom PromQL for the latency in seconds (e.g. a p99); same placeholders")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Shorthand: canary error ratio above this fails the interval")
    max_latency_s: float = Field(1.0, gt=0, description="Shorthand: canary latency (p99; Triton preset: mean) above this fails the interval")
    tolerance: float = Field(0.25, ge=0, le=10, description="Mann-Whitney: relative difference from baseline still counted as Pass (Kayenta)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Mann-Whitney: confidence level for High/Low")
    failure_limit: int = Field(2, ge=1, le=100, description="Failed intervals that fail a step (Flagger's threshold)")
    inconclusive_limit: int = Field(3, ge=1, le=100, description="Inconclusive intervals (no data, NaN, Prometheus down) that end a step")
    on_inconclusive: Literal["rollback", "pause"] = Field(
        "rollback", description="When the inconclusive limit is reached: roll back, or pause for a human decision")
    readiness_timeout_s: int = Field(600, ge=5, le=READINESS_TIMEOUT_MAX_S, description=(
        "Progress deadline for canary/baseline/stable readiness; a rollback waits this long for stable "
        "(the k8s pool gives flow-run pods a longer termination grace period)"))
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

    @model_validator(mode="after")
    def _analysis(self) -> CanaryPolicy:
        names = [m.name for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique: {', '.join(dupes)}")
        if self.metrics:
            defaults = CanaryPolicy.model_fields
            changed = [f for f in ("metrics_preset", *(x for pair in SHORTHAND.values() for x in pair))
                       if getattr(self, f) != defaults[f].default]
            if changed:
                raise ValueError(f"give either metrics or the shorthand fields, not both ({', '.join(changed)} set)")
        self.analysis()  # custom shorthand queries are checked here, when the policy is built
        return self

    def analysis(self) -> list[MetricSpec]:
        """The metrics to judge: ``metrics``, or the shorthand expanded to that list."""
        if self.metrics:
            return list(self.metrics)
        out = []
        for m in preset_metrics(self.metrics_preset):
            if m.name in SHORTHAND:
                query_field, threshold_field = SHORTHAND[m.name]
                update = {"query": getattr(self, query_field) or m.query,
                          "failure_threshold": getattr(self, threshold_field)}
                if getattr(self, query_field) and m.judge == "binomial":  # its count_query is the preset's
                    update |= {"judge": "mann-whitney", "count_query": ""}
                try:
                    m = MetricSpec.model_validate({**m.model_dump(), **update})
                except ValidationError as exc:
                    raise ValueError(f"{query_field}: metric {m.name}: " + "; ".join(
                        e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
            out.append(m)
        return out


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
        if v and not _IMAGE.fullmatch(v):
            raise ValueError(f"image {v!r} is not a valid image reference")
        return v

    @field_validator("model_manifest_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if v and not _URI.fullmatch(v):
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
    threshold: float | None  # the metric's failure threshold, if any
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
    stable_replicas: int  # the target's replica count when the rollout began
    # replica counts this rollout wrote on the target (recorded before each write): a count that is
    # none of these (nor stable_replicas) was set by someone else, and the rollback leaves it
    replicas_written: list[int] = Field(default_factory=list)
    autoscaler: str = ""  # the HorizontalPodAutoscaler of the target: the rollout never writes its count
    readiness_timeout_s: int = 600  # the policy's: how long a rollback (hook, abort) waits for stable
    step: int = 0  # index into the policy's steps reached so far
    traffic_mode: Literal["gateway-api", "replicas"] = "replicas"
    httproute: str = ""
    service: str = ""
    phase: Literal["progressing", "promoting", "rolling-back"] = "progressing"
