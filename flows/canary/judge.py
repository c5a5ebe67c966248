"""The canary judge: each metric spec's conditions, and a Mann-Whitney comparison against baseline.

Per metric (Kayenta's NetflixACAJudge style): the canary and baseline samples are compared with a
Mann-Whitney U test; the Hodges-Lehmann shift and its confidence interval classify the metric as
Pass (within the tolerance of the baseline), High or Low. High fails a metric whose higher values
are worse (error ratio, latency), Low one whose higher values are better. A ``binomial`` judge, for a
ratio of requests, tests the request counts of the interval's window instead: at LLM request rates
an interval holds a handful of errors, and rate() windows that overlap make the U test's samples
repeat one another, so a few chance errors would read as a shift. A ``threshold`` judge compares the
interval's medians. Too few samples, NaN or no data classify as NoData, which
makes the interval inconclusive: never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flows.canary.models import (
    CanaryPolicy,
    Classification,
    IntervalResult,
    MetricResult,
    MetricSpec,
    Verdict,
)

MIN_SAMPLES = 3


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
    from scipy.stats import mannwhitneyu, norm  # 1.6 s to import: only when a metric is judged

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


@dataclass(frozen=True)
class Counted:
    """A ratio of requests in one window, as counts: ``bad`` of ``n`` requests were worse (failed)."""

    bad: int
    n: int

    @classmethod
    def of(cls, ratios: Sequence[float], counts: Sequence[float], *, worse_is_higher: bool) -> Counted | None:
        """The freshest window of an interval (its last finite ratio and count); None without requests."""
        r, n = finite(ratios), finite(counts)
        if not len(r) or not len(n) or n[-1] < 1 or not 0 <= r[-1] <= 1:
            return None
        total = int(round(float(n[-1])))
        share = float(r[-1]) if worse_is_higher else 1.0 - float(r[-1])
        return cls(min(max(int(round(share * total)), 0), total), total)

    @property
    def ratio(self) -> float:
        return self.bad / self.n


def classify_counts(canary: Counted, baseline: Counted, *, tolerance: float, confidence: float,
                    floor: float) -> tuple[Classification, float]:
    """(High, Low or Pass, one-sided p) of the canary's share of bad requests against the baseline's.

    Conditional on the bad requests of both tracks together, the canary's are binomial; under the
    null that the canary's rate is at most ``1 + tolerance`` times the baseline's, that binomial has
    p = (1+t)·n_c / ((1+t)·n_c + n_b) (and symmetrically for Low). An exact test on the counts: 3 errors
    against 0 in a few hundred requests is what chance gives, whatever the ratios look like. The
    difference must also exceed ``tolerance`` times the baseline's ratio (at least ``floor``), the
    same practical bound as the U test's.
    """
    from scipy.stats import binom  # only when a metric is judged (scipy is slow to import)

    k, alpha, rho = canary.bad + baseline.bad, (1 - confidence) / 2, 1 + tolerance
    if k == 0:
        return Classification.passed, 1.0
    allowed = tolerance * max(baseline.ratio, floor)
    p_high = float(binom.sf(canary.bad - 1, k, rho * canary.n / (rho * canary.n + baseline.n)))
    if p_high < alpha and canary.ratio - baseline.ratio > allowed:
        return Classification.high, p_high
    p_low = float(binom.cdf(canary.bad, k, canary.n / (canary.n + rho * baseline.n)))
    if p_low < alpha and baseline.ratio - canary.ratio > allowed:
        return Classification.low, p_low
    return Classification.passed, min(p_high, p_low)


def judge_metric(spec: MetricSpec, *, interval_canary: Sequence[float], interval_baseline: Sequence[float],
                 step_canary: Sequence[float], step_baseline: Sequence[float], policy: CanaryPolicy,
                 canary_count: Sequence[float] = (), baseline_count: Sequence[float] = (),
                 error: str | None = None) -> MetricResult:
    """One metric for one interval: its failure and success conditions on this interval's canary
    median, and the comparison against the baseline (a U test over the step so far, an exact test on
    the request counts of the interval's window, or medians).

    The interval itself must have data for the tracks it compares: earlier samples never stand in.
    """
    c_now, b_now = finite(interval_canary), finite(interval_baseline)
    canary = float(np.median(c_now)) if len(c_now) else None
    baseline = float(np.median(b_now)) if len(b_now) else None
    sign = 1.0 if spec.higher_is == "worse" else -1.0  # >0: a is worse than b when sign * (a - b) > 0
    worse_word = "higher" if sign > 0 else "lower"
    tolerance = policy.tolerance if spec.tolerance is None else spec.tolerance
    worse = Classification.high if sign > 0 else Classification.low  # the class that fails the canary

    def unflip(cls: Classification) -> Classification:
        """A class of the sign-flipped samples (``sign * x``: higher is worse) as one of the metric's own."""
        if sign > 0:
            return cls
        return {Classification.high: Classification.low, Classification.low: Classification.high}.get(cls, cls)

    def result(cls: Classification, p: float | None, verdict: Verdict, reason: str) -> MetricResult:
        return MetricResult(metric=spec.name, canary=canary, baseline=baseline, threshold=spec.failure_threshold,
                            classification=cls, p_value=p, verdict=verdict, reason=reason)

    def no_data(step: str = "") -> MetricResult:
        return result(Classification.nodata, None, Verdict.inconclusive,
                      f"no data (this interval: canary {len(c_now)}, baseline {len(b_now)} finite samples{step})")

    if error:
        return result(Classification.nodata, None, Verdict.inconclusive, error)
    f = spec.failure_threshold
    if canary is not None and f is not None and sign * (canary - f) > 0:
        return result(worse, None, Verdict.failed,
                      f"canary {canary:.4g} {'above' if sign > 0 else 'below'} threshold {f:g}")
    cls, p = Classification.passed, None
    if spec.compare == "baseline" and spec.judge == "mann-whitney":
        cls, p = classify(sign * finite(step_canary), sign * finite(step_baseline), tolerance=tolerance,
                          confidence=policy.confidence, floor=spec.scale_floor)
        if canary is None or baseline is None or cls is Classification.nodata:
            return no_data(f"; step: {len(finite(step_canary))}/{len(finite(step_baseline))}")
        cls = unflip(cls)
        if cls is worse:
            return result(cls, p, Verdict.failed,
                          f"canary {worse_word} than baseline beyond {tolerance:.0%} (p={p:.3g})")
    elif spec.compare == "baseline" and spec.judge == "binomial":
        c = Counted.of(interval_canary, canary_count, worse_is_higher=sign > 0)
        b = Counted.of(interval_baseline, baseline_count, worse_is_higher=sign > 0)
        if c is None or b is None or canary is None or baseline is None:
            return no_data(f"; requests in the window: canary {c.n if c else 0}, baseline {b.n if b else 0}")
        cls, p = classify_counts(c, b, tolerance=tolerance, confidence=policy.confidence, floor=spec.scale_floor)
        cls = unflip(cls)
        if cls is worse:
            return result(cls, p, Verdict.failed,
                          f"canary {worse_word} than baseline beyond {tolerance:.0%} ({c.bad} of {c.n} requests "
                          f"against {b.bad} of {b.n}, p={p:.3g})")
    elif spec.compare == "baseline":  # threshold judge against the baseline's median
        if canary is None or baseline is None:
            return no_data()
        allowed = tolerance * max(abs(baseline), spec.scale_floor)
        if sign * (canary - baseline) > allowed:
            return result(worse, None, Verdict.failed,
                          f"canary {canary:.4g} {worse_word} than baseline {baseline:.4g} beyond {tolerance:.0%}")
        if sign * (baseline - canary) > allowed:
            cls = unflip(Classification.low)
    elif canary is None:
        return no_data()
    s = spec.success_threshold
    if s is not None and canary is not None and sign * (canary - s) > 0:
        verdict = Verdict.inconclusive if f is not None else Verdict.failed
        return result(cls, p, verdict, f"canary {canary:.4g} misses the success threshold {s:g}")
    return result(cls, p, Verdict.passed, "within tolerance" if cls is Classification.passed
                  else f"canary {'lower' if cls is Classification.low else 'higher'}")


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
    """Counts a step's interval verdicts, overall and per metric; ``outcome`` is None while the step
    should go on. The policy's limits count intervals (failed on any metric); a metric's own
    ``failure_limit``/``inconclusive_limit`` count the intervals that metric failed or was unsure of."""

    policy: CanaryPolicy
    counts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))
    per_metric: dict[tuple[str, Verdict], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.specs = {m.name: m for m in self.policy.analysis()}

    def add(self, result: IntervalResult) -> Verdict | None:
        self.counts[result.verdict] += 1
        for m in result.metrics:
            self.per_metric[(m.metric, m.verdict)] = self.per_metric.get((m.metric, m.verdict), 0) + 1
        return self.outcome

    def _metric_limit(self, verdict: Verdict) -> bool:
        for name, spec in self.specs.items():
            limit = spec.failure_limit if verdict is Verdict.failed else spec.inconclusive_limit
            if limit is not None and self.per_metric.get((name, verdict), 0) >= limit:
                return True
        return False

    @property
    def outcome(self) -> Verdict | None:
        if self.counts[Verdict.failed] >= self.policy.failure_limit or self._metric_limit(Verdict.failed):
            return Verdict.failed
        if self.counts[Verdict.inconclusive] >= self.policy.inconclusive_limit or \
                self._metric_limit(Verdict.inconclusive):
            return Verdict.inconclusive
        if self.counts[Verdict.passed] >= self.policy.intervals_per_step:
            return Verdict.passed
        return None
