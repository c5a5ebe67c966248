"""Log backup vs `aws s3 sync`, same moto S3 server, same run.

Generates a log tree under /tmp (default 10,000 files of mixed sizes, 5 of them 100 MB), starts
moto's standalone server, then times three phases for both tools, each run as its own process
(wall time, CPU time and peak RSS from wait4; on a busy machine CPU time is the steadier measure):

* full backup into an empty prefix (once, aws s3 sync first);
* unchanged re-run (``--repeat`` times, alternating which tool goes first; median);
* re-run after 1% of the files changed (appended to, so both tools see a new size), ``--repeat``
  rounds with a fresh 1% each, alternating; median.

``inferops`` here is the sync engine the CLI and the flow run (``flows.log_backup.engine``), in a
fresh interpreter without the Prefect import; ``--cli`` adds a row for the CLI itself (Prefect
imported, run offline) on the unchanged phase. Prints a table, then one JSON line with ``--json``.
The tree is deleted afterwards.

    .venv/bin/python benchmarks/log_backup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from flows.standins.moto import MotoServer  # noqa: E402

MiB = 1024 * 1024
REGION = "eu-west-1"


def make_tree(root: Path, files: int, big: int, big_mb: int, seed: int = 7) -> tuple[list[Path], int]:
    """Mixed sizes, unique content per file (no accidental de-duplication), mtimes 2 h old."""
    rng = random.Random(seed)
    pool = os.urandom(8 * MiB)
    old = time.time() - 7200
    paths, total = [], 0
    for i in range(files):
        if i < big:
            size = big_mb * MiB + rng.randrange(MiB)
        else:
            r = rng.random()
            size = rng.randrange(200, 16_384) if r < 0.80 else (
                rng.randrange(16_384, 131_072) if r < 0.98 else rng.randrange(131_072, 2 * MiB))
        path = root / f"node-{i % 8:02d}" / f"svc-{i % 37:02d}" / f"serve-{i:05d}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"file {i} seed {seed}\n".encode()
        with open(path, "wb") as fh:
            fh.write(header)
            left = size - len(header)
            while left > 0:
                off = rng.randrange(len(pool) // 2)
                chunk = pool[off: off + min(left, len(pool) // 2)]
                fh.write(chunk)
                left -= len(chunk)
        os.utime(path, (old, old))
        paths.append(path)
        total += size
    return paths, total


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str, float]:
    """Run a process: wall seconds, peak RSS in MB, stdout, CPU seconds (user+sys). Raises if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_maxrss / 1024, stdout, usage.ru_utime + usage.ru_stime


