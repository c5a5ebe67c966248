"""The rehearsal's scenarios, shared by tests/integration/test_rehearsal_stack.py and the benchmarks:
a canary of llm-server with a traffic surge in the middle, and a night of offline jobs. The cluster
itself is :class:`flows.standins.rehearsal.Rehearsal`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flows.canary import planner
from flows.canary.models import CanaryPolicy
from flows.standins.rehearsal import APP, NS, Rehearsal

STABLE_IMAGE = "nvcr.io/nvidia/tritonserver:25.01-trtllm-python-py3"
# the canary analysis as it would run against the shipped PodMonitor: 5 s scrapes, 5 s intervals
POLICY = CanaryPolicy(steps=[25, 50, 100], interval_s=5, scrape_interval_s=5, samples_per_interval=5,
                      intervals_per_step=2, failure_limit=2, inconclusive_limit=3, readiness_timeout_s=300)
FAULTS = {"5xx": {"error_rate": 0.08}, "slow": {"latency_s": 0.3}, "silent": {"silent": True}}


@dataclass
class CanaryRun:
    outcome: str
    reason: str
    seconds: float  # the whole flow
    detection_s: float | None  # from the canary serving traffic to the end of the rollback
    replicas_before: int
    hpa_desired_before: int
    hpa_desired_peak: int
    replicas_after: int
    hpa_desired_after: int
    surged: bool
    canary_series: int  # canary pods Prometheus scraped through the PodMonitor
    violations: int
    overrides: int
    notes: list[str] = field(default_factory=list)


def canary_image(tag: str, fault: str | None, rehearsal: Rehearsal) -> str:
    image = f"nvcr.io/nvidia/tritonserver:{tag}"
    assert rehearsal.dataplane is not None
    if fault:
        rehearsal.dataplane.behave(image, **FAULTS[fault])
    return image


def wait_quiet(rehearsal: Rehearsal, seconds: int = 12, timeout: float = 60.0) -> None:
    """Until the last rollout's canary and baseline series are ``seconds`` old.

    The analysis selects series by ``track``, and its rate window (4 scrapes, 20 s) would still hold
    the last samples of the previous rollout's canary pods: a new canary is only judged once they
    have aged out of the window by its first interval (ready and 5 s of traffic later)."""
    assert rehearsal.prom is not None
    q = (f'count(count_over_time(nv_inference_request_success{{namespace="{NS}",deployment="{APP}",'
         f'track=~"canary|baseline"}}[{int(seconds)}s]))')
    rehearsal.prom.wait_for(q, timeout=timeout, predicate=lambda samples: not samples)


def run_canary(rehearsal: Rehearsal, image: str, *, surge_pods: int = 3, policy: CanaryPolicy = POLICY,
               run: Any = None) -> CanaryRun:
    """Canary ``image`` on llm-server in the rehearsal's traffic mode; once the canary serves, raise the
    load so that the HPA wants ``surge_pods`` more stable pods. ``run(policy)`` runs the flow and
    returns ``(outcome, reason)`` (the test's and the benchmark's way of calling it)."""
    assert rehearsal.dataplane is not None and rehearsal.guard is not None
    guard, dp = rehearsal.guard, rehearsal.dataplane
    wait_quiet(rehearsal)
    policy = policy.model_copy(update={"traffic_mode": rehearsal.traffic_mode})
    before = int(rehearsal.stable()["spec"]["replicas"])
    desired_before = int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or before)
    violations, overrides = len(guard.violations), len(guard.overrides)
    dp.stable_rps = rehearsal.load_for(before * 0.8)
    serving: dict[str, float] = {}
    peak = [desired_before]
    done = threading.Event()

    target = before + surge_pods

    def surge() -> None:
        canary = planner.track_name(APP, planner.Track.canary)
        while not done.is_set():
            if "at" not in serving and any(v > 0 for k, v in dp.pod_rps.items() if k.startswith(f"{canary}-")):
                serving["at"] = time.monotonic()
                # the demand on the stable pods rises so that the HPA wants `target` of them, whatever
                # share of the traffic canary and baseline take meanwhile
                dp.stable_rps = rehearsal.load_for(target)
            peak[0] = max(peak[0], int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or 0))
            time.sleep(0.1)

    t = threading.Thread(target=surge, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        outcome, reason = run(policy)
    finally:
        done.set()
        t.join()
    end = time.monotonic()
    series = _canary_series(rehearsal)
    dp.stable_rps = rehearsal.load_for(target if "at" in serving else before)  # the surge stays: so does the count
    after = int(rehearsal.stable()["spec"]["replicas"])
    return CanaryRun(outcome, reason, round(end - t0, 1),
                     round(end - serving["at"], 1) if "at" in serving else None, before, desired_before, peak[0],
                     after, int((rehearsal.hpa().get("status") or {}).get("desiredReplicas") or after),
                     "at" in serving, series, len(guard.violations) - violations, len(guard.overrides) - overrides)


def _canary_series(rehearsal: Rehearsal) -> int:
    assert rehearsal.prom is not None
    with rehearsal.prom.client() as c:
        got = c.query(f'count(count_over_time(nv_inference_request_success{{namespace="{NS}",deployment="{APP}",'
                      f'track="canary"}}[2m]))')
    return int(got[0].value) if got else 0


def flow_runner(env: dict[str, str]):
    """``run(policy)`` for :func:`run_canary`: the real canary_rollout flow, inline (offline)."""
    import os

    from flows.canary.flow import canary_rollout
    from flows.common.errors import GateFailed
    from flows.common.runtime import run_flow
    from flows.common.settings import get_settings

    def run_with(image: str):
        def run(policy: CanaryPolicy) -> tuple[str, str]:
            os.environ.update(env, INFEROPS_OFFLINE="1")
            get_settings.cache_clear()
            try:
                out = run_flow(canary_rollout, namespace=NS, deployment=APP, image=image, policy=policy)
                return out["outcome"], out["reason"]
            except GateFailed as exc:
                return "rolled back", str(exc)
        return run
    return run_with
