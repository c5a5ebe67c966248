"""The backup policy (the flow's UI form) and the reports, as pydantic models. No Prefect import."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class BackupPolicy(BaseModel):
    """What to back up, where to, and how. Flat fields: the Prefect UI renders this as a form."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Local log directory, or s3://BUCKET/PREFIX in the source region")
    dest: str = Field(description="Backup destination s3://BUCKET/PREFIX (a bucket in another region)")
    dest_region: str = Field("eu-west-1", description="Region of the destination bucket")
    source_region: str = Field("us-east-1", description="Region of an s3:// source")
    include: list[str] = Field(["*"], description="Globs on the path relative to the source; '*' crosses '/'")
    exclude: list[str] = Field([], description="Globs on the relative path to leave out (wins over include)")
    quiet_period_s: int = Field(60, ge=0, description="Skip files modified this recently (still being written)")
    checksum_algorithm: Literal["SHA256", "CRC32"] = Field(
        "SHA256", description="S3 checksum sent with every write, stored, and verified against the source")
    compare: Literal["size-mtime", "checksum"] = Field(
        "size-mtime", description="When a file counts as unchanged since the last backup: size and mtime "
                                  "(default, reads nothing), or checksum (rclone's --checksum: size and "
                                  "content; every candidate file is read and hashed, which catches a "
                                  "same-size rewrite that kept its mtime)")
    verify_unchanged: bool = Field(
        False, description="Same as compare=checksum (kept for existing deployments)")
    retention_days: int = Field(7, ge=1, le=36500, description="Lifecycle expiration of the backup prefix")
    versioning: bool = Field(False, description="Enable bucket versioning (noncurrent versions expire too)")
    object_lock: bool = Field(
        False, description="Write objects with an Object Lock in GOVERNANCE mode for retention_days "
                           "(the bucket must have Object Lock enabled)")
    workers: int = Field(16, ge=1, le=128, description="Files transferred in parallel")
    multipart_threshold_mb: int = Field(16, ge=5, le=5 * 1024, description="Multipart upload from this size")
    multipart_chunksize_mb: int = Field(16, ge=5, le=5 * 1024, description="Multipart part size")
    max_concurrency: int = Field(10, ge=1, le=64, description="Parallel part requests of multipart transfers")
    read_timeout_s: int = Field(
        60, ge=1, le=3600, description="S3 read timeout per request; a stall beyond it is logged with the "
                                       "file and retried (botocore's adaptive retries)")
    metrics_textfile: str | None = Field(
        None, description="Write inferops_backup_last_success_timestamp_seconds to this node_exporter "
                          "textfile (.prom) after a successful run")


# the CLI's --json keys: the first six are the original contract, later ones are only ever appended
SUMMARY_KEYS = ("uploaded_files", "uploaded_bytes", "skipped_files", "verified_files", "failed_files", "errors",
                "deferred_files", "skipped_special", "aborted_uploads")


class BackupReport(BaseModel):
    """What one run did. ``summary()`` is the CLI's --json object."""

    uploaded_files: int = 0  # objects written: uploads and server-side copies
    uploaded_bytes: int = 0
    copied_files: int = 0  # of uploaded_files: server-side copies (rotated logs, s3:// sources)
    skipped_files: int = 0  # unchanged, plus deferred
    deferred_files: int = 0  # of skipped_files: inside the quiet period, caught by the next run
    adopted_files: int = 0  # already in the bucket and verified (e.g. written by a crashed run)
    verified_files: int = 0
    failed_files: int = 0
    vanished_files: int = 0  # deleted from the source between the scan and the read: not a failure
    skipped_special: int = 0  # symlinks, FIFOs, sockets and devices under the source: never followed or read
    aborted_uploads: int = 0  # incomplete multipart uploads under the prefix aborted (failed or crashed runs)
    errors: list[str] = []
    source: str = ""
    dest: str = ""
    started_at: str = ""
    finished_at: str = ""

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SUMMARY_KEYS}

    @property
    def ok(self) -> bool:
        return self.failed_files == 0 and not self.errors


class RestoreReport(BaseModel):
    restored_files: int = 0
    restored_bytes: int = 0
    verified_files: int = 0
    failed_files: int = 0
    errors: list[str] = []
    removed_partials: int = 0  # stale ``.partial`` files of an interrupted restore, removed

    @property
    def ok(self) -> bool:
        return self.failed_files == 0 and not self.errors
