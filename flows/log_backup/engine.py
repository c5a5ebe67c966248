"""The sync engine: local directories or s3:// prefixes -> a bucket/prefix in another region.

Pure core (no Prefect import). Key layout ``<prefix>/<relative path>`` (a plain mirror, like
``aws s3 sync``); bookkeeping only under ``<prefix>/.inferops/``: the content index
(``index.json.gz``) and one record per run (``runs/``).

A file counts as backed up only once the object exists and the checksum S3 stored for it equals the
one computed from the source. Sources are only ever read.

Shape of a run: a few requests to check the buckets and the lifecycle rule; the index, the listing of
the destination and the source scan in parallel; then one bounded pool of file workers. Small files
are one PutObject each (S3 verifies the checksum we send and echoes it). Multipart transfers go to
s3transfer's pool and report through a subscriber, which verifies the stored composite checksum. One
thread accounts every outcome from one queue. What is "unchanged" is the :class:`Matcher`'s rule.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import os
import queue
import stat
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from s3transfer.exceptions import CancelledError, RetriesExceededError, S3UploadFailedError
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import ChunksizeAdjuster

from flows.common.errors import BackendUnavailable, BadInput, InferopsError
from flows.common.s3 import S3Uri, client_for, log_retries, parse_s3_uri, validate_region
from flows.log_backup.models import BackupPolicy, BackupReport, MiB

BOOKKEEPING = ".inferops"
INDEX_NAME = "index.json.gz"
META_SHA256 = "inferops-sha256"
META_MTIME = "inferops-mtime-ns"
META_SRC_ETAG = "inferops-src-etag"
COPY_MULTIPART_THRESHOLD = 5 * 1024 * MiB  # CopyObject's own limit: below it a copy is one request
CHECKPOINT_EVERY_S = 30.0
READ_BLOCK = MiB
MAX_ERRORS = 1000


class BackupFailed(InferopsError):
    """Some files failed; carries the full report (exit 1)."""

    exit_code = 1

    def __init__(self, report: BackupReport) -> None:
        super().__init__(f"{report.failed_files} file(s) failed to back up to {report.dest}; "
                         f"first error: {(report.errors or ['?'])[0]}")
        self.report = report


class VerifyError(Exception):
    """The stored object does not match the source."""


# what fails one file (reported, counted), not the run; s3transfer's own failures included
PER_FILE_ERRORS = (ClientError, BotoCoreError, OSError, VerifyError, CancelledError, RetriesExceededError,
                   S3UploadFailedError)


# ---------------------------------------------------------------------------------------- checksums

class _Crc32:
    """zlib's CRC32 behind hashlib's update/digest interface (S3 wants it big-endian)."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


HASHERS: dict[str, Callable[[], Any]] = {"SHA256": hashlib.sha256, "CRC32": _Crc32}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Digest:
    """Checksums of a local file: the content identity (sha256) and what S3 should have stored."""

    size: int
    sha256: str  # hex, the content index key
    full: str  # base64 checksum of the whole file in the policy's algorithm
    composite: str  # base64 checksum of the part checksums (multipart uploads), "" if single part
    parts: int


def digest_file(path: str | Path, algorithm: str, part_size: int | None) -> Digest:
    """One sequential read, bounded memory: sha256, the full checksum and per-part checksums."""
    sha = hashlib.sha256()
    full = HASHERS[algorithm]() if algorithm != "SHA256" else None
    part_digests: list[bytes] = []
    part = HASHERS[algorithm]() if part_size else None
    in_part = 0
    size = 0
    with open(path, "rb") as fh:
        while True:
            want = READ_BLOCK if not part_size else min(READ_BLOCK, part_size - in_part)
            block = fh.read(want)
            if not block:
                break
            size += len(block)
            sha.update(block)
            if full is not None:
                full.update(block)
            if part is not None:
                part.update(block)
                in_part += len(block)
                if in_part == part_size:
                    part_digests.append(part.digest())
                    part, in_part = HASHERS[algorithm](), 0
    if part is not None and in_part:
        part_digests.append(part.digest())
    composite = ""
    if part_size:
        outer = HASHERS[algorithm]()
        outer.update(b"".join(part_digests))
        composite = b64(outer.digest())
    full_b64 = b64(sha.digest()) if full is None else b64(full.digest())
    return Digest(size, sha.hexdigest(), full_b64, composite, len(part_digests))


