"""The judge: thresholds, Mann-Whitney classes with tolerance, and no data never passing."""

import math

import numpy as np
import pytest

from flows.canary.judge import StepTracker, classify, judge_interval, judge_metric
from flows.canary.models import CanaryPolicy, Classification, MetricSpec, Verdict

P = CanaryPolicy(failure_limit=2, inconclusive_limit=2, intervals_per_step=3)
rng = np.random.default_rng(7)


def kw(**k):
    return dict(tolerance=0.25, confidence=0.95, floor=0.01) | k


def test_same_distribution_passes_shifted_is_high_or_low():
    base = rng.normal(0.2, 0.01, 20)
    assert classify(rng.normal(0.2, 0.01, 20), base, **kw())[0] is Classification.passed
    cls, p = classify(rng.normal(0.4, 0.01, 20), base, **kw())
    assert cls is Classification.high and p < 0.01
    assert classify(rng.normal(0.1, 0.01, 20), base, **kw())[0] is Classification.low


def test_significant_but_within_tolerance_is_pass():
    base = rng.normal(1.0, 0.005, 20)
    cls, p = classify(base + 0.1, base, **kw())  # 10 % slower, tolerance 25 %
    assert p < 0.01 and cls is Classification.passed


@pytest.mark.parametrize("canary,baseline", [
    ([], [0.1] * 5), ([0.1] * 5, []), ([math.nan] * 5, [0.1] * 5), ([0.1, 0.1], [0.1] * 5),
])
def test_too_few_or_nan_samples_are_nodata(canary, baseline):
    assert classify(canary, baseline, **kw()) == (Classification.nodata, None)


def test_zero_baseline_uses_the_floor():
    assert classify([0.0] * 5, [0.0] * 5, **kw())[0] is Classification.passed
    assert classify([0.05] * 5, [0.0] * 5, **kw())[0] is Classification.high


def spec(**k):
    return MetricSpec(**({"name": "error_rate", "query": "x{track={{track}}}", "failure_threshold": 0.05,
                          "scale_floor": 0.01} | k))


def metric(c_now, b_now, c_all=None, b_all=None, threshold=0.05, error=None, **k):
    return judge_metric(spec(failure_threshold=threshold, **k), interval_canary=c_now, interval_baseline=b_now,
                        step_canary=c_now if c_all is None else c_all,
                        step_baseline=b_now if b_all is None else b_all, policy=P, error=error)


def test_threshold_breach_fails_even_without_baseline():
    r = metric([0.2] * 5, [])
    assert r.verdict is Verdict.failed and "threshold" in r.reason and r.canary == pytest.approx(0.2)


def test_interval_without_data_is_inconclusive_even_with_earlier_samples():
    r = metric([math.nan] * 5, [0.0] * 5, c_all=[0.0] * 10, b_all=[0.0] * 10)
    assert r.verdict is Verdict.inconclusive and r.canary is None


def test_prometheus_error_is_inconclusive():
    r = metric([], [], error="Prometheus at http://x unreachable")
    assert r.verdict is Verdict.inconclusive and "unreachable" in r.reason


def test_interval_verdict_precedence():
    ok, bad, unsure = metric([0.0] * 5, [0.0] * 5), metric([0.2] * 5, [0.0] * 5), metric([], [])
    assert judge_interval(5, 1, [ok, ok]).verdict is Verdict.passed
    assert judge_interval(5, 1, [ok, unsure]).verdict is Verdict.inconclusive
    assert judge_interval(5, 1, [unsure, bad]).verdict is Verdict.failed
    assert judge_interval(5, 1, []).verdict is Verdict.inconclusive


def test_step_tracker_limits():
    ok, bad, unsure = (judge_interval(5, 1, [m]) for m in
                       (metric([0.0] * 5, [0.0] * 5), metric([0.2] * 5, [0.0] * 5), metric([], [])))
    t = StepTracker(P)
    assert [t.add(r) for r in (ok, bad, ok, ok)] == [None, None, None, Verdict.passed]
    t = StepTracker(P)
    assert [t.add(r) for r in (bad, ok, bad)] == [None, None, Verdict.failed]
    t = StepTracker(P)
    assert [t.add(r) for r in (unsure, unsure)] == [None, Verdict.inconclusive]


def test_higher_is_better_flips_the_failing_class():
    base = list(rng.normal(100, 1, 10))
    slow = metric([50.0] * 10, base, threshold=None, higher_is="better")
    assert slow.verdict is Verdict.failed and slow.classification is Classification.low and "lower" in slow.reason
    fast = metric([150.0] * 10, base, threshold=None, higher_is="better")
    assert fast.verdict is Verdict.passed and fast.classification is Classification.high
    assert metric([40.0] * 5, [], threshold=60, higher_is="better").reason == "canary 40 below threshold 60"


def test_threshold_judge_against_baseline_and_absolute():
    worse = metric([0.3] * 5, [0.1] * 5, threshold=None, judge="threshold", tolerance=0.5)
    assert worse.verdict is Verdict.failed and "higher than baseline" in worse.reason and worse.p_value is None
    assert metric([0.14] * 5, [0.1] * 5, threshold=None, judge="threshold", tolerance=0.5).verdict is Verdict.passed
    assert metric([0.14] * 5, [], threshold=None, judge="threshold").verdict is Verdict.inconclusive
    # absolute: the baseline is not needed; success and failure conditions (Argo: neither holds = inconclusive)
    absolute = dict(judge="threshold", compare="absolute", success_threshold=0.02)
    assert metric([0.01] * 5, [], **absolute).verdict is Verdict.passed
    assert metric([0.03] * 5, [], **absolute).verdict is Verdict.inconclusive
    assert metric([0.06] * 5, [], **absolute).verdict is Verdict.failed
    assert metric([0.03] * 5, [], threshold=None, **absolute).verdict is Verdict.failed  # success only: unmet fails


