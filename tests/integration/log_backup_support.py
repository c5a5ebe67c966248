"""Helpers shared by the log backup tests: sample log trees, snapshots, the CLI in-process."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from flows.common.cli import main as inferops_main

OLD = time.time() - 3 * 3600  # outside any quiet period


def bucket_name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def write(path: Path, data: bytes, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def make_tree(root: Path, n: int = 12, size: int = 3000, seed: int = 0) -> dict[str, bytes]:
    """A small log tree: nested dirs, varied sizes, a gzip'd rotation, a file to exclude."""
    files: dict[str, bytes] = {}
    for i in range(n):
        rel = f"node-{i % 3}/app/serve-{i}.log"
        files[rel] = (f"{seed}:{i} ".encode() * (size // 8 + i * 37))[: size + i * 101]
    files["node-0/app/serve-0.log.1.gz"] = os.urandom(5000)
    files["node-1/tmp/scratch.swp"] = b"editor swap file"
    for rel, data in files.items():
        write(root / rel, data)
    return files


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """rel -> (sha256, mtime_ns) of every file under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                    p.stat().st_mtime_ns)
    return out


def keys(client, bucket: str, prefix: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``inferops ARGV`` in-process (the real entry point): exit code, stdout, stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        inferops_main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc, out, err = cli(capsys, *argv, "--json")
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object, got {out!r} (stderr {err!r})"
    return rc, json.loads(lines[0])