def check_stored(head: dict[str, Any], algorithm: str, digest: Digest) -> str:
    """Raise VerifyError unless ``head`` (HeadObject with ChecksumMode) matches ``digest``.

    Returns the stored checksum as S3 reports it. A multipart object's checksum is COMPOSITE
    (a checksum of the part checksums, ``VALUE-N``), a single-part or copied one FULL_OBJECT.
    """
    stored = head.get(f"Checksum{algorithm}")
    if not stored:
        raise VerifyError(f"no {algorithm} checksum stored")
    if head.get("ContentLength") is not None and head["ContentLength"] != digest.size:
        raise VerifyError(f"size {head['ContentLength']} != source size {digest.size}")
    value, _, parts = stored.partition("-")
    if value == digest.full and not parts:
        return stored
    if digest.composite and value == digest.composite and parts in ("", str(digest.parts)):
        return stored
    raise VerifyError(f"{algorithm} checksum mismatch: stored {stored}, source {digest.full}")


# --------------------------------------------------------------------------------------- the index

@dataclass
class Entry:
    size: int
    mtime_ns: int
    sha256: str
    checksum: str  # as stored by S3
    src_etag: str = ""


@dataclass
class Index:
    entries: dict[str, Entry] = field(default_factory=dict)
    dirty: bool = False

    @staticmethod
    def key(dest: S3Uri) -> str:
        return dest.key(f"{BOOKKEEPING}/{INDEX_NAME}")

    @classmethod
    def load(cls, client: Any, dest: S3Uri) -> Index:
        try:
            body = client.get_object(Bucket=dest.bucket, Key=cls.key(dest))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return cls()
            raise
        raw = json.loads(gzip.decompress(body))
        return cls({rel: Entry(*row) for rel, row in raw.get("entries", {}).items()})

    def save(self, client: Any, dest: S3Uri) -> None:
        rows = {rel: [e.size, e.mtime_ns, e.sha256, e.checksum, e.src_etag]
                for rel, e in sorted(self.entries.items())}
        body = gzip.compress(json.dumps({"version": 1, "entries": rows}, separators=(",", ":")).encode(),
                             mtime=0)
        client.put_object(Bucket=dest.bucket, Key=self.key(dest), Body=body, ChecksumAlgorithm="SHA256",
                          ChecksumSHA256=b64(hashlib.sha256(body).digest()),
                          ContentType="application/json", ContentEncoding="gzip")


# ------------------------------------------------------------------------------------------ sources

@dataclass(frozen=True)
class Item:
    rel: str
    size: int
    mtime_ns: int
    path: str | Path | None = None  # local file (a str from the scan: no Path object per file)
    key: str | None = None  # s3:// source object
    etag: str = ""


@dataclass
class ScanNotes:
    """What a scan met besides regular files: counted and reported, never silently dropped."""

    special: list[str] = field(default_factory=list)  # symlinks, FIFOs, sockets, devices (not followed)
    errors: list[str] = field(default_factory=list)  # unreadable directories, names S3 cannot store


def selected(rel: str, include: list[str], exclude: list[str]) -> bool:
    """Glob filter on the relative path (``*`` crosses ``/``, like ``aws s3 sync --include``)."""
    return any(fnmatchcase(rel, p) for p in include) and not any(fnmatchcase(rel, p) for p in exclude)


def _matcher(include: list[str], exclude: list[str]) -> Callable[[str], bool]:
    if include == ["*"] and not exclude:  # the common case: no glob per file
        return lambda rel: True
    return lambda rel: selected(rel, include, exclude)


def scan_local(root: Path, include: list[str], exclude: list[str],
               notes: ScanNotes | None = None) -> Iterator[Item]:
    """Regular files under ``root``, sorted, filtered. Symlinks are never followed: they, FIFOs,
    sockets and devices go to ``notes.special``; unreadable directories and names that are not
    UTF-8 (no S3 key can hold them) to ``notes.errors``."""
    notes = notes if notes is not None else ScanNotes()
    wanted = _matcher(include, exclude)
    base = os.path.join(os.fspath(root), "")
    stack = [base]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue  # removed since its parent was listed
        except OSError as exc:
            rel_dir = here[len(base):].rstrip("/") or "."
            notes.errors.append(f"{rel_dir}/: cannot list: {exc.strerror or exc}")
            continue
        for entry in reversed(entries):
            if entry.is_dir(follow_symlinks=False):
                stack.append(os.path.join(entry.path, ""))
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone between the listing and the stat (rotated away)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                continue
            rel = entry.path[len(base):]
            if not wanted(rel):
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                notes.errors.append(f"{os.fsencode(rel).decode('utf-8', 'backslashreplace')}: the file name is "
                                    "not UTF-8; S3 keys are, so it cannot be backed up")
                continue
            if not stat.S_ISREG(mode):
                notes.special.append(rel)
                continue
            yield Item(rel, st.st_size, st.st_mtime_ns, path=entry.path)


LIST_PAGE_KEYS = 1000  # S3's page size; tests lower it to exercise the parallel listing