def test_per_metric_limits_add_to_the_policy_limits():
    from flows.canary.models import preset_metrics

    strict = [m.model_copy(update={"failure_limit": 1}) if m.name == "latency_s" else m
              for m in preset_metrics("triton")]
    p = CanaryPolicy(metrics=strict, failure_limit=3, intervals_per_step=5)
    lat_bad = judge_interval(5, 1, [metric([0.0] * 5, [0.0] * 5), metric([2.0] * 5, [0.0] * 5, threshold=1.0,
                                                                          name="latency_s")])
    err_bad = judge_interval(5, 1, [metric([0.2] * 5, [0.0] * 5)])
    t = StepTracker(p)
    assert t.add(err_bad) is None and t.add(err_bad) is None  # error_rate: only the policy's limit of 3
    assert StepTracker(p).add(lat_bad) is Verdict.failed  # latency_s: its own limit of 1


# ---- binomial: a ratio of requests judged on its counts (LLM request rates: a handful of errors)
COUNT_Q = "sum(increase(r{track={{track}}}[{{interval}}]))"


def counted(c_ratio, c_n, b_ratio, b_n, threshold=None, **k):
    """One interval of a binomial metric: five points per track, the freshest window last."""
    return judge_metric(spec(failure_threshold=threshold, judge="binomial", count_query=COUNT_Q, **k),
                        interval_canary=[c_ratio] * 5, interval_baseline=[b_ratio] * 5,
                        step_canary=[c_ratio] * 5, step_baseline=[b_ratio] * 5, policy=P,
                        canary_count=[c_n] * 5, baseline_count=[b_n] * 5)


def test_chance_errors_at_llm_request_rates_do_not_fail_the_interval():
    """The false rollback the U test made on the rehearsal: ~800 requests a window, 0.1 % errors, so
    0-4 errors per track; overlapping rate windows repeat each one in every sample of the step."""
    sim = np.random.default_rng(11)
    n, p = 800, 0.001
    ranks, counts = 0, 0
    for _ in range(2000):
        kc, kb = sim.binomial(n, p), sim.binomial(n, p)
        # the U test sees the same window ten times a track (samples between scrapes repeat it)
        ranks += classify([kc / n] * 10, [kb / n] * 10, **kw())[0] is Classification.high
        counts += counted(kc / n, n, kb / n, n).verdict is Verdict.failed
    assert ranks > 20  # the rank test on repeated samples: a few percent of healthy intervals fail
    assert counts <= 2  # the exact test: what its 2.5 % one-sided level allows, less (tolerance, discreteness)


def test_a_real_regression_in_the_counts_fails_and_names_them():
    r = counted(0.0125, 800, 0.00125, 800)  # 10 errors against 1
    assert r.verdict is Verdict.failed and r.classification is Classification.high
    assert r.reason.startswith("canary higher than baseline beyond 25% (10 of 800 requests against 1 of 800, p=")
    assert r.p_value < 0.025
    assert counted(0.00875, 800, 0.00125, 800).verdict is Verdict.passed  # 7 against 1: p 0.07, chance enough
    assert counted(0.0125, 800, 0.00125, 800, threshold=0.01).reason == "canary 0.0125 above threshold 0.01"


def test_counts_keep_the_tolerance_and_the_floor():
    # 20 % more errors at high traffic is significant but within the 25 % tolerance
    assert counted(0.0012, 10_000_000, 0.001, 10_000_000, scale_floor=0.0).verdict is Verdict.passed
    assert counted(0.0015, 10_000_000, 0.001, 10_000_000, scale_floor=0.0).verdict is Verdict.failed
    # under the floor (1 % x 25 %): significant, but a quarter of a percentage point is not a regression
    assert counted(0.002, 1_000_000, 0.0, 1_000_000).verdict is Verdict.passed
    # fewer errors than baseline: Low, which passes a metric whose higher values are worse
    low = counted(0.0, 5000, 0.02, 5000)
    assert low.verdict is Verdict.passed and low.classification is Classification.low


def test_counts_without_requests_are_no_data_and_never_pass():
    for c_n, b_n in ((0.0, 800), (800, 0.0), (math.nan, 800)):
        r = counted(0.0, c_n, 0.0, b_n)
        assert r.verdict is Verdict.inconclusive and "requests in the window" in r.reason
    missing = judge_metric(spec(judge="binomial", count_query=COUNT_Q), interval_canary=[0.0] * 5,
                           interval_baseline=[0.0] * 5, step_canary=[], step_baseline=[], policy=P)
    assert missing.verdict is Verdict.inconclusive


def test_counts_of_a_ratio_whose_higher_values_are_better():
    """A success ratio: the bad requests are the rest."""
    worse = counted(0.95, 2000, 0.999, 2000, higher_is="better")
    assert worse.verdict is Verdict.failed and worse.classification is Classification.low
    assert "canary lower than baseline" in worse.reason and "100 of 2000 requests against 2 of 2000" in worse.reason
    assert counted(0.999, 2000, 0.998, 2000, higher_is="better").verdict is Verdict.passed
