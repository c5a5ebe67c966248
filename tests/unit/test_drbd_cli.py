"""The real ``inferops drbd check`` console script on saved captures: Nagios exit codes, --json shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data" / "drbd"


@pytest.fixture
def drbd(run_cli, tmp_path):
    def run(*args: str):
        return run_cli("drbd", "check", *args, env={"INFEROPS_STATE_DIR": str(tmp_path / "state")})
    return run


@pytest.mark.parametrize("files,code", [(["json_healthy_3node.json", "events2_healthy.txt"], 0),
                                        (["status_resync.txt", "proc84_healthy.txt"], 1),
                                        (["proc84_split_brain.txt", "json_resync.json"], 2),
                                        (["json_unknown_state.json", "json_resync.json"], 3)])
def test_exit_codes_follow_nagios(drbd, files, code):
    r = drbd("--input", *[str(DATA / f) for f in files])
    assert r.returncode == code, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("DRBD " + ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code] + " - ")


def test_json_output_shape_and_repeatable_input_flag(drbd):
    r = drbd("--json", "--input", str(DATA / "json_split_brain.json"), "--input", str(DATA / "proc84_sync.txt"))
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"severity", "resources"} and doc["severity"] == "critical"
    for res in doc["resources"]:
        assert set(res) == {"host", "name", "severity", "problems", "volumes", "peers"}
    by = {(x["host"], x["name"]): x for x in doc["resources"]}
    assert sorted(p["code"] for p in by[("json_split_brain", "models")]["problems"]) == ["split_brain", "standalone"]
    assert by[("proc84_sync", "0")]["problems"] == [{"code": "resyncing", "detail": "peer volume 0: SyncSource, 20.5% done"}]


@pytest.mark.parametrize("name", ["json_truncated.json", "missing.txt"])
def test_unparseable_or_missing_input_is_unknown_with_one_line(drbd, tmp_path, name):
    path = DATA / name if (DATA / name).exists() else tmp_path / "nope.txt"
    r = drbd("--input", str(path))
    assert r.returncode == 3
    assert len(r.stdout.strip().splitlines()) == 1 and "Traceback" not in r.stdout + r.stderr
    assert r.stdout.startswith("DRBD UNKNOWN - ")


def test_missing_inventory_is_unknown_not_a_traceback(drbd, tmp_path):
    r = drbd("--inventory", str(tmp_path / "missing.yml"))
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [f"inferops: drbd: inventory {str(tmp_path / 'missing.yml')!r} not found"]
