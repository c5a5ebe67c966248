"""`make demo`: plan tonight's queue into a bundled capacity snapshot (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

from flows.common.runtime import run_flow
from flows.idle_gpu.flow import idle_gpu_plan
from flows.idle_gpu.models import PlanPolicy

DATA = Path(__file__).parent / "demo_data"


def run(out: Path) -> str:
    report = run_flow(idle_gpu_plan, queue=str(DATA / "queue.yaml"), capacity=str(DATA / "capacity.json"),
                      window_start="01:00", window_end="07:00", timezone="UTC", policy=PlanPolicy(),
                      out=str(out / "plan.json"))
    p = report["plan"]
    return (f"{len(p['placements'])} jobs planned ({p['planned_gpu_hours']} of {p['idle_gpu_hours']} idle "
            f"GPU-hours), {len(p['unplaced'])} not planned")
