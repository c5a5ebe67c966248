"""Forecast of inference demand in tonight's window, from the same clock hours of recent nights."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np


def forecast_demand(history: Sequence[tuple[float, float]], window_start: datetime, window_end: datetime,
                    slot_s: int, nights: int = 7, quantile: float = 0.9) -> list[float]:
    """Per slot of the window: the ``quantile`` over past nights of the peak demand in that slot.

    ``history`` is ``(unix_time, gpus_busy_with_inference)``. A slot no past night covers gets the
    highest forecast of the window (unknown is not "free"); no history at all gives ``[]``.
    Nights are calendar days back in the window's timezone, so DST keeps the clock hours.
    """
    if not history:
        return []
    ts = np.array([t for t, _ in history], dtype=float)
    vs = np.array([v for _, v in history], dtype=float)
    order = np.argsort(ts)
    ts, vs = ts[order], vs[order]
    n_slots = max(1, math.ceil((window_end - window_start).total_seconds() / slot_s))
    peaks: list[list[float]] = [[] for _ in range(n_slots)]
    for k in range(1, nights + 1):
        night = window_start - timedelta(days=k)
        t0 = night.timestamp()
        for i in range(n_slots):
            lo, hi = np.searchsorted(ts, [t0 + i * slot_s, t0 + (i + 1) * slot_s])
            seg = vs[lo:hi]
            seg = seg[~np.isnan(seg)]
            if seg.size:
                peaks[i].append(float(seg.max()))
    known = [float(np.quantile(p, quantile, method="higher")) if p else None for p in peaks]
    if all(v is None for v in known):
        return []
    top = max(v for v in known if v is not None)
    return [top if v is None else v for v in known]
