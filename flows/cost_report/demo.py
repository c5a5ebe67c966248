"""``make demo``: a month of sample CUR for a GPU fleet through the cost report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flows.common.runtime import run_flow
from flows.cost_report import sample
from flows.cost_report.flow import cost_report


def run(out: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="inferops-demo-cur-") as tmp:
        sample.write_athena_parquet(sample.generate("2026-05"), Path(tmp) / "cur")
        s = run_flow(cost_report, cur=[str(Path(tmp) / "cur")], out=str(out), period="2026-05")
    best = s["recommendations"][0] if s["recommendations"] else None
    tip = f"; top saving: {best['action']} (${best['projected_savings']:,.0f})" if best else ""
    return (f"cost report 2026-05: ${s['total_cost']:,.0f} amortized, {s['gpu_hours']:,.0f} GPU-hours, "
            f"RI utilization {s['utilization']['reserved']['utilization']:.0%}{tip} -> {out}/report.html")
