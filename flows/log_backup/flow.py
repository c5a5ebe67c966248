"""The Prefect shell of the log backup: ``log_backup`` (deployment ``log-backup-hourly``) and ``log_restore``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from flows.common.artifacts import Progress, code, emit, markdown, table
from flows.common.errors import InferopsError
from flows.common.runtime import flow, get_logger, ops_task
from flows.common.s3 import client_for, log_retries, parse_s3_uri
from flows.log_backup.engine import BackupEngine, BackupFailed
from flows.log_backup.models import BackupPolicy, BackupReport, RestoreReport
from flows.log_backup.restore import RestoreFailed, restore

METRIC = "inferops_backup_last_success_timestamp_seconds"
JOB = "inferops_log_backup"


class _ProgressHook:
    """Engine callback -> Prefect progress artifact (created once the amount of work is known)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.progress: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            self.progress = Progress(self.description, total)
        self.progress.advance(done - self.progress.done)


@ops_task(name="sync")
def sync(policy: BackupPolicy) -> BackupReport:
    hook = _ProgressHook(f"backup {policy.source} -> {policy.dest}")
    report = BackupEngine(policy, on_progress=hook, log=get_logger()).run()
    if hook.progress is not None:
        hook.progress.finish()
    return report


def _pushgateway() -> str | None:
    """The configured Pushgateway, validated before any work; prometheus_client and httpx are
    imported only when there is one."""
    from flows.common.settings import get_settings

    if not get_settings().prometheus.pushgateway:
        return None
    from flows.common.metrics import pushgateway_url

    return pushgateway_url()


def write_metric(textfile: str | None, pushgateway: str | None, dest: str, when: float) -> dict:
    """The last successful backup time (InferopsLogBackupMissing reads it): a node_exporter textfile
    and/or the Pushgateway, grouped by destination. A failure is reported, not raised."""
    from prometheus_client import CollectorRegistry, Gauge

    from flows.common.metrics import publish

    registry = CollectorRegistry()
    Gauge(METRIC, "Unix time of the last backup run with no failed file", ["dest"],
          registry=registry).labels(dest=dest).set(when)
    return publish(registry, job=JOB, textfile=textfile, pushgateway=pushgateway, grouping={"dest": dest})


@flow(name="log-backup", log_prints=False)
def log_backup(policy: BackupPolicy) -> dict:
    """Incremental, checksum-verified backup of a log directory or s3:// prefix to a bucket in another region.

    Args:
        policy: What to back up and where to: the source folder or s3:// prefix, the destination bucket
            and its region, what to include, retention, checksums and transfer limits.
    """
    log = get_logger()
    pushgateway = _pushgateway()
    try:
        report = sync(policy)
    except InferopsError as exc:  # bad input or no backend: nothing was backed up
        emit("inferops.backup.failed", f"inferops.backup.{policy.dest}", {"errors": [str(exc)]})
        raise
    rows = [{"measure": k, "value": v} for k, v in report.model_dump(exclude={"errors"}).items()]
    table("log-backup-summary", rows, description=f"Log backup {report.source} -> {report.dest}")
    if report.errors:
        markdown("log-backup-errors", "\n".join(f"- {code(e)}" for e in report.errors[:200]),
                 description=f"{report.failed_files} failed file(s)")
    log.info("backup %s -> %s: %d uploaded (%d bytes, %d copied), %d skipped (%d deferred), "
             "%d adopted, %d verified, %d vanished, %d special skipped, %d failed", report.source, report.dest,
             report.uploaded_files, report.uploaded_bytes, report.copied_files, report.skipped_files,
             report.deferred_files, report.adopted_files, report.verified_files, report.vanished_files,
             report.skipped_special, report.failed_files)
    if not report.ok:
        emit("inferops.backup.failed", f"inferops.backup.{report.dest}", report.summary())
        raise BackupFailed(report)
    result = report.model_dump()
    if policy.metrics_textfile or pushgateway:
        result["metrics"] = write_metric(policy.metrics_textfile, pushgateway, report.dest,
                                         datetime.fromisoformat(report.finished_at).timestamp())
    return result


@flow(name="log-restore", log_prints=False)
def log_restore(source: str, to: str, region: str, at: datetime | None = None,
                include: list[str] | None = None) -> dict:
    """Restore s3://BUCKET/PREFIX into a directory, verifying each file's checksum as it is written."""
    hook = _ProgressHook(f"restore {source} -> {to}")
    log = get_logger()
    client = client_for("backup", region)
    log_retries(client, log)
    report: RestoreReport = restore(client, parse_s3_uri(source), Path(to), at=at,
                                    include=include, on_progress=hook, log=log)
    table("log-restore-summary", [{"measure": k, "value": v} for k, v in
                                  report.model_dump(exclude={"errors"}).items()],
          description=f"Restore {source} -> {to}")
    if report.errors:
        markdown("log-restore-errors", "\n".join(f"- {code(e)}" for e in report.errors[:200]))
        raise RestoreFailed(report)
    return report.model_dump()
