"""One analysis interval: sample every metric for canary and baseline from Prometheus, then judge.

No Prefect import. The flow wraps :func:`analyse` as a task; the rollout controller calls it through
its ``analyse`` callback once per interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.canary.judge import judge_interval, judge_metric
from flows.canary.models import CanaryPolicy, IntervalResult, MetricSpec, Target, Track
from flows.canary.promql import rate_window, render
from flows.common.errors import BackendUnavailable, BadInput
from flows.common.prom import PrometheusClient


@dataclass
class StepSamples:
    """Samples gathered so far in one step, per metric and track (the U test's input)."""

    values: dict[tuple[str, Track], list[float]] = field(default_factory=dict)

    def add(self, metric: str, track: Track, samples: list[float]) -> None:
        self.values.setdefault((metric, track), []).extend(samples)

    def get(self, metric: str, track: Track) -> list[float]:
        return self.values.get((metric, track), [])


def promql_for(spec: MetricSpec, target: Target, track: Track, policy: CanaryPolicy, *, count: bool = False) -> str:
    return render(spec.count_query if count else spec.query, namespace=target.namespace,
                  deployment=target.deployment, track=track, interval=rate_window(policy), args=spec.args)


def sample(client: PrometheusClient, spec: MetricSpec, target: Target, track: Track, policy: CanaryPolicy,
           end: float, *, count: bool = False) -> list[float]:
    """The interval's points for one track (of the count query with ``count``): ``samples_per_interval``
    evenly spaced, NaN kept."""
    step = policy.interval_s / policy.samples_per_interval
    series = client.query_range(promql_for(spec, target, track, policy, count=count),
                                end - policy.interval_s + step, end, step)
    return [v for _, points in series for _, v in points]


def tracks_of(spec: MetricSpec) -> tuple[Track, ...]:
    return (Track.canary, Track.baseline) if spec.compare == "baseline" else (Track.canary,)


def analyse(client: PrometheusClient, target: Target, policy: CanaryPolicy, history: StepSamples, *,
            weight: int, interval: int, end: float) -> IntervalResult:
    """Judge the interval ending at ``end``; Prometheus unreachable makes it inconclusive."""
    results = []
    for spec in policy.analysis():
        now: dict[Track, list[float]] = {Track.canary: [], Track.baseline: []}
        counts: dict[Track, list[float]] = {Track.canary: [], Track.baseline: []}
        error = None
        try:
            for t in tracks_of(spec):
                now[t] = sample(client, spec, target, t, policy, end)
                if spec.count_query:
                    counts[t] = sample(client, spec, target, t, policy, end, count=True)
        except BackendUnavailable as exc:
            now, counts, error = {Track.canary: [], Track.baseline: []}, {}, str(exc)
        for t, values in now.items():
            history.add(spec.name, t, values)
        results.append(judge_metric(
            spec, interval_canary=now[Track.canary], interval_baseline=now[Track.baseline],
            step_canary=history.get(spec.name, Track.canary), step_baseline=history.get(spec.name, Track.baseline),
            canary_count=counts.get(Track.canary, []), baseline_count=counts.get(Track.baseline, []),
            policy=policy, error=error))
    return judge_interval(weight, interval, results)


def preflight(client: PrometheusClient, target: Target, policy: CanaryPolicy) -> list[str]:
    """Run each metric's canary query once, before anything changes: Prometheus rejecting one
    (HTTP 400) is bad input now rather than a failed rollout later. Returns notes (Prometheus
    unreachable is only noted: the intervals will be inconclusive and roll back)."""
    notes = []
    for spec in policy.analysis():
        try:
            client.query(promql_for(spec, target, Track.canary, policy))
        except BackendUnavailable as exc:
            notes.append(f"metric {spec.name} not checked: {exc}")
        except BadInput as exc:
            raise BadInput(f"metric {spec.name}: {exc}") from None
    return notes
