"""``inferops backup``: run a backup, restore one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from flows.common.errors import BadInput, InferopsError
from flows.common.runtime import run_flow

app = typer.Typer(help="Cross-region log backup to S3, and restore", no_args_is_help=True)


def _show(title: str, counts: dict, errors: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=title)
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in counts.items():
        t.add_row(k, str(v))
    console.print(t)
    for e in errors[:50]:
        console.print(f"[red]error[/red] {e}", markup=True, highlight=False)
    if len(errors) > 50:
        console.print(f"... and {len(errors) - 50} more")


@app.command("run")
def run_cmd(
    source: str = typer.Option(..., "--source", help="directory, or s3://BUCKET/PREFIX in the source region"),
    dest: str = typer.Option(..., "--dest", help="s3://BUCKET/PREFIX in another region"),
    dest_region: str = typer.Option(..., "--dest-region", help="region of the destination bucket"),
    source_region: str = typer.Option(None, "--source-region",
                                      help="region of an s3:// source (default: settings s3.primary_region)"),
    retention_days: int = typer.Option(7, "--retention-days", min=1, help="lifecycle expiration in days"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Back up SRC to s3://BUCKET/PREFIX: incremental, checksum-verified. Exit 0 OK, 1 failures, 2 bad input."""
    from flows.common.settings import get_settings
    from flows.log_backup.engine import BackupFailed
    from flows.log_backup.flow import log_backup
    from flows.log_backup.models import BackupPolicy, BackupReport

    try:
        policy = BackupPolicy(source=source, dest=dest, dest_region=dest_region,
                              source_region=source_region or get_settings().s3.primary_region,
                              retention_days=retention_days)
        report = BackupReport(**run_flow(log_backup, policy=policy))
    except BackupFailed as exc:
        report = exc.report
    except InferopsError as exc:
        if json_out:
            print(json.dumps(BackupReport(errors=[str(exc)]).summary()))
        raise
    if json_out:
        print(json.dumps(report.summary()))
    else:
        _show(f"backup {report.source} -> {report.dest}", report.model_dump(exclude={"errors"}), report.errors)
    raise typer.Exit(0 if report.ok else 1)


def _parse_at(at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        when = datetime.fromtimestamp(float(at), UTC) if at.replace(".", "", 1).isdigit() \
            else datetime.fromisoformat(at)
    except ValueError:
        raise BadInput(f"--at {at!r} is not an ISO 8601 timestamp or Unix time") from None
    if when.tzinfo is None:
        raise BadInput(f"--at {at!r} needs a timezone, e.g. 2026-11-28T06:00:00Z")
    return when


@app.command("restore")
def restore_cmd(
    from_: str = typer.Option(..., "--from", help="s3://BUCKET/PREFIX of a backup"),
    to: Path = typer.Option(..., "--to", help="directory to restore into"),
    at: str = typer.Option(None, "--at", help="restore the state as of this time (ISO 8601 or Unix time)"),
    include: list[str] = typer.Option([], "--include", help="glob on the relative path (repeatable)"),
    region: str = typer.Option(None, "--region", help="region of the backup bucket (default: settings s3.backup_region)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Restore a backup into DIR, verifying every file's checksum as it is written."""
    from flows.common.s3 import parse_s3_uri, validate_region
    from flows.common.settings import get_settings
    from flows.log_backup.flow import log_restore
    from flows.log_backup.models import RestoreReport
    from flows.log_backup.restore import RestoreFailed

    try:
        parse_s3_uri(from_)
        region = validate_region(region or get_settings().s3.backup_region)
        report = RestoreReport(**run_flow(log_restore, source=from_, to=str(to), region=region,
                                          at=_parse_at(at), include=include or None))
    except RestoreFailed as exc:
        report = exc.report
    except InferopsError as exc:
        if json_out:
            print(json.dumps(RestoreReport(errors=[str(exc)]).model_dump()))
        raise
    if json_out:
        print(json.dumps(report.model_dump()))
    else:
        _show(f"restore {from_} -> {to}", report.model_dump(exclude={"errors"}), report.errors)
    raise typer.Exit(0 if report.ok else 1)
