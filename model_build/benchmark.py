"""Latency and throughput of one model on this worker's execution provider.

Batch 1: p50/p99 latency over all timed runs. Batches 8 and 32: samples per second, the median of
``repeats`` timed repeats. Every measurement starts with warm-up runs. Inputs are real evaluation
samples (tiled when the dataset is smaller than the batch).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from model_build.calibrate import Dataset, n_samples
from model_build.evaluate import fixed_batch, session


class Perf(BaseModel):
    provider: str
    threads: int
    latency_ms_p50: float
    latency_ms_p99: float
    throughput: float  # samples/s at the largest measured batch
    throughput_by_batch: dict[str, float]


def _feed(data: Dataset, batch: int) -> dict[str, np.ndarray]:
    reps = -(-batch // n_samples(data))
    return {k: np.ascontiguousarray(np.concatenate([np.asarray(v)] * reps)[:batch]) for k, v in data.items()}


def measure(path: str | Path, data: Dataset, *, threads: int = 0, batches: tuple[int, ...] = (8, 32),
            warmup: int = 5, repeats: int = 5, min_time_s: float = 0.2) -> Perf:
    sess = session(path, threads)
    fixed = fixed_batch(sess)
    one = _feed(data, fixed or 1)
    for _ in range(warmup):
        sess.run(None, one)
    lat: list[float] = []
    for _ in range(repeats):
        t_end = time.perf_counter() + min_time_s
        while True:
            t0 = time.perf_counter()
            sess.run(None, one)
            lat.append((time.perf_counter() - t0) * 1e3)
            if t0 > t_end:
                break
    by_batch: dict[str, float] = {}
    for b in ([fixed] if fixed else batches):
        feed = _feed(data, b)
        for _ in range(2):
            sess.run(None, feed)
        rates = []
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while True:
                sess.run(None, feed)
                n += 1
                if time.perf_counter() - t0 >= min_time_s:
                    break
            rates.append(n * b / (time.perf_counter() - t0))
        by_batch[str(b)] = float(np.median(rates))
    return Perf(provider=sess.get_providers()[0], threads=threads,
                latency_ms_p50=float(np.percentile(lat, 50)), latency_ms_p99=float(np.percentile(lat, 99)),
                throughput=by_batch[str(max(int(k) for k in by_batch))], throughput_by_batch=by_batch)


def speedup(fp32: Perf, candidate: Perf) -> dict[str, float]:
    """FP32 time over candidate time: batch-1 p50 latency and largest-batch throughput."""
    return {"batch1_latency": fp32.latency_ms_p50 / candidate.latency_ms_p50,
            "throughput": candidate.throughput / fp32.throughput}
