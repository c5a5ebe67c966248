"""Restore a backup prefix to a directory, verifying every file's checksum as it is written.

Pure core (no Prefect import). ``--at`` picks, per key, the newest version written at or before that
time (object versions when the bucket is versioned, else the current objects that old enough).
A file is written to a temporary name (``.NAME.inferops-XXXXXXXX.partial``, locked while it is
written) and renamed into place only after its checksum matched. A restore that was killed leaves
such files; the next restore into the same directory removes them (never one another live restore
still holds).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from flows.common.errors import BackendUnavailable, BadInput, InferopsError
from flows.common.s3 import S3Uri
from flows.log_backup.engine import (
    BOOKKEEPING,
    HASHERS,
    META_MTIME,
    META_SHA256,
    READ_BLOCK,
    VerifyError,
    b64,
    list_objects,
    selected,
)
from flows.log_backup.models import RestoreReport


class RestoreFailed(InferopsError):
    """Some files could not be restored and verified; carries the report (exit 1)."""

    exit_code = 1

    def __init__(self, report: RestoreReport) -> None:
        super().__init__(f"{report.failed_files} file(s) failed to restore; first error: {(report.errors or ['?'])[0]}")
        self.report = report


@dataclass(frozen=True)
class Version:
    rel: str
    key: str
    version_id: str | None
    size: int


def _versioned(client: Any, bucket: str) -> bool:
    return client.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")


def choose(client: Any, src: S3Uri, at: datetime | None, include: list[str]) -> Iterator[Version]:
    """The objects to restore: one per relative path, as of ``at`` (latest when None)."""
    prefix = f"{src.prefix}/" if src.prefix else ""
    if at is not None and _versioned(client, src.bucket):
        newest: dict[str, tuple[datetime, dict[str, Any] | None]] = {}
        for page in client.get_paginator("list_object_versions").paginate(Bucket=src.bucket, Prefix=prefix):
            for v in [*page.get("Versions", []), *[{**m, "marker": True} for m in page.get("DeleteMarkers", [])]]:
                if v["LastModified"] <= at and (v["Key"] not in newest or v["LastModified"] > newest[v["Key"]][0]):
                    newest[v["Key"]] = (v["LastModified"], None if v.get("marker") else v)
        objects = [{**v, "rel": k[len(prefix):]} for k, (_, v) in sorted(newest.items()) if v is not None]
    else:
        objects = [o for o in list_objects(client, src) if at is None or o["LastModified"] <= at]
    for o in objects:
        rel = o["rel"]
        if rel and not rel.startswith(f"{BOOKKEEPING}/") and not rel.endswith("/") and selected(rel, include, []):
            yield Version(rel, o["Key"], o.get("VersionId"), o["Size"])


def _safe_target(root: Path, rel: str) -> Path:
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise VerifyError(f"refusing unsafe key path {rel!r}")
    return root.joinpath(*parts)


PARTIAL_TAG, PARTIAL_SUFFIX = ".inferops-", ".partial"
_PARTIAL = re.compile(r"^\..+\.inferops-[a-z0-9_]{8}\.partial$")  # tempfile's 8 random characters


def remove_stale_partials(root: Path, log: logging.Logger | logging.LoggerAdapter | None = None) -> int:
    """Remove the temporary files an interrupted restore left under ``root``; only ours (by name), and
    only those no process holds locked (a restore still writing). Returns how many were removed."""
    removed = 0
    for here, _dirs, files in os.walk(root):
        for name in files:
            if not _PARTIAL.match(name):
                continue
            path = os.path.join(here, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live restore is writing it
            else:
                os.unlink(path)
                removed += 1
            finally:
                os.close(fd)
    if removed and log is not None:
        log.info("removed %d stale .partial file(s) of an interrupted restore under %s", removed, root)
    return removed


def check_target(to: Path) -> None:
    """``--to`` is a directory or can become one: BadInput (naming it) otherwise."""
    try:
        for parent in (to, *to.parents):
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    what = ("is not a directory" if parent == to
                            else f"is under {str(parent)!r}, which is not a directory")
                    raise BadInput(f"restore target --to {str(to)!r} {what}")
                return
    except OSError as exc:  # e.g. a parent we may not search
        raise BadInput(f"restore target --to {str(to)!r}: {exc.strerror or exc}") from None


def restore_one(client: Any, bucket: str, v: Version, root: Path) -> int:
    """Stream one object to ``root/rel`` while hashing; rename into place only if it verifies."""
    target = _safe_target(root, v.rel)
    extra = {"VersionId": v.version_id} if v.version_id else {}
    resp = client.get_object(Bucket=bucket, Key=v.key, ChecksumMode="ENABLED", **extra)
    want_sha = resp.get("Metadata", {}).get(META_SHA256)
    full = next(((alg, resp[f"Checksum{alg}"]) for alg in HASHERS
                 if resp.get(f"Checksum{alg}") and "-" not in resp[f"Checksum{alg}"]), None)
    if not want_sha and full is None:
        raise VerifyError("no whole-object checksum to verify against")
    sha = hashlib.sha256()
    other = HASHERS[full[0]]() if full else None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{PARTIAL_TAG}", suffix=PARTIAL_SUFFIX, dir=target.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we write it: cleanup leaves it alone
        with os.fdopen(fd, "wb") as out:
            for block in resp["Body"].iter_chunks(READ_BLOCK):
                sha.update(block)
                if other is not None:
                    other.update(block)
                out.write(block)
        if want_sha and sha.hexdigest() != want_sha:
            raise VerifyError(f"sha256 mismatch: object {sha.hexdigest()}, recorded {want_sha}")
        if full is not None and other is not None and b64(other.digest()) != full[1]:
            raise VerifyError(f"{full[0]} mismatch: object {b64(other.digest())}, stored {full[1]}")
        mtime_ns = resp.get("Metadata", {}).get(META_MTIME)
        if mtime_ns and mtime_ns.isdigit():
            os.utime(tmp, ns=(int(mtime_ns), int(mtime_ns)))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return v.size


def restore(client: Any, src: S3Uri, to: Path, *, at: datetime | None = None, include: list[str] | None = None,
            workers: int = 8, on_progress: Callable[[int, int], None] | None = None,
            log: logging.Logger | logging.LoggerAdapter | None = None) -> RestoreReport:
    if at is not None and at.tzinfo is None:
        raise BadInput("--at needs a timezone, e.g. 2026-11-28T06:00:00Z")
    check_target(to)
    try:
        versions = list(choose(client, src, at, include or ["*"]))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise BadInput(f"backup bucket {src.bucket!r} does not exist") from None
        raise BackendUnavailable(f"cannot list {src}: {exc}") from None
    except BotoCoreError as exc:
        raise BackendUnavailable(f"cannot list {src}: {exc}") from None
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"restore target --to {str(to)!r}: {exc.strerror or exc}") from None
    report = RestoreReport(removed_partials=remove_stale_partials(to, log))

    def one(v: Version) -> int | str:
        try:
            return restore_one(client, src.bucket, v, to)
        except (ClientError, BotoCoreError, OSError, VerifyError) as exc:
            return f"{v.rel}: {' '.join(str(exc).split())}"

    with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
        for done, result in enumerate(pool.map(one, versions), 1):
            if isinstance(result, str):
                report.failed_files += 1
                report.errors.append(result)
            else:
                report.restored_files += 1
                report.verified_files += 1
                report.restored_bytes += result
            if on_progress:
                on_progress(done, len(versions))
    return report