def list_objects(client: Any, uri: S3Uri, *, start_after: str = "",
                 stop: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Objects under the prefix in S3's order (UTF-8 binary, the order of Python's ``str``), from the
    first key after ``start_after``, until ``stop(key)`` says so."""
    prefix = f"{uri.prefix}/" if uri.prefix else ""
    args: dict[str, Any] = {"Bucket": uri.bucket, "Prefix": prefix}
    if start_after:
        args["StartAfter"] = start_after
    if LIST_PAGE_KEYS != 1000:
        args["PaginationConfig"] = {"PageSize": LIST_PAGE_KEYS}
    for page in client.get_paginator("list_objects_v2").paginate(**args):
        for obj in page.get("Contents", []):
            if stop is not None and stop(obj["Key"]):
                return
            yield {**obj, "rel": obj["Key"][len(prefix):]}


class DestListing:
    """The destination's ``{rel: size}``, listed fast: one lister starts at once, from the first key;
    once the index says how many keys to expect, the key space beyond the first ``LIST_PAGE_KEYS``
    is cut into ranges at known keys and listed in parallel (a 100,000-object prefix is 100 pages:
    one after the other at one round trip each, or a few rounds side by side). The ranges are
    contiguous, so keys the index does not know are listed all the same."""

    def __init__(self, client: Any, uri: S3Uri, workers: int = 8) -> None:
        self.client, self.uri, self.workers = client, uri, workers
        self._lock = threading.Lock()
        self._limit: str | None = None  # the first lister stops after this key, once it is set
        self._last = ""  # the last key the first lister took
        self._done = False
        self.ranges = 1

    def _past_limit(self, key: str) -> bool:
        with self._lock:
            if self._limit is not None and key > self._limit:
                return True
            self._last = key
            return False

    def _collect(self, objects: Iterator[dict[str, Any]]) -> dict[str, int]:
        return {o["rel"]: o["Size"] for o in objects if not o["rel"].startswith(f"{BOOKKEEPING}/")}

    def first(self) -> dict[str, int]:
        """The lister that starts at once (run it in a thread)."""
        try:
            return self._collect(list_objects(self.client, self.uri, stop=self._past_limit))
        finally:
            with self._lock:
                self._done = True

    def rest(self, expected_rels: list[str]) -> dict[str, int]:
        """Given the keys the index expects, list what the first lister has not reached, in parallel."""
        keys = sorted(self.uri.key(r) for r in expected_rels)
        step = LIST_PAGE_KEYS - LIST_PAGE_KEYS // 10  # a tenth of a page spare for keys the index lacks
        cuts = keys[step - 1::step]
        with self._lock:
            if self._done:
                return {}
            cuts = [c for c in cuts if c > self._last]
            if len(cuts) < 2:  # one page left at most: the first lister is as quick
                return {}
            self._limit = cuts[0]
        bounds = list(zip(cuts, [*cuts[1:], None], strict=True))
        self.ranges = 1 + len(bounds)

        def one(after: str, upto: str | None) -> dict[str, int]:
            return self._collect(list_objects(self.client, self.uri, start_after=after,
                                              stop=None if upto is None else (lambda k: k > upto)))

        out: dict[str, int] = {}
        with ThreadPoolExecutor(min(self.workers, len(bounds)), thread_name_prefix="list") as pool:
            for part in pool.map(lambda b: one(*b), bounds):
                out.update(part)
        return out


def scan_s3(client: Any, uri: S3Uri, include: list[str], exclude: list[str]) -> Iterator[Item]:
    wanted = _matcher(include, exclude)
    for obj in list_objects(client, uri):
        rel = obj["rel"]
        if rel and not rel.endswith("/") and wanted(rel):
            mtime_ns = int(obj["LastModified"].timestamp() * 1e9)
            yield Item(rel, obj["Size"], mtime_ns, key=obj["Key"], etag=obj["ETag"].strip('"'))


# ------------------------------------------------------------------------------------------ matcher

class Matcher:
    """The equality rule: when is a source file the one already backed up? (rclone's naming)

    ``size-mtime`` (default): same size and mtime as recorded; nothing is read.
    ``checksum``: same size and the same content (sha256), whatever the mtime says; every file of
    the recorded size is read and hashed. It catches a same-size rewrite that kept its mtime.
    An ``s3://`` source compares size and ETag (S3's content tag) in both modes.
    """

    def __init__(self, policy: BackupPolicy) -> None:
        self.checksum = policy.compare == "checksum" or policy.verify_unchanged

    def skip_unread(self, prior: Entry | None, item: Item) -> bool:
        """Unchanged without reading the file."""
        if prior is None or prior.size != item.size:
            return False
        if item.key is not None:
            return prior.src_etag == item.etag
        return not self.checksum and prior.mtime_ns == item.mtime_ns

    def same_content(self, prior: Entry | None, item: Item, digest: Digest) -> bool:
        """After hashing: the recorded entry holds these very bytes (checksum mode only)."""
        if not self.checksum or prior is None or prior.size != digest.size:
            return False
        if prior.sha256:
            return prior.sha256 == digest.sha256
        return prior.checksum.partition("-")[0] in (digest.full, digest.composite)


# ------------------------------------------------------------------------------------- validation

def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def check_bucket(client: Any, bucket: str, region: str, what: str) -> None:
    """The bucket exists and lives in ``region``; BadInput / BackendUnavailable otherwise."""
    try:
        loc = client.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except ClientError as exc:
        if _code(exc) in ("NoSuchBucket", "404"):
            raise BadInput(f"{what} bucket {bucket!r} does not exist") from None
        raise BackendUnavailable(f"{what} bucket {bucket!r}: {_code(exc)}") from None
    except BotoCoreError as exc:
        raise BackendUnavailable(f"S3 unreachable for {what} bucket {bucket!r}: {exc}") from None
    if loc != region:
        raise BadInput(f"{what} bucket {bucket!r} is in region {loc}, not {region}")


def _within(prefix: str, parent: str) -> bool:
    return not parent or prefix == parent or prefix.startswith(f"{parent}/")


def validate(policy: BackupPolicy) -> tuple[S3Uri | Path, S3Uri]:
    """Cheap checks before any network call: URIs, regions, the local source."""
    dest = parse_s3_uri(policy.dest)
    validate_region(policy.dest_region)
    if policy.source.startswith("s3://"):
        validate_region(policy.source_region)
        source: S3Uri | Path = parse_s3_uri(policy.source)
    elif "://" in policy.source:
        raise BadInput(f"malformed source {policy.source!r} (expected a directory or s3://BUCKET/PREFIX)")
    else:
        source = Path(policy.source)
        if not source.exists():
            raise BadInput(f"source directory {policy.source!r} does not exist")
        if not source.is_dir():
            raise BadInput(f"source {policy.source!r} is not a directory")
    if isinstance(source, S3Uri) and source.bucket == dest.bucket and (
            _within(source.prefix, dest.prefix) or _within(dest.prefix, source.prefix)):
        raise BadInput(f"source {source} and destination {dest} overlap")
    for pattern in [*policy.include, *policy.exclude]:
        if not pattern or "\n" in pattern:
            raise BadInput(f"bad glob {pattern!r}")
    return source, dest


# --------------------------------------------------------------------------------------- retention

def lifecycle_rule(dest: S3Uri, days: int) -> dict[str, Any]:
    return {
        "ID": f"inferops-backup-{dest.prefix or 'bucket'}"[:255],
        "Filter": {"Prefix": f"{dest.prefix}/" if dest.prefix else ""},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


def apply_retention(client: Any, dest: S3Uri, policy: BackupPolicy) -> None:
    """Our lifecycle rule on the prefix, other rules kept; optional versioning and Object Lock check."""
    if policy.versioning:
        client.put_bucket_versioning(Bucket=dest.bucket, VersioningConfiguration={"Status": "Enabled"})
    if policy.object_lock:
        try:
            conf = client.get_object_lock_configuration(Bucket=dest.bucket)["ObjectLockConfiguration"]
        except ClientError:
            conf = {}
        if conf.get("ObjectLockEnabled") != "Enabled":
            raise BadInput(f"object_lock is set but bucket {dest.bucket!r} has no Object Lock enabled")
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=dest.bucket)["Rules"]
    except ClientError as exc:
        if _code(exc) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    ours = lifecycle_rule(dest, policy.retention_days)
    others = [r for r in rules if r.get("ID") != ours["ID"]]
    if len(others) == len(rules) - 1 and next(r for r in rules if r.get("ID") == ours["ID"]) == ours:
        return  # already in place
    client.put_bucket_lifecycle_configuration(Bucket=dest.bucket,
                                              LifecycleConfiguration={"Rules": [*others, ours]})


# ------------------------------------------------------------------------------------------ engine

@dataclass
class _Outcome:
    rel: str
    kind: str  # uploaded | copied | adopted | verified | vanished | failed
    entry: Entry | None = None
    nbytes: int = 0
    error: str = ""


_HANDED_OFF = _Outcome("", "handed-off")  # a multipart transfer: its subscriber reports the outcome
_Work = tuple[Callable[..., _Outcome], tuple[Any, ...]]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Finish(BaseSubscriber):
    """s3transfer subscriber of one multipart transfer: verifies the stored object once the
    transfer is done and hands the outcome to the run loop; no thread waits on the transfer."""

    def __init__(self, engine: BackupEngine, item: Item, verify: Callable[[], _Outcome]) -> None:
        self.engine, self.item, self.verify = engine, item, verify

    def on_done(self, future: Any, **kwargs: Any) -> None:
        try:
            self.engine._settled.put(self.engine._guarded(self._finish, self.item, future))
        except BaseException as exc:  # a bug: the run loop re-raises it
            self.engine._settled.put(exc)

    def _finish(self, item: Item, future: Any) -> _Outcome:
        try:
            future.result()
        except Exception:
            # s3transfer aborts a failed multipart upload itself; if the endpoint was down for that
            # too, the upload is still open: abort it now (else the next run's sweep does)
            self.engine._abort_uploads(self.engine.dest.key(item.rel))
            raise
        return self.verify()


class BackupEngine:
    """One backup run. ``run()`` returns the report; it raises only for bad input or no backend."""

    def __init__(self, policy: BackupPolicy, *, now: Callable[[], float] = time.time,
                 on_progress: Callable[[int, int], None] | None = None,
                 log: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.policy = policy
        self.source, self.dest = validate(policy)
        self.now = now
        self.on_progress = on_progress
        self.log = log or logging.getLogger("inferops.backup")
        self.algorithm = policy.checksum_algorithm
        self.matcher = Matcher(policy)
        self.threshold = policy.multipart_threshold_mb * MiB
        self.chunksize = policy.multipart_chunksize_mb * MiB
        pool = policy.workers + policy.max_concurrency
        self.client = client_for("backup", policy.dest_region, max_pool=pool, read_timeout=policy.read_timeout_s)
        log_retries(self.client, self.log, self._describe)
        self.source_client = None
        if isinstance(self.source, S3Uri):
            self.source_client = client_for("primary", policy.source_region, max_pool=pool,
                                            read_timeout=policy.read_timeout_s)
            log_retries(self.source_client, self.log)
        self._unreachable = threading.Event()
        self._lock = threading.Lock()
        self._aborted = 0  # this run's failed multipart uploads that it aborted itself
        self._settled: queue.SimpleQueue[_Outcome | BaseException] = queue.SimpleQueue()
        self._started = time.time()  # S3's clock, not the policy's: which uploads predate this run

    def _describe(self, path: str) -> str:
        """A retried request's URL path -> the file it was for."""
        for prefix in (f"{self.dest.bucket}/{self.dest.key('')}", self.dest.key("")):  # path / virtual style
            if path.startswith(prefix):
                return path[len(prefix):]
        return path

    # -- helpers
    def _meta(self, item: Item, digest: Digest | None) -> dict[str, Any]:
        meta = {META_MTIME: str(item.mtime_ns)}
        if digest is not None:
            meta[META_SHA256] = digest.sha256
        if item.etag:
            meta[META_SRC_ETAG] = item.etag
        args: dict[str, Any] = {"Metadata": meta}
        if self.policy.object_lock:
            args["ObjectLockMode"] = "GOVERNANCE"
            args["ObjectLockRetainUntilDate"] = (datetime.fromtimestamp(self.now(), UTC)
                                                 + timedelta(days=self.policy.retention_days))
        return args

    def _head(self, key: str) -> dict[str, Any]:
        return self.client.head_object(Bucket=self.dest.bucket, Key=key, ChecksumMode="ENABLED")

    def _part_size(self, size: int) -> int | None:
        return ChunksizeAdjuster().adjust_chunksize(self.chunksize, size) if size >= self.threshold else None

    def _hand_off(self, item: Item, verify: Callable[[], _Outcome], start: Callable[[list[Any]], Any]) -> _Outcome:
        """Start a managed (multipart) transfer whose subscriber verifies and reports it."""
        start([_Finish(self, item, verify)])
        return _HANDED_OFF

    # -- one local file
    def _backup_local(self, item: Item, prior: Entry | None, listed_size: int | None,
                      content: dict[str, str]) -> _Outcome:
        assert item.path is not None
        key = self.dest.key(item.rel)
        digest = digest_file(item.path, self.algorithm, self._part_size(item.size))
        if digest.size != item.size:
            raise VerifyError("file changed while being read; next run will retry")

        if listed_size is not None and self.matcher.same_content(prior, item, digest):
            assert prior is not None
            return _Outcome(item.rel, "verified", prior)

        if listed_size == item.size:
            # written by a run that crashed before recording it: adopt this very version (same mtime,
            # same checksum) instead of sending it again
            head = self._head(key)
            if prior is None or head.get("Metadata", {}).get(META_MTIME) == str(item.mtime_ns):
                with contextlib.suppress(VerifyError):
                    stored = check_stored(head, self.algorithm, digest)
                    return _Outcome(item.rel, "adopted", self._entry(item, digest, stored))

        twin = content.get(digest.sha256)
        if twin is not None and twin != item.rel and item.size < COPY_MULTIPART_THRESHOLD:
            try:
                return self._copy_twin(item, key, twin, digest)
            except VerifyError:
                pass  # the twin's key changed under us: upload instead
            except ClientError as exc:
                if _code(exc) not in ("NoSuchKey", "404"):
                    raise  # else the twin expired: upload instead

        if item.size < self.threshold:
            # S3 checks the body against the checksum we send and echoes what it stored
            with open(item.path, "rb") as body:
                resp = self.client.put_object(Bucket=self.dest.bucket, Key=key, Body=body,
                                              ChecksumAlgorithm=self.algorithm,
                                              **{f"Checksum{self.algorithm}": digest.full},
                                              **self._meta(item, digest))
            stored = check_stored(resp, self.algorithm, digest)
            return _Outcome(item.rel, "uploaded", self._entry(item, digest, stored), item.size)

        # multipart: S3 computes the composite from the parts it received; compare with ours
        def verify() -> _Outcome:
            stored = check_stored(self._head(key), self.algorithm, digest)
            return _Outcome(item.rel, "uploaded", self._entry(item, digest, stored), item.size)

        return self._hand_off(item, verify, lambda subscribers: self._manager.upload(
            str(item.path), self.dest.bucket, key, subscribers=subscribers,
            extra_args={"ChecksumAlgorithm": self.algorithm, **self._meta(item, digest)}))

    def _copy_twin(self, item: Item, key: str, twin: str, digest: Digest) -> _Outcome:
        """A rotated log: the same bytes are already in the backup, so copy server-side."""
        resp = self.client.copy_object(Bucket=self.dest.bucket, Key=key,
                                       CopySource={"Bucket": self.dest.bucket, "Key": self.dest.key(twin)},
                                       ChecksumAlgorithm=self.algorithm, MetadataDirective="REPLACE",
                                       **self._meta(item, digest))
        result = resp.get("CopyObjectResult", {})
        # S3 answers a copy with the new object's checksum; a store that does not is asked with HEAD
        stored = result.get(f"Checksum{self.algorithm}")
        head = {f"Checksum{self.algorithm}": stored} if stored else self._head(key)
        stored = check_stored(head, self.algorithm, digest)
        return _Outcome(item.rel, "copied", self._entry(item, digest, stored), item.size)

    def _entry(self, item: Item, digest: Digest, stored: str) -> Entry:
        return Entry(item.size, item.mtime_ns, digest.sha256, stored, item.etag)

    # -- one s3:// source object
    def _backup_s3(self, item: Item) -> _Outcome:
        assert isinstance(self.source, S3Uri) and item.key is not None and self.source_client is not None
        key = self.dest.key(item.rel)
        source = {"Bucket": self.source.bucket, "Key": item.key}
        args = {"ChecksumAlgorithm": self.algorithm, "MetadataDirective": "REPLACE",
                "CopySourceIfMatch": f'"{item.etag}"', **self._meta(item, None)}
        if item.size >= COPY_MULTIPART_THRESHOLD:
            return self._hand_off(item, lambda: self._verify_copy(item, self._head(key)), lambda subscribers:
                                  self._copy_manager.copy(source, self.dest.bucket, key, extra_args=args,
                                                          subscribers=[_Size(item.size), *subscribers],
                                                          source_client=self.source_client))
        # one request: S3 copies across regions itself and answers with the copy's ETag and checksum
        result = self.client.copy_object(Bucket=self.dest.bucket, Key=key, CopySource=source, **args)
        return self._verify_copy(item, result.get("CopyObjectResult", {}))

    def _verify_copy(self, item: Item, stored_meta: dict[str, Any]) -> _Outcome:
        """The copy holds the source's bytes: the same MD5 ETag (a single-part source), else the same
        whole-object checksum (asked from the source only then)."""
        assert isinstance(self.source, S3Uri) and self.source_client is not None
        if stored_meta.get("ContentLength") not in (None, item.size):
            raise VerifyError(f"size {stored_meta['ContentLength']} != source size {item.size}")
        stored = stored_meta.get(f"Checksum{self.algorithm}", "")
        ok = "-" not in item.etag and stored_meta.get("ETag", "").strip('"') == item.etag
        if not ok:  # a multipart or KMS-encrypted source: its ETag is no MD5
            src = self.source_client.head_object(Bucket=self.source.bucket, Key=item.key, ChecksumMode="ENABLED",
                                                 IfMatch=f'"{item.etag}"')
            src_sum = src.get(f"Checksum{self.algorithm}")
            ok = bool(src_sum) and "-" not in src_sum and stored == src_sum
        if not ok or not stored:
            raise VerifyError(f"copy of s3://{self.source.bucket}/{item.key} could not be verified")
        return _Outcome(item.rel, "copied", Entry(item.size, item.mtime_ns, "", stored, item.etag), item.size)

    def _guarded(self, fn: Callable[..., _Outcome], item: Item, *args: Any) -> _Outcome:
        """``fn(item, *args)``, its failure an outcome: the run goes on with the other files."""
        rel = item.rel
        if self._unreachable.is_set():
            return _Outcome(rel, "failed", error=f"{rel}: not attempted: S3 endpoint unreachable")
        try:
            return fn(item, *args)
        except FileNotFoundError:
            return _Outcome(rel, "vanished")  # deleted (e.g. rotated away) since the scan
        except EndpointConnectionError as exc:
            self._unreachable.set()
            return _Outcome(rel, "failed", error=f"{rel}: {exc}")
        except PER_FILE_ERRORS as exc:
            return _Outcome(rel, "failed", error=f"{rel}: {_one_line(exc)}")

    # -- multipart uploads left open
    def _abort_uploads(self, key: str) -> None:
        """Abort the incomplete multipart uploads of ``key`` (this run's failed transfer of it)."""
        try:
            page = self.client.list_multipart_uploads(Bucket=self.dest.bucket, Prefix=key)
            for up in page.get("Uploads", []):
                if up["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.dest.bucket, Key=key, UploadId=up["UploadId"])
                    with self._lock:
                        self._aborted += 1
        except (ClientError, BotoCoreError) as exc:
            self.log.warning("%s: failed multipart upload not aborted: %s (the next run aborts it, or the "
                             "lifecycle rule after a day)", key, _one_line(exc))

    def _abort_stale_uploads(self) -> int:
        """Uploads under our prefix initiated before this run began: no live run of ours owns them."""
        prefix = self.dest.key("")
        aborted = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.dest.bucket, Prefix=prefix):
                for up in page.get("Uploads", []):
                    initiated = up.get("Initiated")
                    if initiated is not None and initiated.timestamp() >= self._started:
                        continue  # another run that started after us (overlapping runs): not ours to end
                    self.client.abort_multipart_upload(Bucket=self.dest.bucket, Key=up["Key"],
                                                       UploadId=up["UploadId"])
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) != "NoSuchUpload":
                self.log.warning("incomplete multipart uploads under s3://%s/%s not checked: %s",
                                 self.dest.bucket, prefix, _one_line(exc))
        if aborted:
            self.log.warning("aborted %d incomplete multipart upload(s) under s3://%s/%s left by an "
                             "interrupted run", aborted, self.dest.bucket, prefix)
        return aborted

    # -- the run
    def _prepare(self) -> int:
        """The buckets exist in their regions; our lifecycle rule is in place; uploads an interrupted
        run left open are aborted (how many)."""
        check_bucket(self.client, self.dest.bucket, self.policy.dest_region, "destination")
        if isinstance(self.source, S3Uri):
            assert self.source_client is not None
            check_bucket(self.source_client, self.source.bucket, self.policy.source_region, "source")
        apply_retention(self.client, self.dest, self.policy)
        return self._abort_stale_uploads()

    def run(self) -> BackupReport:
        started = datetime.fromtimestamp(self.now(), UTC)
        report = BackupReport(source=self.policy.source, dest=str(self.dest), started_at=started.isoformat())

        # Every request before the transfers runs in parallel with the source scan: the checks and the
        # lifecycle rule, the index, the destination's listing, the sweep of abandoned uploads. The
        # checks' verdict is read first, so bad input (no bucket, wrong region) is named as such.
        notes = ScanNotes()
        with ThreadPoolExecutor(5, thread_name_prefix="inventory") as pool:
            checked = pool.submit(self._prepare)
            loaded = pool.submit(Index.load, self.client, self.dest)
            lister = DestListing(self.client, self.dest, self.policy.workers)
            first = pool.submit(lister.first)
            rest = pool.submit(lambda: lister.rest(list(loaded.result().entries)))
            if isinstance(self.source, S3Uri):
                assert self.source_client is not None
                scanned = pool.submit(lambda: list(scan_s3(self.source_client, self.source, self.policy.include,
                                                           self.policy.exclude)))
                report.aborted_uploads = checked.result()
                items = scanned.result()
            else:
                items = list(scan_local(self.source, self.policy.include, self.policy.exclude, notes))
                report.aborted_uploads = checked.result()
            index, listed = loaded.result(), {**first.result(), **rest.result()}
        report.skipped_special = len(notes.special)
        if notes.special:
            self.log.info("%d symlink(s), FIFO(s), socket(s) or device(s) not backed up, e.g. %s",
                          len(notes.special), ", ".join(notes.special[:5]))
        for error in notes.errors:
            report.failed_files += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(error)
        # nothing counts as backed up unless the object is there with the recorded size
        kept = {r: e for r, e in index.entries.items() if listed.get(r) == e.size}
        index.dirty = len(kept) != len(index.entries)
        index.entries = kept
        content = {e.sha256: r for r, e in index.entries.items() if e.sha256}

        cutoff_ns = int((self.now() - self.policy.quiet_period_s) * 1e9)
        # Writes to new keys go first, overwrites of keys already backed up second: a rotated log's
        # server-side copy reads its twin's key before the new file of the same name replaces it.
        todo: list[_Work] = []
        overwrites: list[_Work] = []
        for item in items:
            prior = index.entries.get(item.rel)
            if item.key is None and item.mtime_ns > cutoff_ns:
                report.skipped_files += 1
                report.deferred_files += 1
            elif self.matcher.skip_unread(prior, item):
                report.skipped_files += 1
            elif item.key is not None:
                todo.append((self._backup_s3, (item,)))
            else:
                work = (self._backup_local, (item, prior, listed.get(item.rel), content))
                (todo if prior is None else overwrites).append(work)
        if report.deferred_files:
            self.log.info("%d file(s) modified within the last %d s deferred to the next run (quiet period)",
                          report.deferred_files, self.policy.quiet_period_s)

        self._run_transfers([todo, overwrites], index, report)
        report.aborted_uploads += self._aborted
        report.finished_at = datetime.fromtimestamp(self.now(), UTC).isoformat()
        self._record(index, report)
        return report

    def _run_transfers(self, batches: list[list[_Work]], index: Index, report: BackupReport) -> None:
        """One bounded pool of file workers; multipart transfers go to s3transfer's own pool and report
        through a subscriber. Every outcome is accounted here, in one thread, from one queue."""
        config = TransferConfig(multipart_threshold=self.threshold, multipart_chunksize=self.chunksize,
                                max_concurrency=self.policy.max_concurrency, use_threads=True)
        copy_config = TransferConfig(multipart_threshold=COPY_MULTIPART_THRESHOLD,
                                     multipart_chunksize=max(self.chunksize, 64 * MiB),
                                     max_concurrency=self.policy.max_concurrency, use_threads=True)
        total, done = sum(map(len, batches)), 0
        bound = 2 * self.policy.workers  # files in flight: memory stays flat however many there are
        last_checkpoint = time.monotonic()
        settled = self._settled

        def report_back(fut: Future[_Outcome]) -> None:
            exc = fut.exception()
            if exc is not None:
                settled.put(exc)
            elif fut.result() is not _HANDED_OFF:
                settled.put(fut.result())

        with create_transfer_manager(self.client, config) as self._manager, \
                create_transfer_manager(self.client, copy_config) as self._copy_manager, \
                ThreadPoolExecutor(self.policy.workers, thread_name_prefix="backup") as pool:
            for batch in batches:  # each batch completes before the next starts
                in_flight = 0
                work = iter(batch)
                while True:
                    for fn, args in work:
                        pool.submit(self._guarded, fn, *args).add_done_callback(report_back)
                        in_flight += 1
                        if in_flight >= bound:
                            break
                    if not in_flight:
                        break
                    out = settled.get()
                    if isinstance(out, BaseException):
                        raise out
                    in_flight -= 1
                    self._account(out, index, report)
                    done += 1
                    if self.on_progress:
                        self.on_progress(done, total)
                    if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S \
                            and not self._unreachable.is_set():
                        self._save_index(index, report)
                        last_checkpoint = time.monotonic()

    @staticmethod
    def _account(out: _Outcome, index: Index, report: BackupReport) -> None:
        if out.kind == "failed":
            report.failed_files += 1
            if len(report.errors) < MAX_ERRORS:
                report.errors.append(out.error)
            return
        if out.kind == "vanished":
            report.vanished_files += 1
            return
        assert out.entry is not None
        if index.entries.get(out.rel) != out.entry:
            index.entries[out.rel] = out.entry
            index.dirty = True
        report.verified_files += 1
        if out.kind in ("uploaded", "copied"):
            report.uploaded_files += 1
            report.uploaded_bytes += out.nbytes
            report.copied_files += out.kind == "copied"
        elif out.kind == "adopted":
            report.adopted_files += 1
        else:
            report.skipped_files += 1

    def _save_index(self, index: Index, report: BackupReport) -> None:
        if not index.dirty:
            return
        try:
            index.save(self.client, self.dest)
            index.dirty = False
        except (ClientError, BotoCoreError) as exc:
            report.errors.append(f"{BOOKKEEPING}/{INDEX_NAME}: not saved: {_one_line(exc)}")

    def _record(self, index: Index, report: BackupReport) -> None:
        self._save_index(index, report)
        run_key = self.dest.key(f"{BOOKKEEPING}/runs/{report.started_at[:19].replace(':', '')}Z-"
                                f"{uuid.uuid4().hex[:8]}.json")
        body = report.model_dump_json(indent=1).encode()
        try:
            self.client.put_object(Bucket=self.dest.bucket, Key=run_key, Body=body,
                                   ChecksumAlgorithm="SHA256", ChecksumSHA256=b64(hashlib.sha256(body).digest()),
                                   ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            report.errors.append(f"run record not saved: {_one_line(exc)}")


class _Size(BaseSubscriber):
    """Tells s3transfer the source size we already listed (it would otherwise HEAD the source)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)


def run_backup(policy: BackupPolicy, on_progress: Callable[[int, int], None] | None = None,
               log: logging.Logger | logging.LoggerAdapter | None = None) -> BackupReport:
    return BackupEngine(policy, on_progress=on_progress, log=log).run()
