"""`inferops canary plan` needs no cluster; bad input is one line and exit 2; the demo writes plan.json."""

import json

from flows.canary.demo import run as demo_run


def test_plan_prints_objects_and_schedule(run_cli):
    r = run_cli("canary", "plan", "-n", "inference", "-d", "llm", "--image", "registry.example/llm:2",
                "--traffic-mode", "gateway-api", "--steps", "10,50,100", "--replicas", "6")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [s["weight"] for s in plan["schedule"]] == [10, 50, 100]
    assert plan["schedule"][0]["canary_weight"] == 10 and plan["schedule"][-1]["promote"]
    kinds = [(o["action"], o.get("kind") or o["object"]["kind"]) for o in plan["objects"]]
    assert kinds == [("create", "Deployment")] * 2 + [("create", "Service")] * 2 + [("patch", "HTTPRoute")]


def test_plan_bad_input_is_one_line_exit_2(run_cli):
    r = run_cli("canary", "plan", "-n", "inference", "-d", "llm", "--image", "x:1",
                "--error-rate-query", "sum(rate(errors[{{interval}}]))")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "{{track}}" in r.stderr and "Traceback" not in r.stderr


def test_demo_writes_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    summary = demo_run(tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["promotion"]["approval_required"] is True and "steps 5%, 25%, 50%, 100%" in summary
