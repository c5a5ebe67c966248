"""`make demo`: run every pipeline once on embedded local defaults, recorded in a local Prefect server.

Each pipeline room provides ``flows/<room>/demo.py`` with ``run(out: Path) -> str``. A room that does
not exist yet is reported as "not built yet", never faked. The exit code is 0 only if every built
pipeline succeeded and wrote its fixed output.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# (pipeline, module, fixed output relative to demo-output/)
PIPELINES: list[tuple[str, str, str]] = [
    ("model-build", "flows.model_build.demo", "model-build/manifest.json"),
    ("canary", "flows.canary.demo", "canary/plan.json"),
    ("log-backup", "flows.log_backup.demo", "log-backup/summary.json"),
    ("drbd", "flows.drbd_health.demo", "drbd/report.json"),
    ("cost-report", "flows.cost_report.demo", "cost-report/summary.json"),
    ("idle-gpu", "flows.idle_gpu.demo", "idle-gpu/plan.json"),
    ("host-bootstrap", "flows.host_bootstrap.demo", "host-bootstrap/"),
]


@dataclass
class Outcome:
    pipeline: str
    status: str  # ok | failed | not built yet
    output: str
    seconds: float
    summary: str


def _table(outcomes: list[Outcome]):
    """Print what ran, as a table on stdout; returns the console for what follows."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="inferops demo")
    for col in ("pipeline", "status", "output", "seconds", "summary"):
        t.add_column(col, overflow="fold")
    colour = {"ok": "green", "failed": "red", "not built yet": "yellow"}
    for o in outcomes:  # summaries carry error text and paths: never markup
        t.add_row(escape(o.pipeline), f"[{colour[o.status]}]{o.status}[/]", escape(o.output), f"{o.seconds:.1f}",
                  escape(o.summary))
    console = Console(file=sys.stdout, width=160)
    console.print(t)
    return console


def _run_one(pipeline: str, module: str, rel: str, out_root: Path) -> Outcome:
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return Outcome(pipeline, "not built yet", "-", 0.0, "")
        raise
    out_dir = out_root / rel.split("/")[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = mod.run(out_dir)
    except Exception as exc:
        if os.environ.get("INFEROPS_DEBUG"):
            traceback.print_exc()
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return Outcome(pipeline, "failed", str(out_root / rel), time.perf_counter() - t0, msg)
    target = out_root / rel
    ok = target.is_dir() and any(target.iterdir()) if rel.endswith("/") else target.is_file()
    if not ok:
        return Outcome(pipeline, "failed", str(target), time.perf_counter() - t0, "expected output missing")
    return Outcome(pipeline, "ok", str(target), time.perf_counter() - t0, str(summary or ""))


def _drain_prefect_logs() -> None:
    """Send buffered run logs and events before the local server stops (else they are lost)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=10)


def main(out: str = "demo-output", only: list[str] | None = None) -> int:
    from flows.common.localstack import LocalServer, prefect_env, ui_url

    external = bool(os.environ.get("PREFECT_API_URL"))
    server = None
    if not external:
        # before prefect is imported anywhere: record runs in .inferops/prefect (INFEROPS_STATE_DIR moves it),
        # served by `make up` (a running `make up` on the local port is used as it is)
        os.environ.update({k: v for k, v in prefect_env().items() if k.startswith(("PREFECT_", "INFEROPS_"))})
        print(f"starting local Prefect server ({ui_url()}, database in {os.environ['PREFECT_HOME']})…", flush=True)
        server = LocalServer(reuse=True).start()
    out_root = Path(out).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    try:
        for pipeline, module, rel in PIPELINES:
            if only and pipeline not in only:
                continue
            print(f"── {pipeline} …", flush=True)
            o = _run_one(pipeline, module, rel, out_root)
            print(f"   {o.status}{': ' + o.summary if o.summary else ''}", flush=True)
            outcomes.append(o)
    finally:
        if server is not None:
            _drain_prefect_logs()
            server.stop()

    console = _table(outcomes)
    where = os.environ["PREFECT_API_URL"].removesuffix("/api") if external else ui_url()
    hint = "" if external else " (run `make up` to browse these runs)"
    console.print(f"Prefect UI: {where}{hint}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0
