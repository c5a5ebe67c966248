"""The canary judge: thresholds plus a Mann-Whitney comparison of canary against baseline.

Per metric (Kayenta's NetflixACAJudge style): the canary and baseline samples are compared with a
Mann-Whitney U test; the Hodges-Lehmann shift and its confidence interval classify the metric as
Pass (within ``tolerance`` of the baseline), High or Low. Higher is worse for every metric here
(error ratio, latency), so High fails and Low passes. Too few samples, NaN or no data classify as
NoData, which makes the interval inconclusive: never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import mannwhitneyu, norm

from flows.canary.models import CanaryPolicy, Classification, IntervalResult, MetricResult, Verdict

MIN_SAMPLES = 3
# the smallest baseline scale the tolerance applies to, so a zero baseline does not make any
# difference "infinitely" large: 1 percentage point of errors, 10 ms of latency
SCALE_FLOOR = {"error_rate": 0.01, "latency_s": 0.01}


def finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def classify(canary: Sequence[float], baseline: Sequence[float], *, tolerance: float, confidence: float,
             floor: float) -> tuple[Classification, float | None]:
    """(classification, two-sided Mann-Whitney p-value) of canary against baseline."""
    c, b = finite(canary), finite(baseline)
    if len(c) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return Classification.nodata, None
    if np.all(c == c[0]) and np.all(b == c[0]):
        return Classification.passed, 1.0  # identical constant series: no difference to test
    p = float(mannwhitneyu(c, b, alternative="two-sided").pvalue)
    # Hodges-Lehmann shift with its distribution-free confidence interval (normal approximation)
    diffs = np.sort((c[:, None] - b[None, :]).ravel())
    n1, n2 = len(c), len(b)
    z = norm.ppf(0.5 + confidence / 2)
    k = int(math.floor(n1 * n2 / 2 - z * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)))
    k = min(max(k, 0), len(diffs) - 1)
    lo, hi = diffs[k], diffs[len(diffs) - 1 - k]
    allowed = tolerance * max(abs(float(np.median(b))), floor)
    if lo > allowed:
        return Classification.high, p
    if hi < -allowed:
        return Classification.low, p
    return Classification.passed, p


def judge_metric(metric: str, *, interval_canary: Sequence[float], interval_baseline: Sequence[float],
                 step_canary: Sequence[float], step_baseline: Sequence[float], threshold: float,
                 policy: CanaryPolicy, error: str | None = None) -> MetricResult:
    """One metric for one interval: threshold on this interval's canary, U test over the step so far.

    The interval itself must have data for both tracks: earlier samples never stand in for it.
    """
    c_now, b_now = finite(interval_canary), finite(interval_baseline)
    canary = float(np.median(c_now)) if len(c_now) else None
    baseline = float(np.median(b_now)) if len(b_now) else None

    def result(cls: Classification, p: float | None, verdict: Verdict, reason: str) -> MetricResult:
        return MetricResult(metric=metric, canary=canary, baseline=baseline, threshold=threshold,
                            classification=cls, p_value=p, verdict=verdict, reason=reason)

    if error:
        return result(Classification.nodata, None, Verdict.inconclusive, error)
    if canary is not None and canary > threshold:
        return result(Classification.high, None, Verdict.failed, f"canary {canary:.4g} above threshold {threshold:g}")
    cls, p = classify(step_canary, step_baseline, tolerance=policy.tolerance, confidence=policy.confidence,
                      floor=SCALE_FLOOR.get(metric, 0.0))
    if canary is None or baseline is None or cls is Classification.nodata:
        return result(Classification.nodata, None, Verdict.inconclusive,
                      f"no data (this interval: canary {len(c_now)}, baseline {len(b_now)} finite samples; "
                      f"step: {len(finite(step_canary))}/{len(finite(step_baseline))})")
    if cls is Classification.high:
        return result(cls, p, Verdict.failed, f"canary higher than baseline beyond {policy.tolerance:.0%} (p={p:.3g})")
    return result(cls, p, Verdict.passed, "within tolerance" if cls is Classification.passed else "canary lower")


def judge_interval(step: int, interval: int, metrics: list[MetricResult]) -> IntervalResult:
    failed = [m for m in metrics if m.verdict is Verdict.failed]
    unsure = [m for m in metrics if m.verdict is Verdict.inconclusive]
    if failed:
        verdict, why = Verdict.failed, "; ".join(f"{m.metric}: {m.reason}" for m in failed)
    elif unsure or not metrics:
        verdict, why = Verdict.inconclusive, "; ".join(f"{m.metric}: {m.reason}" for m in unsure) or "no metrics"
    else:
        verdict, why = Verdict.passed, "all metrics pass"
    return IntervalResult(step=step, interval=interval, verdict=verdict, metrics=metrics, reason=why)


@dataclass
class StepTracker:
    """Counts a step's interval verdicts; ``outcome`` is None while the step should go on."""

    policy: CanaryPolicy
    counts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))

    def add(self, result: IntervalResult) -> Verdict | None:
        self.counts[result.verdict] += 1
        return self.outcome

    @property
    def outcome(self) -> Verdict | None:
        if self.counts[Verdict.failed] >= self.policy.failure_limit:
            return Verdict.failed
        if self.counts[Verdict.inconclusive] >= self.policy.inconclusive_limit:
            return Verdict.inconclusive
        if self.counts[Verdict.passed] >= self.policy.intervals_per_step:
            return Verdict.passed
        return None
