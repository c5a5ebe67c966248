"""Demo: check the bundled captures of a small fleet (DRBD 9 JSON, events2, status text, 8.4 /proc/drbd)."""

from __future__ import annotations

import json
from pathlib import Path

from flows.common.runtime import run_flow

CAPTURES = Path(__file__).parent / "captures"


def run(out: Path) -> str:
    from flows.drbd_health.flow import DrbdNotOk, drbd_health

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = run_flow(drbd_health, inputs=[str(p) for p in sorted(CAPTURES.glob("*.*"))],
                          textfile=str(out / "inferops_drbd.prom"))
    except DrbdNotOk as exc:  # the sample fleet has a split-brain: the recorded run ends Failed, by design
        report = exc.report
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report["status"]
