"""The emulator's clock: every timer (probes, grace periods, deadlines, HPA windows, TTLs) and every
timestamp the emulator writes reads it. Tests speed it up (``speed``) or jump it (``advance``).

A sped-up clock magnifies every stall of the process that hosts the emulator: at 20x, a 0.5 s
garbage collection or a descheduled moment on a loaded test machine is 10 cluster seconds in which
no controller, scheduler or kubelet ran. A real cluster does not stop when its client's host does.
``hold_through_stalls`` makes the clock stand still through such gaps instead (see there)."""

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
        self._held = 0.0  # wall seconds since _mono in which the clock stood still
        self._beat = self._mono  # the heartbeat's last beat (monotonic)
        self._max_gap: float | None = None
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None
        self.stalls = 0  # host stalls held through, and their wall seconds in all
        self.stalled_s = 0.0

    def _elapsed(self, mono: float) -> float:
        held = self._held
        if self._max_gap is not None:  # a stall in progress: stand still from its max_gap on
            held += max(0.0, mono - self._beat - self._max_gap)
        return mono - self._mono - held

    def time(self) -> float:
        """Emulated epoch seconds."""
        with self._lock:
            return self._base + self._offset + self._elapsed(time.monotonic()) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        """From now on, one wall second is ``value`` emulated seconds."""
        with self._lock:
            mono = time.monotonic()
            now = self._base + self._offset + self._elapsed(mono) * self._speed
            self._base, self._mono, self._offset, self._speed = now, mono, 0.0, float(value)
            self._held, self._beat = 0.0, mono

    def advance(self, seconds: float) -> None:
        """Jump forward: timers due in the next ``seconds`` fire at the controllers' next tick."""
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        with self._lock:
            self._base, self._mono, self._offset, self._speed = time.time(), time.monotonic(), 0.0, 1.0
            self._held, self._beat = 0.0, self._mono

    def hold_through_stalls(self, max_gap_s: float = 0.1) -> None:
        """Stand still while this process is stalled. A heartbeat thread beats every quarter of
        ``max_gap_s``; when a beat comes more than ``max_gap_s`` late (a stop-the-world garbage
        collection, the host descheduling the process, a C call holding the GIL), the clock did not
        move after the first ``max_gap_s`` of the gap, for every reader, and stays monotonic. The
        ordinary latency of a busy process (the GIL's 5 ms switches) stays well under the gap, so
        work the emulated cluster or its clients do still takes cluster time. ``stalls`` and
        ``stalled_s`` count what was held."""
        with self._lock:
            if self._max_gap is not None:
                return
            self._max_gap, self._beat = max_gap_s, time.monotonic()
        self._stop.clear()
        self._heart = threading.Thread(target=self._heartbeat, name="emulator-clock-heartbeat", daemon=True)
        self._heart.start()

    def _heartbeat(self) -> None:
        assert self._max_gap is not None
        while not self._stop.wait(self._max_gap / 4):
            with self._lock:
                mono = time.monotonic()
                gap = mono - self._beat - self._max_gap
                if gap > 0:
                    self._held += gap
                    self.stalls += 1
                    self.stalled_s += gap
                self._beat = mono
        with self._lock:
            self._held += max(0.0, time.monotonic() - self._beat - self._max_gap)
            self._max_gap = None

    def stop(self) -> None:
        """End the heartbeat (the clock runs on, on wall time)."""
        self._stop.set()
        if self._heart is not None:
            self._heart.join(timeout=5)
            self._heart = None

    def iso(self, t: float | None = None) -> str:
        t = self.time() if t is None else t
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
