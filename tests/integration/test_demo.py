"""`make demo` as a newcomer runs it: every pipeline once on embedded local defaults, recorded in a local
Prefect server, in a network namespace that has only `lo` (so its own port 4200), every connection
recorded with strace. The state folder (the Prefect database, the model registry) is the test's own
(``INFEROPS_STATE_DIR``), so a developer's `.inferops/` is not touched.

Without root (no network namespaces) it runs in this namespace on a free port, still recorded by strace.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flows.common.demo import PIPELINES
from flows.standins.ports import free_port
from flows.standins.sshhosts.hosts import SUBNET
from tests.integration.connections import beyond, strace_prefix

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _netns(name: str) -> bool:
    if os.geteuid() != 0:
        return False
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        return False
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    return True


def test_make_demo_runs_every_pipeline_records_the_runs_and_reaches_nothing_beyond_loopback(tmp_path):
    from flows.standins.sshhosts import unavailable_reason
    from flows.standins.sshhosts.rootfs import ensure_rootfs

    hosts = unavailable_reason() is None  # else host-bootstrap shows its plan instead of a check-mode run
    if hosts:
        ensure_rootfs()  # a fresh machine builds the test hosts' Debian root here: the namespace has no mirror
    ns = f"inferops-demo-{os.getpid()}"
    prefix = ["ip", "netns", "exec", ns] if _netns(ns) else []
    trace, out, state = tmp_path / "connections.strace", tmp_path / "demo-output", tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INFEROPS_", "AWS_", "KUBE"))}
    env.update(PYTHONPATH=str(REPO), INFEROPS_STATE_DIR=str(state),
               INFEROPS_LOCAL__PORT=str(4200 if prefix else free_port()))  # a fresh namespace has 4200 free
    try:
        p = subprocess.run([*prefix, *strace_prefix(trace), sys.executable, "-m", "flows.common.cli", "demo",
                            "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        if prefix:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-6000:]
    assert "Traceback" not in log, log[-6000:]
    for pipeline, _module, rel in PIPELINES:  # each progress line says ok, and its fixed output is there
        assert f"── {pipeline} …\n   ok: " in p.stdout, (pipeline, p.stdout[-4000:])
        assert (out / rel).exists(), rel
    manifest = json.loads((out / "model-build" / "manifest.json").read_text())
    assert manifest["deployable"] is True and manifest["precision"] == "int8"
    restore = json.loads((out / "log-backup" / "summary.json").read_text())["restore"]
    assert restore["verified_files"] == restore["restored_files"] > 0 and restore["failed_files"] == 0

    # the runs are in the state folder's Prefect database: Completed, but for the DRBD check, which fails
    # as it should (the bundled captures hold a split brain: CRITICAL)
    with sqlite3.connect(state / "prefect" / "prefect.db") as db:
        runs = db.execute("select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id").fetchall()
    assert {name for name, _ in runs} == {"model-build", "canary-plan", "log-backup", "log-restore", "drbd-health",
                                          "cost-report", "idle-gpu-plan"} | ({"gpu-host-bootstrap"} if hosts else set())
    assert {(name, st) for name, st in runs if st != "COMPLETED"} == {("drbd-health", "FAILED")}, runs

    if not strace_prefix(trace):
        pytest.skip("strace is not installed: connections not recorded")
    # loopback, and the SSH test hosts the demo started itself (host-bootstrap's check mode)
    lines = beyond(trace, allowed=(f"{SUBNET}.0/24",))
    assert not lines, "connections beyond loopback:\n" + "\n".join(lines[:20])
