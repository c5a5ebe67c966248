"""Time for long-running controllers: the wall clock in flows, a simulated one in benchmarks and tests.

A controller (a canary rollout, a night window) never calls ``time.time()`` or ``time.sleep()``; it
asks its :class:`Clock`. The flow passes :class:`WallClock`; a benchmark or a unit test passes a
:class:`SimClock` whose ``sleep`` moves time forward at once (and may drive a simulation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""


def wait(clock: Clock, event: threading.Event | None, seconds: float) -> bool:
    """Let up to ``seconds`` pass on ``clock``, less if ``event`` is set (a watch saw something to act
    on). True if woken early. A clock without ``wait`` (simulated time) sleeps the whole time."""
    waiter = getattr(clock, "wait", None)
    if event is None or waiter is None:
        clock.sleep(seconds)
        return False
    return bool(waiter(event, seconds))


def utcnow(clock: Clock) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.now(), UTC)


class WallClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


class SimClock:
    """Simulated time: ``sleep`` returns at once, having moved ``now`` forward.

    ``on_advance(old, new)``, if given, runs the world from ``old`` to ``new`` (a simulator's step).
    """

    def __init__(self, start: float = 0.0, on_advance: Callable[[float, float], None] | None = None) -> None:
        self.t = float(start)
        self.on_advance = on_advance
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        old, self.t = self.t, self.t + seconds
        self.slept += seconds
        if self.on_advance is not None:
            self.on_advance(old, self.t)
