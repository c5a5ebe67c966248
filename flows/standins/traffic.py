"""Simulated inference traffic for canary tests and the benchmark: one exporter per track.

Each :class:`TrackTraffic` serves Triton-style metrics (``nv_inference_request_success``/
``_failure``/``_duration_us``, cumulative, without ``_total`` like Triton's) and generic HTTP
gateway metrics (``http_requests_total{code}``, ``http_request_duration_seconds``) through a real
``prometheus_client`` registry that the real Prometheus scrapes. A background thread adds requests
at ``rps`` with the given error ratio and a log-normal latency around ``latency_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)


class TrackTraffic:
    def __init__(self, make_exporter: Callable[[Mapping[str, str]], object], namespace: str, deployment: str,
                 track: str, *, error_rate: float = 0.001, latency_s: float = 0.1, rps: float = 200.0,
                 seed: int = 0) -> None:
        self.exporter = make_exporter({"namespace": namespace, "deployment": deployment, "track": track})
        reg = self.exporter.registry
        self.success = Gauge("nv_inference_request_success", "Triton successful requests", registry=reg)
        self.failure = Gauge("nv_inference_request_failure", "Triton failed requests", registry=reg)
        self.duration = Gauge("nv_inference_request_duration_us", "Triton cumulative request duration",
                              registry=reg)
        self.http = Counter("http_requests", "gateway requests", ["code"], registry=reg)
        self.http_latency = Histogram("http_request_duration_seconds", "gateway latency", buckets=BUCKETS,
                                      registry=reg)
        self.error_rate, self.latency_s, self.rps = error_rate, latency_s, rps
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"traffic-{track}")
        self._thread.start()

    def _loop(self, tick: float = 0.1) -> None:
        while not self._stop.wait(tick):
            n = int(self._rng.poisson(self.rps * tick))
            if n == 0:
                continue
            failed = int(self._rng.binomial(n, self.error_rate))
            lat = self._rng.lognormal(np.log(self.latency_s), 0.25, n)
            self.success.inc(n - failed)
            self.failure.inc(failed)
            self.duration.inc(float(lat.sum()) * 1e6)
            self.http.labels(code="200").inc(n - failed)
            if failed:
                self.http.labels(code="503").inc(failed)
            for x in lat:
                self.http_latency.observe(float(x))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.exporter.close()


def start_tracks(make_exporter, namespace: str, deployment: str, *, canary: dict | None,
                 baseline: dict | None = None, seed: int = 0) -> list[TrackTraffic]:
    """Baseline + canary traffic; ``canary=None`` emulates a canary that reports nothing."""
    out = [TrackTraffic(make_exporter, namespace, deployment, "baseline", seed=seed, **(baseline or {}))]
    if canary is not None:
        out.append(TrackTraffic(make_exporter, namespace, deployment, "canary", seed=seed + 1, **canary))
    return out


def wait_scraped(prometheus, tracks: list[TrackTraffic], scrapes: int = 3, timeout: float = 30.0) -> None:
    """Until Prometheus holds ``scrapes`` samples of each track's own exporter (by ``instance``).

    Matching on the track label alone is not enough: an earlier test's exporter with the same
    labels leaves series behind, and a new target's first scrapes come a while after it appears
    in file SD. Without its samples, the first analysis interval's rate() is empty ("no data").
    """
    for t in tracks:
        prometheus.wait_for(f'count_over_time(nv_inference_request_success{{instance="{t.exporter.instance}"}}[1m])',
                            timeout=timeout, predicate=lambda s: bool(s) and s[0].value >= scrapes)


HEALTHY: dict = {}
FAULTS: dict[str, dict | None] = {
    "5xx": {"error_rate": 0.08},
    "slow-p99": {"latency_s": 0.3},
    "silent": None,
}
