"""`inferops idle-gpu plan` (no cluster), the demo, and the tracker's bookkeeping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.idle_gpu.demo import DATA, run
from flows.idle_gpu.models import OfflineJob
from flows.idle_gpu.tracker import JobView, PodView, Tracker


def test_plan_from_a_snapshot_without_a_cluster(run_cli, tmp_path):
    out = tmp_path / "plan.json"
    r = run_cli("idle-gpu", "plan", "--queue", str(DATA / "queue.yaml"), "--capacity", str(DATA / "capacity.json"),
                "--timezone", "UTC", "--now", "2026-11-28T00:30:00+00:00", "--headroom-gpus", "2", "--json",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert json.loads(out.read_text()) == plan
    assert plan["window_start"] == "2026-11-28T01:00:00+00:00" and plan["window_end"] == "2026-11-28T07:00:00+00:00"
    p = plan["plan"]
    names = {x["job"] for x in p["placements"]} | {x["job"] for x in p["unplaced"]}
    assert len(names) == 12  # every job of the queue is either planned or reported with a reason
    assert all(x["end"] <= plan["window_end"] for x in p["placements"])
    assert {"job": "eval-full-sweep", "reason": "needs 7.70 h, only 5.92 h left before the window end"} in p["unplaced"]
    human = run_cli("idle-gpu", "plan", "-q", str(DATA / "queue.yaml"), "-c", str(DATA / "capacity.json"),
                    "--timezone", "UTC")
    assert human.returncode == 0 and "jobs planned" in human.stdout


def test_plan_bad_inputs_are_one_line_errors(run_cli, tmp_path):
    bad_queue = tmp_path / "q.yaml"
    bad_queue.write_text("jobs: [unclosed")
    cases = [
        (["--queue", str(bad_queue), "--capacity", str(DATA / "capacity.json")], "is not valid YAML/JSON"),
        (["--queue", str(DATA / "queue.yaml"), "--capacity", str(tmp_path / "none.json")], "not found"),
        (["--queue", str(DATA / "queue.yaml"), "--capacity", str(bad_queue)], "capacity snapshot"),
        (["--queue", str(DATA / "queue.yaml"), "--capacity", str(DATA / "capacity.json"), "--now", "yesterday"],
         "not an ISO datetime"),
        (["--queue", str(DATA / "queue.yaml"), "--capacity", str(DATA / "capacity.json"), "--timezone", "Nowhere/X"],
         "unknown timezone"),
        (["--queue", str(DATA / "queue.yaml"), "--capacity", str(DATA / "capacity.json"), "--slot-seconds", "0"],
         "slot_seconds"),
    ]
    for args, msg in cases:
        r = run_cli("idle-gpu", "plan", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("inferops: ") and msg in lines[0], (args, r.stderr)


def test_demo_writes_the_plan(tmp_path):
    summary = run(tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert summary.startswith(f"{len(plan['plan']['placements'])} jobs planned")
    assert plan["capacity"] == {"nodes": 8, "allocatable_gpus": 64, "idle_gpus_now": 35, "forecast_peak_gpus": 30}
    assert Path(tmp_path / "plan.json").stat().st_size > 0


T0 = datetime(2026, 11, 28, 1, tzinfo=UTC)


def _job(name, checkpointable=False, gpus=2):
    return OfflineJob(name=name, image="i", command=["x"], gpus=gpus, estimated_hours=1, checkpointable=checkpointable)


def _view(job, state="active", pods=(), reason=""):
    return JobView(f"idle-{job}", job, state, reason, "n1", tuple(pods))


def test_tracker_outcomes_and_gpu_hours():
    jobs = [_job("a"), _job("b", checkpointable=True), _job("c"), _job("d"), _job("e"), _job("f", gpus=1)]
    t = Tracker(jobs)
    for j in "abcde":
        t.submitted(j, f"idle-{j}", "n1", T0)
    run = lambda uid, start, end=None, phase="Running", disrupted=False: PodView(  # noqa: E731
        uid, phase, T0 + timedelta(minutes=start), end and T0 + timedelta(minutes=end), disrupted)
    now = T0 + timedelta(minutes=30)
    views = [
        _view("a", pods=[run("a1", 0, 10, "Failed", True)]),  # preempted, cannot checkpoint
        _view("b", pods=[run("b1", 0, 20, "Failed", True)]),  # preempted, can checkpoint
        _view("c", "complete", [run("c1", 0, 30, "Succeeded")]),
        _view("d", "failed", [run("d1", 0, 5, "Failed")], reason="BackoffLimitExceeded"),
        _view("e", pods=[run("e1", 0)]),
    ]
    assert t.observe(views, now) == ["idle-a", "idle-b"]  # preempted Jobs go, whatever they can do
    assert t.observe(views[:2], now) == ["idle-a", "idle-b"]  # ... until they are gone
    assert [j.name for j in t.pending()] == ["b", "f"]  # b goes back to the planner with 40 minutes left
    assert t.remaining_hours() == {"b": pytest.approx(40 / 60)}
    t.submitted("b", "idle-b-r1", "n2", now)
    t.observe([JobView("idle-b-r1", "b", "active", "", "n2", (run("b2", 31),))], now + timedelta(minutes=4))
    t.stopped({"idle-b-r1", "idle-e"})
    report = t.report(T0, T0 + timedelta(hours=6), idle_gpu_hours=10.0)
    by = {j["job"]: j for j in report["jobs"]}
    assert {k: v["outcome"] for k, v in by.items()} == {
        "a": "preempted", "b": "stopped", "c": "done", "d": "failed", "e": "stopped", "f": "not_scheduled"}
    assert by["b"]["preemptions"] == 1 and by["b"]["attempts"] == 2 and by["a"]["preemptions"] == 1
    assert by["b"]["gpu_hours"] == round(2 * (20 + 3) / 60, 4)  # both attempts of b, 2 GPUs each
    assert report["gpu_hours_used"] == round(2 * (10 + 23 + 30 + 5 + 30) / 60, 4)
    assert report["fill_ratio"] == round(report["gpu_hours_used"] / 10.0, 4)
    assert report["outcomes"] == {"done": 1, "preempted": 1, "requeued": 0, "stopped": 2, "failed": 1,
                                  "not_scheduled": 1}
    t2 = Tracker([_job("g", checkpointable=True)])
    t2.submitted("g", "idle-g", "n1", T0)
    t2.observe([_view("g", pods=[run("g1", 0, 5, "Failed", True)])], now)
    assert t2.report(T0, T0, 0.0)["jobs"][0]["outcome"] == "requeued"  # never resumed: carried over


def test_kueue_suspended_job_that_never_ran_is_still_pending():
    t = Tracker([_job("k")])
    t.submitted("k", "idle-k", "n1", T0)
    t.observe([_view("k", "suspended")], T0 + timedelta(minutes=1))  # created suspended; Kueue admits later
    assert t.records["k"].outcome is None and t.active()
    t.observe([_view("k", pods=[PodView("k1", "Running", T0 + timedelta(minutes=2), None, False)])],
              T0 + timedelta(minutes=3))
    t.observe([_view("k", "suspended")], T0 + timedelta(minutes=4))  # suspended after running: stopped
    assert t.records["k"].outcome == "stopped"


def test_nightly_refuses_windows_it_cannot_use():
    from flows.common.errors import BadInput
    from flows.common.runtime import offline
    from flows.idle_gpu.flow import idle_gpu_nightly

    now = datetime.now(UTC)
    cases = [((now + timedelta(hours=3), now + timedelta(hours=4)), "more than 60 minutes from now"),
             ((now - timedelta(hours=2), now - timedelta(hours=1)), "already over")]
    with offline():
        for (ws, we), msg in cases:
            with pytest.raises(BadInput, match=msg):
                idle_gpu_nightly.fn(queue="unused.yaml", window_start=ws.isoformat(), window_end=we.isoformat(),
                                    timezone="UTC")
        with pytest.raises(BadInput, match="Kueue LocalQueue"):
            idle_gpu_nightly.fn(queue="unused.yaml", kueue_queue="no spaces allowed")


def test_snapshot_against_an_unreachable_api_logs_in_the_cli_format(run_cli, tmp_path):
    """The pods watch's 'listing again' warnings came out raw (no time, no level) before the error line."""
    import re
    import socket

    with socket.socket() as s:  # a free loopback port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    (tmp_path / "empty.toml").write_text("")
    r = run_cli("idle-gpu", "snapshot", "--out", str(tmp_path / "snap.json"),
                env={"KUBECONFIG": str(kubeconfig), "INFEROPS_KUBE__KUBECONFIG": str(kubeconfig),
                     "INFEROPS_CONFIG": str(tmp_path / "empty.toml"), "INFEROPS_STATE_DIR": str(tmp_path / "state")})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith("inferops: Kubernetes API unreachable"), r.stderr
    for line in lines[:-1]:  # every log line: time, level, message
        assert re.match(r"^\d\d:\d\d:\d\d (WARNING|INFO|ERROR) ", line), r.stderr
    assert not (tmp_path / "snap.json").exists()
