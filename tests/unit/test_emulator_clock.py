"""The emulator's clock stands still while its process is stalled (``Clock.hold_through_stalls``).

A sped-up clock turns a host stall into cluster time nothing ran in; the rehearsal's timing
assertions (an inference pod ready within 30 cluster seconds) must not fail on a stall of the test
machine. The stall here is real: the process is stopped with SIGSTOP, as a loaded host or a
stop-the-world pause stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from flows.standins.kube_emulator.clock import Clock

CHILD = """
import sys, time
from flows.standins.kube_emulator.clock import Clock
c = Clock()
c.speed = 20.0
if sys.argv[1] == "hold":
    c.hold_through_stalls(0.1)
t0, m0 = c.time(), time.monotonic()
print("ready", flush=True)
sys.stdin.readline()
print(c.time() - t0, time.monotonic() - m0, c.stalls, c.stalled_s, flush=True)
"""


def stalled_child(mode: str, stall_s: float = 1.0) -> tuple[float, float, int, float]:
    """Run a clock in a child process stopped for ``stall_s``; its (cluster s, wall s, stalls, stalled s)."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert p.stdout is not None and p.stdin is not None
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(stall_s)
        os.kill(p.pid, signal.SIGCONT)
        time.sleep(0.3)
        p.stdin.write("go\n")
        p.stdin.flush()
        cluster, wall, stalls, stalled = p.stdout.readline().split()
        return float(cluster), float(wall), int(stalls), float(stalled)
    finally:
        p.kill()
        p.wait()


def test_the_clock_stands_still_while_its_process_is_stopped():
    cluster, wall, stalls, stalled = stalled_child("hold")
    assert wall >= 1.5
    assert stalls >= 1 and stalled >= 0.85  # the stop, less the 0.1 s the clock may run into it
    # everything but the stall ran at 20x, and the stall did not count
    assert cluster <= (wall - stalled) * 20 + 1
    assert cluster >= (wall - 1.0 - 0.1) * 20 * 0.8  # (the child's own wake-ups take a little)


def test_without_the_heartbeat_a_stall_is_cluster_time():
    cluster, wall, stalls, _ = stalled_child("plain")
    assert stalls == 0
    assert cluster >= wall * 20 - 1


def test_the_held_clock_is_monotonic_and_follows_speed_changes_and_jumps():
    c = Clock()
    c.speed = 50.0
    c.hold_through_stalls(0.1)
    try:
        seen = [c.time()]
        for _ in range(20):
            time.sleep(0.01)
            seen.append(c.time())
        assert seen == sorted(seen)
        assert seen[-1] - seen[0] >= 20 * 0.01 * 50 * 0.8
        c.advance(100)
        assert c.time() >= seen[-1] + 100
        before = c.time()
        c.speed = 1.0
        assert c.time() >= before and c.speed == 1.0
    finally:
        c.stop()
