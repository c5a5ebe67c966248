"""``inferops bootstrap run``: converge hosts with the playbooks (the gpu-host-bootstrap flow)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from flows.common.documents import load_document
from flows.common.inventory import require_inventory, resolve_inventory
from flows.common.runtime import run_flow
from flows.host_bootstrap.models import (
    BootstrapFailed,
    BootstrapReport,
    parse_extra_vars,
    parse_tags,
    validate_limit,
)

app = typer.Typer(help="Bootstrap GPU/storage hosts with Ansible", no_args_is_help=True)


def _load_extra_vars(path: Path | None):
    if path is None:
        return None
    return parse_extra_vars(load_document(path, "--extra-vars"), source=f"--extra-vars {path}")


def _show(report: BootstrapReport) -> None:
    from rich.console import Console  # here: 0.15 s that --help and bad input never need
    from rich.table import Table

    t = Table(title=f"{report.playbook} on {report.inventory}" + (" (check mode)" if report.check_mode else ""))
    for col in ("host", "status", "ok", "changed", "failed", "unreachable", "skipped", "task"):
        t.add_column(col, justify="right" if col not in ("host", "status", "task") else "left")
    for h in report.hosts:
        t.add_row(h.host, h.status, *(str(getattr(h, c)) for c in ("ok", "changed", "failed", "unreachable",
                                                                   "skipped")), h.task or "")
    Console(markup=False).print(t)  # host and task names are the user's: never markup


@app.command("run")
def run_cmd(
    inventory: str = typer.Option(None, "--inventory", help="inventory path, or a name under inventories/ "
                                  "(default: INFEROPS_INVENTORY)"),
    limit: str = typer.Option(None, "--limit", help="Ansible host pattern"),
    tags: str = typer.Option(None, "--tags", help="comma-separated component tags"),
    check: bool = typer.Option(False, "--check", help="check mode with diffs: change nothing"),
    extra_vars: Path = typer.Option(None, "--extra-vars", help="YAML/JSON file of allow-listed variables"),
    json_out: bool = typer.Option(False, "--json", help="print the report as one JSON object on stdout"),
) -> None:
    """Run site.yml. Exit 0 all hosts ok, 1 a host failed or was unreachable, 2 bad input."""
    from flows.host_bootstrap.flow import gpu_host_bootstrap

    logging.getLogger("inferops").setLevel(logging.INFO)  # stream Ansible's output to stderr
    # bad input fails here, before any run starts: the files first, then the inventory and the flags
    loaded_vars = _load_extra_vars(extra_vars)
    inventory = require_inventory(inventory)  # none configured: says how to set one
    resolve_inventory(inventory)
    params = dict(inventory=inventory, limit=validate_limit(limit), tags=parse_tags(tags), check_mode=check,
                  extra_vars=loaded_vars)
    try:
        report = BootstrapReport(**run_flow(gpu_host_bootstrap, **params))
    except BootstrapFailed as exc:
        report = exc.report
        if not json_out:
            _show(report)
        else:
            print(report.model_dump_json())
        raise
    if json_out:
        print(report.model_dump_json())
    else:
        _show(report)
