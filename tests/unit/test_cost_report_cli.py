"""`inferops cost report` as users run it: exit 0 when written (even with quarantined rows), 2 on bad input."""

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"


def test_written_with_quarantined_rows_exits_0(run_cli, tmp_path):
    out = tmp_path / "out"
    r = run_cli("cost", "report", "--cur", str(DATA / "malformed.csv.gz"), "--cur", str(DATA / "legacy.csv.gz"),
                "--out", str(out), "--period", "2026-05")
    assert r.returncode == 0, r.stderr
    assert "5 malformed rows in" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected_rows"] == 5
    assert summary["total_cost"] == round(193.3748 + 2 * 0.8048, 4)
    assert {"summary.json", "report.html", "aggregates.parquet", "daily.parquet", "inferops_cost.prom",
            "quarantine.csv"} <= {p.name for p in out.iterdir()}


def test_bad_input_exits_2_with_one_line(run_cli, tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("date,cost\n2026-05-01,3\n")
    r = run_cli("cost", "report", "--cur", str(odd), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.strip().startswith("inferops: no readable CUR: unknown CUR column style in")
    assert "odd.csv; columns seen: date, cost" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr



def _one_line(r, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    if code:
        assert len(err.splitlines()) == 1 and err.startswith("inferops: "), err
    return err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--period", "0000-01"], "bad --period '0000-01'"),
    (["--period", "9999-12"], "bad --period '9999-12'"),
    (["--prometheus", "http://127.0.0.1:99999"], "bad --prometheus 'http://127.0.0.1:99999': Port out of range"),
    (["--prometheus", "ftp://user:hunter2@prometheus.example/x"], "bad --prometheus 'ftp://***@prometheus.example/x'"),
    (["--cur", "ftp://user:hunter2@cur.example/part.csv"], "ftp://***@cur.example/part.csv: not a local path"),
])
def test_bad_flags_are_one_line_exit_2_and_never_echo_a_password(run_cli, tmp_path, flags, expected):
    cur = [] if "--cur" in flags else ["--cur", str(DATA / "athena.parquet")]
    err = _one_line(run_cli("cost", "report", *cur, "--out", str(tmp_path / "o"), *flags), 2)
    assert expected in err and "hunter2" not in err


def test_a_bad_prometheus_setting_names_the_setting_not_the_flag(run_cli, tmp_path):
    """A URL from INFEROPS_PROMETHEUS__URL that passes the settings check but not cost report's
    stricter one said 'bad --prometheus', a flag the user never gave."""
    (tmp_path / "empty.toml").write_text("")
    env = {"INFEROPS_CONFIG": str(tmp_path / "empty.toml"),
           "INFEROPS_PROMETHEUS__URL": "http://user:hunter2@prom^etheus:9090"}
    err = _one_line(run_cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", str(tmp_path / "o"),
                            env=env), 2)
    assert err.startswith("inferops: bad setting prometheus.url (INFEROPS_PROMETHEUS__URL)"), err
    assert "--prometheus" not in err and "hunter2" not in err and "prom^etheus" not in err
    # the flag, when given, is still what the message names (and it wins over the setting)
    err = _one_line(run_cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", str(tmp_path / "o"),
                            "--prometheus", "http://a{b}:1", env=env), 2)
    assert "bad --prometheus 'http://a{b}:1'" in err


def test_out_pointing_at_a_file_is_bad_input(run_cli, tmp_path):
    afile = tmp_path / "report.txt"
    afile.write_text("not a folder")
    err = _one_line(run_cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", str(afile)), 2)
    assert err == f"inferops: --out {afile} is a file, not a folder"
    err = _one_line(run_cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", str(afile / "sub")), 2)
    assert f"--out {afile / 'sub'}: cannot create the folder" in err


def test_damaged_parts_exit_0_when_some_were_read_and_2_when_none(run_cli, tmp_path):
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes((DATA / "legacy.csv.gz").read_bytes()[:300])
    r = run_cli("cost", "report", "--cur", str(truncated), "--cur", str(DATA / "athena.parquet"),
                "--out", str(tmp_path / "o"), "--period", "2026-05")
    _one_line(r, 0)
    assert "1 inputs unreadable" in r.stdout
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["input"]["failed"][0].startswith(f"{truncated}: unreadable (")
    err = _one_line(run_cli("cost", "report", "--cur", str(truncated), "--out", str(tmp_path / "o2")), 2)
    assert err.startswith(f"inferops: no readable CUR: {truncated}: unreadable (")


def test_prometheus_unreachable_is_said_at_the_terminal_without_the_password(run_cli, tmp_path):
    """The idle cost asked for with --prometheus was missing with exit 0 and not a word on the terminal
    (only idle.status in summary.json)."""
    r = run_cli("cost", "report", "--cur", str(DATA / "athena.parquet"), "--out", str(tmp_path / "o"),
                "--prometheus", "http://user:hunter2@127.0.0.1:9")
    _one_line(r, 0)
    assert "idle cost unavailable: Prometheus unreachable" in r.stdout
    warning = [line for line in r.stderr.splitlines() if "WARNING idle GPU cost not computed" in line]
    assert len(warning) == 1 and "http://***@127.0.0.1:9" in warning[0]
    assert "hunter2" not in r.stdout + r.stderr + (tmp_path / "o" / "summary.json").read_text()
