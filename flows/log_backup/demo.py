"""Demo: back up a sample log tree to an embedded S3 (moto) bucket in a second region, rotate a log,
back up again (a server-side copy), restore, and compare byte for byte.

Writes ``summary.json``. The S3 endpoint is moto's in-process server on loopback with dummy
credentials, set only for the demo's duration; production points at AWS S3 or any S3-compatible store.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.common.runtime import run_flow

BUCKET, REGION = "inferops-demo-log-backup", "eu-west-1"


@contextmanager
def embedded_s3() -> Iterator[str]:
    """moto's threaded S3 server on a free loopback port; AWS_* env set for the block, then restored."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def sample_tree(root: Path) -> None:
    """Three nodes' logs, two hours old (outside the quiet period), plus a file still being written."""
    old = time.time() - 7200
    for node in ("gpu-01", "gpu-02", "gpu-03"):
        for svc in ("vllm", "router"):
            path = root / node / svc / "serve.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"2026-11-28T0{i % 10}:00:00Z {node} {svc} request id={i} tokens={i * 7 % 900} status=200\n"
                     for i in range(2000)]
            path.write_text("".join(lines))
            os.utime(path, (old, old))
    live = root / "gpu-01" / "vllm" / "current.log"
    live.write_text("still being written\n")


def run(out: Path) -> str:
    from flows.common.s3 import client_for
    from flows.log_backup.flow import log_backup, log_restore
    from flows.log_backup.models import BackupPolicy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inferops-demo-logs-") as tmp, embedded_s3():
        src, restored = Path(tmp) / "logs", Path(tmp) / "restored"
        sample_tree(src)
        client_for("backup", REGION).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        policy = BackupPolicy(source=str(src), dest=f"s3://{BUCKET}/fleet-a", dest_region=REGION)
        first = run_flow(log_backup, policy=policy)

        # logrotate on gpu-02: serve.log -> serve.log.1 (same bytes), a fresh serve.log
        log = src / "gpu-02" / "vllm" / "serve.log"
        log.rename(log.with_name("serve.log.1"))
        log.write_text("2026-11-28T10:00:00Z gpu-02 vllm request id=0 tokens=1 status=200\n")
        os.utime(log, (time.time() - 3600, time.time() - 3600))
        second = run_flow(log_backup, policy=policy)

        restore = run_flow(log_restore, source=policy.dest, to=str(restored), region=REGION)
        backed_up = [p.relative_to(src) for p in src.rglob("*") if p.is_file() and p.name != "current.log"]
        identical = all(filecmp.cmp(src / rel, restored / rel, shallow=False) for rel in backed_up)
        lifecycle = client_for("backup", REGION).get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]

    keep = ("uploaded_files", "uploaded_bytes", "copied_files", "skipped_files", "deferred_files",
            "skipped_special", "verified_files", "failed_files", "errors")
    summary = {
        "dest": policy.dest, "dest_region": REGION, "s3": "embedded moto server (loopback, dummy credentials)",
        "first_run": {k: first[k] for k in keep},
        "after_rotation": {k: second[k] for k in keep},
        "restore": restore,
        "restored_identical": identical,
        "lifecycle_rules": lifecycle,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if not identical or first["failed_files"] or second["failed_files"]:
        raise RuntimeError("log backup demo: restore differs from the source or files failed")
    return (f"{first['uploaded_files']} files backed up to {REGION}, rotation copied server-side "
            f"({second['copied_files']}), restore verified byte for byte")
