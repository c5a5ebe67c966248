"""drbd-health's run state tells the truth: Completed on OK, Completed named Warning on WARNING, Failed
on CRITICAL or UNKNOWN; the Nagios status line is the state's message, and a Failed run still carries
the whole report (and the Nagios exit code) for a caller."""

import pickle
from pathlib import Path

import pytest

from flows.common.runtime import offline, run_flow
from flows.common.settings import reload_settings
from flows.drbd_health.flow import DEFAULT_POLICY, DrbdNotOk, check, final_state

DATA = Path(__file__).parents[1] / "data" / "drbd"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    reload_settings()
    yield tmp_path
    monkeypatch.undo()
    reload_settings()


def report(*captures):
    with offline():  # the check's tasks inline, as the CLI runs them: no Prefect API needed
        return check(None, "drbd_hosts", [str(DATA / c) for c in captures], DEFAULT_POLICY, None, None, 10.0, 4)


@pytest.mark.parametrize("captures, type_, name", [
    (["json_healthy_3node.json"], "COMPLETED", "Completed"),
    (["json_resync.json"], "COMPLETED", "Warning"),
    (["json_split_brain.json", "json_resync.json"], "FAILED", "Failed"),
    (["json_unknown_state.json"], "FAILED", "Failed"),
])
def test_state_per_severity(state_dir, captures, type_, name):
    rep = report(*captures)
    state = final_state(rep)
    assert (state.type.value, state.name) == (type_, name)
    assert state.message == rep["status"] and state.message.startswith("DRBD ")
    if type_ == "FAILED":
        exc = state.data
        assert isinstance(exc, DrbdNotOk) and exc.report == rep and exc.exit_code == rep["nagios_code"] >= 2
        again = pickle.loads(pickle.dumps(exc))
        assert again.report == rep and str(again) == rep["status"]
    else:
        assert state.data == rep


def test_offline_cli_run_returns_the_report(state_dir):
    from flows.drbd_health.flow import drbd_health

    rep = run_flow(drbd_health, inputs=[str(DATA / "json_split_brain.json")])
    assert rep["severity"] == "critical" and rep["nagios_code"] == 2
