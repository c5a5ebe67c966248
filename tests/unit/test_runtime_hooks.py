"""Offline runs behave like Prefect runs where pipelines depend on it: a run id shared with the
failure hooks, hooks on failure and on interrupt, retry_condition_fn honoured, no pausing."""

from __future__ import annotations

import pytest
from prefect import flow

from flows.common.errors import BackendUnavailable, BadInput
from flows.common.runtime import can_pause, current_run_id, ops_task, run_flow, run_offline

calls: list = []


def hook(flow_obj, flow_run, state):
    calls.append((flow_run.id, flow_run.parameters, state.name, type(state.data).__name__))


@flow(on_failure=[hook], on_crashed=[hook])
def risky(x: int, fail: str = "") -> str:
    calls.append(("run", current_run_id(), can_pause()))
    if fail == "error":
        raise BadInput("bad x")
    if fail == "interrupt":
        raise KeyboardInterrupt
    return current_run_id()


def test_offline_run_calls_failure_hooks_with_its_own_run_id(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    calls.clear()
    rid = run_flow(risky, x=1)
    assert rid.startswith("cli-") and calls == [("run", rid, False)]  # no hook on success; no pausing offline
    calls.clear()
    with pytest.raises(BadInput):
        run_offline(risky, {"x": 2, "fail": "error"})
    (_, run_id, _), (hook_id, params, state, exc) = calls
    assert hook_id == run_id != rid and params == {"x": 2, "fail": "error"} and (state, exc) == ("Failed", "BadInput")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run_offline(risky, {"x": 3, "fail": "interrupt"})
    assert calls[-1][2:] == ("Crashed", "KeyboardInterrupt")


def test_offline_task_retries_only_what_the_condition_allows(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    attempts = []

    def transient(task, task_run, state) -> bool:
        return isinstance(state.data, BackendUnavailable)

    @ops_task(retries=2, retry_delay_seconds=0, retry_condition_fn=transient)
    def fetch(exc: Exception) -> str:
        attempts.append(type(exc).__name__)
        if len(attempts) < 3:
            raise exc
        return "ok"

    @flow
    def wrapper(kind: str) -> str:
        return fetch(BackendUnavailable("down") if kind == "backend" else BadInput("bad"))

    assert run_flow(wrapper, kind="backend") == "ok" and attempts == ["BackendUnavailable"] * 3
    attempts.clear()
    with pytest.raises(BadInput):
        run_flow(wrapper, kind="input")
    assert attempts == ["BadInput"]  # not retried: the condition said no
