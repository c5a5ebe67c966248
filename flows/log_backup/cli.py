"""``inferops backup``: run a backup, restore one.

Start-up matters here (an hourly cron on every host): only typer is imported at module level; the
policy models, the engine (boto3), the settings and rich are imported by the command that needs them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from flows.common.errors import BadInput, InferopsError

app = typer.Typer(help="Cross-region log backup to S3, and restore", no_args_is_help=True)

# policy field -> the flag a user typed, for one-line errors that name the input
_FLAGS = {"source": "--source", "dest": "--dest", "dest_region": "--dest-region", "source_region": "--source-region",
          "retention_days": "--retention-days", "quiet_period_s": "--quiet-period"}


def _show(title: str, counts: dict, errors: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    t = Table(title=title)
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in counts.items():
        t.add_row(k, str(v))
    console.print(t)
    for e in errors[:50]:
        # paths are the user's: "[app]" would vanish as markup and "[/app]" raise MarkupError
        console.print(f"[red]error[/red] {escape(e)}", highlight=False, soft_wrap=True)
    if len(errors) > 50:
        console.print(f"... and {len(errors) - 50} more")


def _policy(**fields: Any) -> Any:
    """The backup policy from the flags: a ValidationError becomes BadInput naming the flag."""
    from pydantic import ValidationError

    from flows.common.errors import bad_input_from
    from flows.log_backup.models import BackupPolicy

    try:
        return BackupPolicy(**fields)
    except ValidationError as exc:
        bad = bad_input_from(exc, "")
        message = str(bad)
        for field, flag in _FLAGS.items():
            message = message.replace(f"{field}: ", f"{flag}: ")
        raise BadInput(message) from None


@app.command("run")
def run_cmd(
    source: str = typer.Option(..., "--source", help="directory, or s3://BUCKET/PREFIX in the source region"),
    dest: str = typer.Option(..., "--dest", help="s3://BUCKET/PREFIX in another region"),
    dest_region: str = typer.Option(..., "--dest-region", help="region of the destination bucket"),
    source_region: str = typer.Option(None, "--source-region",
                                      help="region of an s3:// source (default: settings s3.primary_region)"),
    retention_days: int = typer.Option(7, "--retention-days", help="lifecycle expiration in days (1-36500)"),
    quiet_period: int = typer.Option(60, "--quiet-period", metavar="SECONDS",
                                     help="defer files modified this recently (still being written); "
                                          "counted as deferred_files, caught by the next run"),
    checksum: bool = typer.Option(False, "--checksum",
                                  help="compare content (sha256), not size and mtime: reads every file of "
                                       "an unchanged size; catches a same-size rewrite that kept its mtime"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Back up SRC to s3://BUCKET/PREFIX: incremental, checksum-verified. Exit 0 OK, 1 failures, 2 bad input."""
    from flows.log_backup.models import BackupReport

    try:
        from flows.common.s3 import region_for

        policy = _policy(source=source, dest=dest, dest_region=dest_region,
                         source_region=source_region or region_for("primary"),
                         retention_days=retention_days, quiet_period_s=quiet_period,
                         compare="checksum" if checksum else "size-mtime")
        from flows.log_backup.engine import BackupFailed, validate

        validate(policy)  # bad input is named before anything starts
        from flows.common.runtime import run_flow
        from flows.log_backup.flow import log_backup

        try:
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
    """``--at``: ISO 8601 with a timezone, or Unix seconds. BadInput for anything else, out-of-range
    values included (a year past 9999, a number too big for a float or the platform's time_t)."""
    if at is None:
        return None
    text = at.strip()
    at = at if len(at) <= 64 else f"{at[:60]}..."  # as echoed in the message
    digits = text.replace(".", "", 1)
    if digits.isascii() and digits.isdigit():
        try:
            seconds = float(text)
            if not math.isfinite(seconds):
                raise OverflowError
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadInput(f"--at {at!r} is out of range (Unix time must fall within the years 1-9999)") from None
    else:
        try:
            when = datetime.fromisoformat(text)
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
    from flows.log_backup.models import RestoreReport

    try:
        from flows.common.s3 import parse_s3_uri, region_for, validate_region
        from flows.log_backup.restore import RestoreFailed, check_target

        parse_s3_uri(from_)
        region = validate_region(region) if region else region_for("backup")
        when = _parse_at(at)
        check_target(to)
        from flows.common.runtime import run_flow
        from flows.log_backup.flow import log_restore

        try:
            report = RestoreReport(**run_flow(log_restore, source=from_, to=str(to), region=region,
                                              at=when, include=include or None))
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
