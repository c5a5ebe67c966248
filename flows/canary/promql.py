"""PromQL presets and safe templating of custom queries.

Every query returns one value for one track of one Deployment. Series are selected by the labels
``namespace``, ``deployment`` and ``track`` (stable | baseline | canary), which the Pods carry
(``inferops.io/track``) and which a ServiceMonitor/PodMonitor or relabelling copies onto the
series. Placeholders in custom queries: ``{{namespace}}``, ``{{deployment}}``, ``{{track}}``
become quoted PromQL string literals (use them as ``label={{track}}``), ``{{interval}}`` a
validated duration, the analysis interval but at least 4 scrape intervals
(use it as ``[{{interval}}]``). Nothing else is substituted; unknown
placeholders are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flows.canary.models import CanaryPolicy, MetricsPreset, Track
from flows.common.errors import BadInput
from flows.common.prom import quote_label_value, validate_duration

_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_]+)\s*\}\}")
_SEL = "namespace={{namespace}}, deployment={{deployment}}, track={{track}}"

# error ratio and latency in seconds (p99; Triton: mean) per preset
PRESETS: dict[MetricsPreset, dict[str, str]] = {
    MetricsPreset.triton: {
        # Triton's nv_inference_request_duration_us is a cumulative counter over all requests,
        # so this preset's latency is the interval's mean request latency, not a p99.
        "error_rate": (
            f"sum(rate(nv_inference_request_failure{{{_SEL}}}[{{{{interval}}}}])) / "
            f"(sum(rate(nv_inference_request_success{{{_SEL}}}[{{{{interval}}}}])) + "
            f"sum(rate(nv_inference_request_failure{{{_SEL}}}[{{{{interval}}}}])))"
        ),
        "latency_s": (
            f"sum(rate(nv_inference_request_duration_us{{{_SEL}}}[{{{{interval}}}}])) / 1e6 / "
            f"(sum(rate(nv_inference_request_success{{{_SEL}}}[{{{{interval}}}}])) + "
            f"sum(rate(nv_inference_request_failure{{{_SEL}}}[{{{{interval}}}}])))"
        ),
    },
    MetricsPreset.vllm: {
        # vLLM: aborted requests over all finished ones; end-to-end latency histogram
        "error_rate": (
            f"sum(rate(vllm:request_success_total{{{_SEL}, finished_reason=\"abort\"}}[{{{{interval}}}}])) / "
            f"sum(rate(vllm:request_success_total{{{_SEL}}}[{{{{interval}}}}]))"
        ),
        "latency_s": (
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate(vllm:e2e_request_latency_seconds_bucket{{{_SEL}}}[{{{{interval}}}}])))"
        ),
    },
    MetricsPreset.http: {
        # a generic HTTP gateway: requests by status code, request-duration histogram
        "error_rate": (
            f"sum(rate(http_requests_total{{{_SEL}, code=~\"5..\"}}[{{{{interval}}}}])) / "
            f"sum(rate(http_requests_total{{{_SEL}}}[{{{{interval}}}}]))"
        ),
        "latency_s": (
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate(http_request_duration_seconds_bucket{{{_SEL}}}[{{{{interval}}}}])))"
        ),
    },
}

METRICS = ("error_rate", "latency_s")


@dataclass(frozen=True)
class Query:
    metric: str
    template: str

    def render(self, *, namespace: str, deployment: str, track: Track, interval: str) -> str:
        return render(self.template, namespace=namespace, deployment=deployment, track=track,
                      interval=interval)


def render(template: str, *, namespace: str, deployment: str, track: Track | str, interval: str) -> str:
    values = {
        "namespace": quote_label_value(namespace),
        "deployment": quote_label_value(deployment),
        "track": quote_label_value(str(Track(track))),
        "interval": validate_duration(interval),
    }

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in values:
            raise BadInput(f"unknown placeholder {{{{{name}}}}} in PromQL (allowed: {', '.join(values)})")
        return values[name]

    return _PLACEHOLDER.sub(sub, template)


def check_template(template: str, metric: str) -> str:
    """Validate a custom query: it must render, and select by track (else canary = baseline)."""
    names = set(_PLACEHOLDER.findall(template))
    if "track" not in names:
        raise BadInput(f"custom {metric} query must use {{{{track}}}} to tell canary from baseline")
    render(template, namespace="x", deployment="x", track=Track.canary, interval="1m")
    return template


def queries(policy: CanaryPolicy) -> list[Query]:
    preset = PRESETS[policy.metrics_preset]
    custom = {"error_rate": policy.error_rate_query, "latency_s": policy.latency_query}
    return [Query(m, check_template(custom[m], m) if custom[m] else preset[m]) for m in METRICS]


def interval_duration(seconds: int) -> str:
    return validate_duration(f"{int(seconds)}s")


def rate_window(policy: CanaryPolicy) -> str:
    """The ``{{interval}}`` of the queries: the analysis interval, but never under 4 scrapes.

    rate() needs two samples inside its window; a window of one or two scrape intervals is empty
    whenever a scrape is late, and that reads as "no data" (an inconclusive interval).
    """
    return interval_duration(max(policy.interval_s, 4 * policy.scrape_interval_s))
