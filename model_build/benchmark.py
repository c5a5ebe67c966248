"""Latency and throughput of one model on this worker's execution provider.

Batch 1: p50/p99 latency over all timed runs. Batches 8 and 32: samples per second, the median of
``repeats`` timed repeats. Every measurement starts with warm-up runs, and the models compared
are measured interleaved, repeat by repeat. Inputs are real evaluation
samples (tiled when the dataset is smaller than the batch).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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


def _in_turn(sessions: dict, round_: int) -> list:
    """The sessions in order, every other round reversed: no model always runs after the same one."""
    items = list(sessions.items())
    return items if round_ % 2 == 0 else items[::-1]


def measure(paths: dict[str, Path], data: Dataset, *, threads: int = 0, batches: tuple[int, ...] = (8, 32),
            warmup: int = 5, repeats: int = 5, min_time_s: float = 0.2) -> dict[str, Perf]:
    """Benchmark several models of the same inputs (FP32 and its candidates), interleaved: each
    repeat runs every model in turn, so load that changes during the run (a shared worker) hits
    all of them alike and the ratios between them stay meaningful; every other repeat in reverse
    order, so that no model always runs in the same place (after the same other model)."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    lat: dict[str, list[float]] = {name: [] for name in paths}
    rates: dict[str, dict[int, list[float]]] = {name: {} for name in paths}
    feeds: dict[int, dict[str, np.ndarray]] = {}
    sizes = {name: ([fixed_batch(s)] if fixed_batch(s) else list(batches)) for name, s in sessions.items()}
    for name, sess in sessions.items():
        one = _feed(data, fixed_batch(sess) or 1)
        for _ in range(warmup):
            sess.run(None, one)
        for b in sizes[name]:
            feeds.setdefault(b, _feed(data, b))
            sess.run(None, feeds[b])
    for r in range(repeats):
        for name, sess in _in_turn(sessions, r):
            one = _feed(data, fixed_batch(sess) or 1)
            t_end = time.perf_counter() + min_time_s
            while True:
                t0 = time.perf_counter()
                sess.run(None, one)
                lat[name].append((time.perf_counter() - t0) * 1e3)
                if t0 > t_end:
                    break
            for b in sizes[name]:
                n, t0 = 0, time.perf_counter()
                while True:
                    sess.run(None, feeds[b])
                    n += 1
                    if time.perf_counter() - t0 >= min_time_s:
                        break
                rates[name].setdefault(b, []).append(n * b / (time.perf_counter() - t0))
    out = {}
    for name, sess in sessions.items():
        by_batch = {str(b): float(np.median(r)) for b, r in rates[name].items()}
        out[name] = Perf(provider=sess.get_providers()[0], threads=threads,
                         latency_ms_p50=float(np.percentile(lat[name], 50)),
                         latency_ms_p99=float(np.percentile(lat[name], 99)),
                         throughput=by_batch[str(max(sizes[name]))], throughput_by_batch=by_batch)
    return out


def cpu_ms(paths: dict[str, Path], data: Dataset, *, batches: tuple[int, ...] = (1, 32), rounds: int = 9,
           min_s: float = 0.3) -> dict[str, dict[str, list[float]]]:
    """CPU milliseconds per batch on one intra-op thread (``time.thread_time`` around ``run()``):
    what a model costs, less what else the machine is doing, which moves wall-clock figures on a
    shared worker by tens of percent from minute to minute. ``rounds`` rounds, each timing every
    model for at least ``min_s`` per batch size, every other round in reverse order, so that models
    are compared round by round (back to back). Per model and batch size (its own fixed batch, if
    it has one), every round's figure."""
    sessions = {k: session(p, threads=1) for k, p in paths.items()}
    sizes = {k: [fixed_batch(s)] if fixed_batch(s) else list(batches) for k, s in sessions.items()}
    feeds = {b: _feed(data, b) for bs in sizes.values() for b in bs}
    for k, s in sessions.items():
        for b in sizes[k]:
            s.run(None, feeds[b])
    samples: dict[str, dict[str, list[float]]] = {k: {str(b): [] for b in sizes[k]} for k in sessions}
    for r in range(rounds):
        for k, s in _in_turn(sessions, r):
            for b in sizes[k]:
                n, t0 = 0, time.thread_time()
                while time.thread_time() - t0 < min_s:
                    s.run(None, feeds[b])
                    n += 1
                samples[k][str(b)].append((time.thread_time() - t0) / n * 1e3)
    return samples


def paired(slow: list[float], fast: list[float]) -> dict[str, float]:
    """``slow`` over ``fast``, round by round (the two ran back to back in each round): the median
    of those ratios, and their quartiles, which show how far this host's noise moves it."""
    ratios = np.asarray(slow) / np.asarray(fast)
    q25, q50, q75 = np.percentile(ratios, (25, 50, 75))
    return {"median": float(q50), "q25": float(q25), "q75": float(q75)}


def cpu_speedup(fp32: dict[str, list[float]], candidate: dict[str, list[float]]) -> dict[str, Any]:
    """FP32 CPU time over the candidate's, from two models' ``cpu_ms`` samples: per batch size both
    were timed at, ``batch<N>`` (the median of the round-by-round ratios), ``worst`` of those, and
    the ``quartiles`` of each."""
    ratios = {b: paired(fp32[b], candidate[b]) for b in fp32 if b in candidate}
    if not ratios:
        raise ValueError("no batch size timed for both models")
    out: dict[str, Any] = {f"batch{b}": r["median"] for b, r in ratios.items()}
    out["worst"] = min(r["median"] for r in ratios.values())
    out["quartiles"] = {f"batch{b}": [r["q25"], r["q75"]] for b, r in ratios.items()}
    out["threads"], out["rounds"] = 1, min(len(v) for v in fp32.values())
    return out


def cpu_numbers(cpu: dict[str, Any], times: str = "x") -> str:
    """``cpu_speedup``'s ratios per batch size, for people: "batch 1 2.31x, batch 32 2.95x"."""
    return ", ".join(f"batch {k[5:]} {v:.2f}{times}" for k, v in cpu.items() if k.startswith("batch"))


def speedup(fp32: Perf, candidate: Perf) -> dict[str, float]:
    """FP32 time over candidate time: batch-1 p50 latency and largest-batch throughput."""
    return {"batch1_latency": fp32.latency_ms_p50 / candidate.latency_ms_p50,
            "throughput": candidate.throughput / fp32.throughput}
