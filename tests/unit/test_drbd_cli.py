"""The real ``inferops drbd check`` console script on saved captures: Nagios exit codes, --json shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data" / "drbd"


@pytest.fixture
def drbd(run_cli, tmp_path):
    """The installed console script in a subprocess (a few seconds each: Prefect's import)."""
    def run(*args: str):
        return run_cli("drbd", "check", *args, env={"INFEROPS_STATE_DIR": str(tmp_path / "state")})
    return run


@pytest.fixture
def drbd_inproc(tmp_path, monkeypatch, capsys):
    """The same entry point (flows.common.cli.main) in this process, run inline."""
    from flows.common.cli import main
    from flows.common.settings import reload_settings

    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()

    def run(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exc:
            main(["drbd", "check", *args])
        return exc.value.code, capsys.readouterr().out

    yield run
    monkeypatch.undo()
    reload_settings()


@pytest.mark.parametrize("files,code", [(["json_healthy_3node.json", "events2_healthy.txt"], 0),
                                        (["status_resync.txt", "proc84_healthy.txt"], 1),
                                        (["proc84_split_brain.txt", "json_resync.json"], 2),
                                        (["json_unknown_state.json", "json_resync.json"], 3)])
def test_exit_codes_follow_nagios(drbd_inproc, files, code):
    rc, out = drbd_inproc("--input", *[str(DATA / f) for f in files])
    assert rc == code
    assert out.splitlines()[0].startswith("DRBD " + ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code] + " - ")


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


def test_unparseable_input_is_unknown_with_one_line(drbd):
    r = drbd("--input", str(DATA / "json_truncated.json"))
    assert r.returncode == 3 and "Traceback" not in r.stdout + r.stderr
    assert r.stdout.splitlines() == ["DRBD UNKNOWN - json_truncated/- unknown: unparseable input:json_truncated.json "
                                     "output: invalid JSON: Unterminated string starting at: line 1 column 66 "
                                     "(char 65) | ok=0 warning=0 critical=0 unknown=1"]


def test_missing_input_file_is_unknown(drbd_inproc, tmp_path):
    rc, out = drbd_inproc("--input", str(tmp_path / "nope.txt"))
    assert rc == 3 and out.splitlines() == [
        "DRBD UNKNOWN - nope/- unknown: cannot read " + str(tmp_path / "nope.txt")
        + ": No such file or directory | ok=0 warning=0 critical=0 unknown=1"]


def test_missing_inventory_is_unknown_not_a_traceback(drbd, tmp_path):
    r = drbd("--inventory", str(tmp_path / "missing.yml"))
    assert r.returncode == 3
    line = f"inventory {str(tmp_path / 'missing.yml')!r} not found"
    assert r.stderr.strip().splitlines() == [f"inferops: {line}"]
    assert r.stdout.splitlines() == [f"DRBD UNKNOWN - {line}"]  # Nagios shows stdout's first line


def test_stray_argument_without_input_is_unknown(drbd_inproc, capsys):
    with pytest.raises(SystemExit) as exc:
        from flows.common.cli import main
        main(["drbd", "check", "foo.json"])
    assert exc.value.code == 3
    assert capsys.readouterr().err.strip() == "inferops: unexpected argument 'foo.json' (captures go after --input)"


def test_inventory_and_input_together_are_refused(drbd_inproc, capsys):
    from flows.common.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["drbd", "check", "--inventory", "x.yml", "--input", str(DATA / "json_resync.json")])
    assert exc.value.code == 3 and "not both" in capsys.readouterr().err
