"""The emulator's clock: every timer (probes, grace periods, deadlines, HPA windows, TTLs) and every
timestamp the emulator writes reads it. Tests speed it up (``speed``) or jump it (``advance``)."""

from __future__ import annotations

import datetime as dt
import threading
import time


class Clock:
    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._base = time.time()
        self._mono = time.monotonic()
        self._speed = speed
        self._offset = 0.0

    def time(self) -> float:
        """Emulated epoch seconds."""
        with self._lock:
            return self._base + self._offset + (time.monotonic() - self._mono) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        """From now on, one wall second is ``value`` emulated seconds."""
        now = self.time()
        with self._lock:
            self._base, self._mono, self._offset, self._speed = now, time.monotonic(), 0.0, float(value)

    def advance(self, seconds: float) -> None:
        """Jump forward: timers due in the next ``seconds`` fire at the controllers' next tick."""
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._base, self._mono, self._offset, self._speed = time.time(), time.monotonic(), 0.0, 1.0

    def iso(self, t: float | None = None) -> str:
        t = self.time() if t is None else t
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
