"""``inferops drbd check``: a Nagios-style DRBD check (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

Every failure (bad input, usage errors, an unreadable inventory, a bug) is UNKNOWN: the CLI's error
boundary applies the Nagios contract to this whole group (``flows.common.cli.CONTRACTS``).
"""

from __future__ import annotations

import json
import sys

import typer

from flows.common.errors import BadInput
from flows.common.runtime import run_flow

app = typer.Typer(help="DRBD health checks (Nagios exit codes)", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """DRBD health checks (Nagios exit codes)."""


@app.command("check")
def check(
    inventory: str | None = typer.Option(None, "--inventory", help="Ansible inventory (path or name under inventories/)"),
    group: str = typer.Option("drbd_hosts", "--group", help="inventory group of DRBD hosts"),
    inputs: list[str] = typer.Option([], "--input", help="saved capture(s) in any DRBD format, instead of SSH"),
    more: list[str] = typer.Argument(None, hidden=True, metavar="FILE"),  # --input a b c
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object on stdout"),
) -> None:
    """Check DRBD on every host of GROUP over SSH, or check saved captures with --input FILE ..."""
    if more and not inputs:
        raise BadInput(f"unexpected argument {more[0]!r} (captures go after --input)")
    if inputs and inventory:
        raise BadInput("--input reads captures instead of SSH: give --inventory or --input, not both")
    from flows.drbd_health.flow import DrbdNotOk, drbd_health

    try:
        report = run_flow(drbd_health, inventory=inventory, group=group, inputs=[*inputs, *(more or [])] or None)
    except DrbdNotOk as exc:  # a recorded run ended Failed (CRITICAL/UNKNOWN): the report is still the output
        report = exc.report
    if json_out:
        print(json.dumps({"severity": report["severity"], "resources": report["resources"]}))
    else:
        _print_human(report)
    raise typer.Exit(report["nagios_code"])


def _print_human(report: dict) -> None:
    print(report["status"])
    resources = report["resources"]
    if all(r["name"] == "-" for r in resources):
        return  # nothing was read: the status line says why
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {"ok": "green", "warning": "yellow", "critical": "red", "unknown": "magenta"}
    t = Table(show_lines=False)
    for col in ("host", "resource", "severity", "problems"):
        t.add_column(col)
    for r in resources:
        t.add_row(escape(r["host"]), escape(r["name"]), f"[{colour[r['severity']]}]{r['severity']}[/]",
                  escape("\n".join(f"{p['code']}: {p['detail']}" for p in r["problems"]) or "-"))
    console = Console(file=sys.stdout)
    console.print(t)
    for key, steps in report["hints"].items():
        console.print(f"[bold]{escape(key)}[/] (not run automatically):", highlight=False)
        for h in steps:
            console.print(f"  - {h}", highlight=False, markup=False)
