"""With no inventory configured, nothing is contacted and the commands that need one say how to set one."""

import pytest

from flows.common.errors import BadInput
from flows.common.inventory import require_inventory
from flows.common.settings import reload_settings


@pytest.fixture
def unconfigured(tmp_path, monkeypatch):
    monkeypatch.delenv("INFEROPS_INVENTORY", raising=False)
    (tmp_path / "empty.toml").write_text("")  # a config file with nothing in it (a named file must exist)
    monkeypatch.setenv("INFEROPS_CONFIG", str(tmp_path / "empty.toml"))
    reload_settings()
    yield {"INFEROPS_STATE_DIR": str(tmp_path / "state"), "INFEROPS_CONFIG": str(tmp_path / "empty.toml")}
    monkeypatch.undo()
    reload_settings()


def test_there_is_no_default_inventory(unconfigured):
    assert reload_settings().inventory is None
    with pytest.raises(BadInput, match="no inventory configured: set INFEROPS_INVENTORY"):
        require_inventory(None)
    assert require_inventory("inventories/staging/hosts.yml") == "inventories/staging/hosts.yml"


def test_drbd_check_says_how_to_set_one(unconfigured, run_cli):
    r = run_cli("drbd", "check", env=unconfigured)
    assert r.returncode == 3  # Nagios UNKNOWN: the check could not run
    assert "no inventory configured" in r.stderr and "INFEROPS_INVENTORY" in r.stderr and "Traceback" not in r.stderr


def test_bootstrap_run_says_how_to_set_one(unconfigured, run_cli):
    r = run_cli("bootstrap", "run", "--check", env=unconfigured)
    assert r.returncode == 2
    assert "no inventory configured" in r.stderr and "INFEROPS_INVENTORY" in r.stderr and "Traceback" not in r.stderr