def engine_main(policy_json: str) -> None:
    from flows.log_backup.engine import run_backup
    from flows.log_backup.models import BackupPolicy

    report = run_backup(BackupPolicy.model_validate_json(policy_json))
    print(json.dumps(report.summary()))
    sys.exit(0 if report.ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=5, help="files of --big-mb MB or more")
    ap.add_argument("--big-mb", type=int, default=100)
    ap.add_argument("--changed", type=float, default=0.01, help="fraction changed before the third phase")
    ap.add_argument("--cli", action="store_true",
                    help="also time `inferops backup run` (the CLI, with its Prefect import) on the unchanged phase")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the unchanged and changed phases (median)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--engine-run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_run:
        engine_main(args.engine_run)
        return

    work = Path(tempfile.mkdtemp(prefix="inferops-bench-", dir="/tmp"))
    server = MotoServer()
    try:
        t0 = time.perf_counter()
        paths, total = make_tree(work / "logs", args.files, args.big, args.big_mb)
        print(f"tree: {len(paths)} files, {total / MiB:.0f} MiB in {time.perf_counter() - t0:.0f}s", flush=True)
        server.start()
        for name in ("bench-inferops", "bench-awscli"):
            server.create_bucket(name, REGION)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
        env |= server.env() | {"PYTHONPATH": str(ROOT)}
        policy = json.dumps({"source": str(work / "logs"), "dest": "s3://bench-inferops/logs",
                             "dest_region": REGION})
        ours = [sys.executable, str(Path(__file__).resolve()), "--engine-run", policy]
        aws = [str(Path(sys.executable).with_name("aws")), "s3", "sync", str(work / "logs"),
               "s3://bench-awscli/logs", "--region", REGION, "--endpoint-url", server.endpoint,
               "--only-show-errors"]

        def both(phase: str, aws_first: bool) -> dict:
            runs = {}
            for tool in (("aws", "ours") if aws_first else ("ours", "aws")):
                runs[tool] = timed(ours if tool == "ours" else aws, env)
            summary = json.loads(runs["ours"][2].strip().splitlines()[-1])
            expected = {"full": len(paths), "unchanged": 0, "changed": n_changed}[phase]
            if summary["uploaded_files"] != expected or summary["failed_files"]:
                raise RuntimeError(f"{phase}: inferops summary {summary} (expected {expected} uploads)")
            print(f"{phase}: inferops {runs['ours'][0]:.1f}s, aws s3 sync {runs['aws'][0]:.1f}s", flush=True)
            return {"inferops_s": runs["ours"][0], "awscli_s": runs["aws"][0],
                    "inferops_rss": runs["ours"][1], "awscli_rss": runs["aws"][1],
                    "inferops_cpu": runs["ours"][3], "awscli_cpu": runs["aws"][3]}

        def row(phase: str, samples: list[dict]) -> dict:
            o = statistics.median(x["inferops_s"] for x in samples)
            a = statistics.median(x["awscli_s"] for x in samples)
            return {"phase": phase, "inferops_s": round(o, 2), "awscli_s": round(a, 2), "speedup": round(a / o, 2),
                    "inferops_peak_rss_mb": round(max(x["inferops_rss"] for x in samples)),
                    "awscli_peak_rss_mb": round(max(x["awscli_rss"] for x in samples)),
                    "inferops_cpu_s": round(statistics.median(x["inferops_cpu"] for x in samples), 2),
                    "awscli_cpu_s": round(statistics.median(x["awscli_cpu"] for x in samples), 2),
                    "samples": [[round(x["inferops_s"], 2), round(x["awscli_s"], 2)] for x in samples]}

        n_changed = max(1, int(len(paths) * args.changed))
        rows = [row("full", [both("full", aws_first=True)])]
        rows.append(row("unchanged", [both("unchanged", aws_first=bool(i % 2)) for i in range(args.repeat)]))
        if args.cli:
            c_wall, c_rss, c_out, c_cpu = timed([str(Path(sys.executable).with_name("inferops")), "backup", "run",
                                          "--source", str(work / "logs"), "--dest", "s3://bench-inferops/logs",
                                          "--dest-region", REGION, "--json"], env | {"INFEROPS_OFFLINE": "1"})
            assert json.loads(c_out.strip().splitlines()[-1])["uploaded_files"] == 0
            rows.append(row("unchanged-cli", [{"inferops_s": c_wall, "inferops_rss": c_rss, "inferops_cpu": c_cpu,
                                               "awscli_cpu": rows[-1]["awscli_cpu_s"],
                                               "awscli_s": rows[-1]["awscli_s"],
                                               "awscli_rss": rows[-1]["awscli_peak_rss_mb"]}]))
            print(f"unchanged via CLI: inferops {c_wall:.1f}s", flush=True)
        changed = []
        for i in range(args.repeat):  # a fresh 1% each round
            mtime = time.time() - 120  # outside the 60 s quiet period
            for p in random.Random(100 + i).sample(paths, n_changed):
                with open(p, "ab") as fh:
                    fh.write(f"appended line {i} after the last backup\n".encode())
                os.utime(p, (mtime, mtime))
            changed.append(both("changed", aws_first=bool(i % 2)))
        rows.append(row("changed", changed))

        s3 = server.client(REGION)
        counts = {}
        for name in ("bench-inferops", "bench-awscli"):
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix="logs/")
            counts[name] = sum(1 for page in pages for o in page.get("Contents", [])
                               if "/.inferops/" not in o["Key"])
        if counts["bench-inferops"] != len(paths) or counts["bench-awscli"] != len(paths):
            raise RuntimeError(f"object counts differ from the tree: {counts}")

        print(f"\n{'phase':<13} {'inferops s':>11} {'aws s3 sync s':>14} {'speedup':>8} "
              f"{'inferops MB':>12} {'awscli MB':>10} {'inferops cpu s':>15} {'awscli cpu s':>13}")
        for r in rows:
            print(f"{r['phase']:<13} {r['inferops_s']:>11.2f} {r['awscli_s']:>14.2f} {r['speedup']:>7.2f}x "
                  f"{r['inferops_peak_rss_mb']:>12} {r['awscli_peak_rss_mb']:>10} {r['inferops_cpu_s']:>15.1f} "
                  f"{r['awscli_cpu_s']:>13.1f}")
        engine_rows = [r for r in rows if r["phase"] != "unchanged-cli"]
        peak = max(r["inferops_peak_rss_mb"] for r in engine_rows)
        result = {
            "benchmark": "log_backup", "files": len(paths), "bytes": total,
            "big_files": args.big, "big_file_mb": args.big_mb, "changed_files": n_changed,
            "phases": rows, "inferops_peak_rss_mb": peak,
            "faster_on_all_phases": all(r["speedup"] > 1 for r in engine_rows),
            "peak_rss_under_500mb": peak < 500,
        }
        if args.json:
            print(json.dumps(result))
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
