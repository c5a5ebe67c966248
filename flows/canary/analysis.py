"""One analysis interval: sample canary and baseline from Prometheus, then judge. No Prefect import."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flows.canary.judge import judge_interval, judge_metric
from flows.canary.models import CanaryPolicy, IntervalResult, Target, Track
from flows.canary.promql import Query, rate_window
from flows.common.errors import BackendUnavailable
from flows.common.prom import PrometheusClient


@dataclass
class StepSamples:
    """Samples gathered so far in one step, per metric and track (the U test's input)."""

    values: dict[tuple[str, Track], list[float]] = field(default_factory=dict)

    def add(self, metric: str, track: Track, samples: list[float]) -> None:
        self.values.setdefault((metric, track), []).extend(samples)

    def get(self, metric: str, track: Track) -> list[float]:
        return self.values.get((metric, track), [])


def sample(client: PrometheusClient, query: Query, target: Target, track: Track, policy: CanaryPolicy,
           end: float) -> list[float]:
    """The interval's points for one track: ``samples_per_interval`` evenly spaced, NaN kept."""
    step = policy.interval_s / policy.samples_per_interval
    promql = query.render(namespace=target.namespace, deployment=target.deployment, track=track,
                          interval=rate_window(policy))
    series = client.query_range(promql, end - policy.interval_s + step, end, step)
    return [v for _, points in series for _, v in points]


def analyse(client: PrometheusClient, queries: list[Query], target: Target, policy: CanaryPolicy,
            thresholds: dict[str, float], history: StepSamples, *, weight: int, interval: int,
            end: float | None = None) -> IntervalResult:
    """Judge the interval ending at ``end``; Prometheus unreachable makes it inconclusive."""
    end = time.time() if end is None else end
    results = []
    for q in queries:
        try:
            now = {t: sample(client, q, target, t, policy, end) for t in (Track.canary, Track.baseline)}
            error = None
        except BackendUnavailable as exc:
            now, error = {Track.canary: [], Track.baseline: []}, str(exc)
        for t, values in now.items():
            history.add(q.metric, t, values)
        results.append(judge_metric(
            q.metric, interval_canary=now[Track.canary], interval_baseline=now[Track.baseline],
            step_canary=history.get(q.metric, Track.canary),
            step_baseline=history.get(q.metric, Track.baseline), threshold=thresholds[q.metric],
            policy=policy, error=error))
    return judge_interval(weight, interval, results)


def thresholds(policy: CanaryPolicy) -> dict[str, float]:
    return {"error_rate": policy.max_error_rate, "latency_s": policy.max_latency_s}
