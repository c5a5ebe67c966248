"""`inferops cost report` as users run it: exit 0 when written (even with quarantined rows), 2 on bad input."""

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "cur"


def test_written_with_quarantined_rows_exits_0(run_cli, tmp_path):
    out = tmp_path / "out"
    r = run_cli("cost", "report", "--cur", str(DATA / "malformed.csv.gz"), "--cur", str(DATA / "legacy.csv.gz"),
                "--out", str(out), "--period", "2026-05")
    assert r.returncode == 0, r.stderr
    assert "5 malformed rows" in r.stdout
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

