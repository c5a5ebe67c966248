"""Log backup vs `aws s3 sync`, both ways: the same moto S3 server, the same tree, the same run.

Issue 17's target: ``inferops backup run`` at most 1.0x the time of ``aws s3 sync`` on a full and on
an unchanged run, with verification on (every object's stored checksum checked against the source;
that is always on). Both tools run as processes, end to end, start-up included, from the same venv:

* ``inferops backup run --source DIR --dest s3://B/P --dest-region R --json`` (the CLI users run
  from cron; no Prefect API configured: an empty ``PREFECT_HOME``, no ``PREFECT_*`` variables);
* ``aws s3 sync DIR s3://B/P --region R``.

Generates a log tree under /tmp (default: issue 17's 1,500 files of mixed sizes, 3 of them 18 MB),
starts moto's standalone server, then times, per tool (wall time, CPU time and peak RSS from
wait4, and the moto server's CPU time while that tool ran):

* full backup into an empty prefix (``--repeat-full`` rounds, each into a fresh prefix, alternating
  which tool goes first; median);
* unchanged re-run (``--repeat`` rounds, alternating; median);
* re-run after ``--changed`` of the files changed (appended to: a new size for both tools),
  ``--repeat`` rounds with a fresh set each, alternating; median.

Both tools get a warm bytecode cache first (a small warm-up sync each, not timed, with
``PYTHONPYCACHEPREFIX`` in the work dir): an installed package has its ``.pyc`` files, and this
machine's ``PYTHONDONTWRITEBYTECODE=1`` would otherwise make each process compile every module.
``--engine`` adds the sync engine alone in a fresh interpreter (no CLI, no settings) to each phase,
which separates the CLI's start-up from the engine's work. Ratios are inferops / aws, paired per
round (the two runs of a round are adjacent, so they see the same machine load), median over the
rounds; <= 1.0 meets the target. Prints a table, then one JSON line with ``--json``. The tree is deleted afterwards.

    .venv/bin/python benchmarks/log_backup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _cpu_of(pid: int) -> float:
    """User+system CPU seconds of a running process (the moto server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict[str, str], server_pid: int) -> dict:
    """Run a process: wall s, CPU s (user+sys), peak RSS MB, stdout, and the server's CPU s meanwhile."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server0 = _cpu_of(server_pid)
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        server = _cpu_of(server_pid) - server0
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        raise RuntimeError(f"{argv[:4]} exited {code}: {stderr[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024,
            "out": stdout, "server_cpu": server}


def engine_main(policy_json: str) -> None:
    from flows.log_backup.engine import run_backup
    from flows.log_backup.models import BackupPolicy

    report = run_backup(BackupPolicy.model_validate_json(policy_json))
    print(json.dumps(report.summary()))
    sys.exit(0 if report.ok else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--big", type=int, default=3, help="files of --big-mb MB or more")
    ap.add_argument("--big-mb", type=int, default=18)
    ap.add_argument("--changed", type=float, default=0.01, help="fraction changed before the third phase")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of the unchanged and changed phases (median)")
    ap.add_argument("--repeat-full", type=int, default=3, help="rounds of the full phase, each a fresh prefix")
    ap.add_argument("--engine", action="store_true", help="also time the engine alone (no CLI) in each phase")
    ap.add_argument("--cli", action="store_true", help=argparse.SUPPRESS)  # the CLI is always timed now
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
        warm_paths, _ = make_tree(work / "warmup", 3, 1, 20, seed=3)
        print(f"tree: {len(paths)} files, {total / MiB:.0f} MiB in {time.perf_counter() - t0:.0f}s", flush=True)
        server.start()
        assert server._proc is not None
        pid = server._proc.pid
        for name in ("bench-inferops", "bench-awscli", "bench-engine"):
            server.create_bucket(name, REGION)
        (work / "prefect-home").mkdir()
        (work / "pycache").mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "PREFECT_", "INFEROPS_")) and k != "PYTHONDONTWRITEBYTECODE"}
        env |= server.env() | {"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(work / "prefect-home"),
                               "PYTHONPYCACHEPREFIX": str(work / "pycache"), "DO_NOT_TRACK": "1"}
        bindir = Path(sys.executable).parent

        def argv(tool: str, src: Path, prefix: str) -> list[str]:
            if tool == "inferops":
                return [str(bindir / "inferops"), "backup", "run", "--source", str(src),
                        "--dest", f"s3://bench-inferops/{prefix}", "--dest-region", REGION, "--json"]
            if tool == "engine":
                policy = json.dumps({"source": str(src), "dest": f"s3://bench-engine/{prefix}", "dest_region": REGION})
                return [sys.executable, str(Path(__file__).resolve()), "--engine-run", policy]
            return [str(bindir / "aws"), "s3", "sync", str(src), f"s3://bench-awscli/{prefix}", "--region", REGION,
                    "--endpoint-url", server.endpoint, "--only-show-errors"]

        tools = ["inferops", "aws", *(["engine"] if args.engine else [])]
        for tool in tools:  # bytecode cache and first-run paths (multipart included), not timed
            for _ in range(2):
                timed(argv(tool, work / "warmup", "warmup"), env, pid)

        def one_round(phase: str, prefix: str, order: list[str], expected: int) -> dict:
            got = {}
            for tool in order:
                got[tool] = timed(argv(tool, work / "logs", prefix), env, pid)
                if tool != "aws":
                    summary = json.loads(got[tool]["out"].strip().splitlines()[-1])
                    if summary["uploaded_files"] != expected or summary["failed_files"]:
                        raise RuntimeError(f"{phase}: {tool} summary {summary} (expected {expected} uploads)")
            print(f"{phase:<9} " + "  ".join(f"{t} {got[t]['wall']:.2f}s" for t in tools), flush=True)
            return got

        def row(phase: str, rounds: list[dict]) -> dict:
            def med(tool: str, key: str) -> float:
                return statistics.median(r[tool][key] for r in rounds)

            out = {"phase": phase, "rounds": len(rounds)}
            for tool in tools:
                name = "awscli" if tool == "aws" else tool
                out |= {f"{name}_s": round(med(tool, "wall"), 3), f"{name}_cpu_s": round(med(tool, "cpu"), 3),
                        f"{name}_peak_rss_mb": round(max(r[tool]["rss"] for r in rounds)),
                        f"{name}_server_cpu_s": round(med(tool, "server_cpu"), 3)}
            # paired per round (adjacent runs see the same machine load), then the median: <= 1.0 meets the target
            per_round = [r["inferops"]["wall"] / r["aws"]["wall"] for r in rounds]
            out["ratio"] = round(statistics.median(per_round), 3)
            out["ratio_per_round"] = [round(x, 3) for x in per_round]
            out["ratio_of_medians"] = round(out["inferops_s"] / out["awscli_s"], 3)
            out["cpu_ratio"] = round(statistics.median(r["inferops"]["cpu"] / r["aws"]["cpu"] for r in rounds), 3)
            if args.engine:
                out["engine_ratio"] = round(out["engine_s"] / out["awscli_s"], 3)
            out["samples"] = [[round(r[t]["wall"], 2) for t in tools] for r in rounds]
            return out

        def orders(i: int) -> list[str]:
            return tools if i % 2 == 0 else list(reversed(tools))

        n_changed = max(1, int(len(paths) * args.changed))
        full = [one_round("full", f"full-{i}", orders(i), len(paths)) for i in range(args.repeat_full)]
        last = f"full-{args.repeat_full - 1}"  # the later phases re-run against the last full backup
        rows = [row("full", full)]
        rows.append(row("unchanged", [one_round("unchanged", last, orders(i + 1), 0) for i in range(args.repeat)]))
        changed = []
        for i in range(args.repeat):  # a fresh set each round
            mtime = time.time() - 120  # outside the 60 s quiet period
            for p in random.Random(100 + i).sample(paths, n_changed):
                with open(p, "ab") as fh:
                    fh.write(f"appended line {i} after the last backup\n".encode())
                os.utime(p, (mtime, mtime))
            changed.append(one_round("changed", last, orders(i), n_changed))
        rows.append(row("changed", changed))

        s3 = server.client(REGION)
        counts = {}
        for bucket in [f"bench-{'awscli' if t == 'aws' else t}" for t in tools]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{last}/")
            counts[bucket] = sum(1 for page in pages for o in page.get("Contents", []) if "/.inferops/" not in o["Key"])
        if any(n != len(paths) for n in counts.values()):
            raise RuntimeError(f"object counts differ from the tree: {counts}")

        cols = [("inferops_s", "inferops s"), ("awscli_s", "aws s3 sync s"), ("ratio", "ratio"),
                ("inferops_cpu_s", "inferops cpu"), ("awscli_cpu_s", "aws cpu"),
                ("inferops_server_cpu_s", "moto cpu (ours)"), ("awscli_server_cpu_s", "moto cpu (aws)"),
                ("inferops_peak_rss_mb", "inferops MB"), ("awscli_peak_rss_mb", "aws MB")]
        if args.engine:
            cols += [("engine_s", "engine s"), ("engine_ratio", "engine ratio")]
        print("\n" + f"{'phase':<10}" + "".join(f"{title:>16}" for _, title in cols))
        for r in rows:
            print(f"{r['phase']:<10}" + "".join(f"{r[key]:>16}" for key, _ in cols))
        peak = max(r["inferops_peak_rss_mb"] for r in rows)
        result = {
            "benchmark": "log_backup", "files": len(paths), "bytes": total,
            "big_files": args.big, "big_file_mb": args.big_mb, "changed_files": n_changed,
            "cpu": cpu_model(), "cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "phases": rows, "inferops_peak_rss_mb": peak,
            "target_met": {r["phase"]: r["ratio"] <= 1.0 for r in rows},
        }
        if args.json:
            print(json.dumps(result))
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
