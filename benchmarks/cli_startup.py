"""CLI start-up: every ``inferops`` help screen and one offline command per pipeline, beside
``aws --version`` (awscli v1, a Python CLI of the same kind, from the same venv), in the same run.

Each command runs as its own process, offline (no Prefect API: ``PREFECT_*`` removed and an empty
``PREFECT_HOME``), ``--repeat`` times in rounds, peer first in every round; the table shows the median
wall time and the median CPU time (user+sys from ``wait4``, steadier than wall time on a busy machine)
and both as ratios to ``aws --version``. It also records, per command, whether Prefect, boto3,
onnxruntime or polars was imported (``-X importtime`` in one extra run).

The offline commands: ``drbd check`` on a bundled capture, ``idle-gpu plan`` on the bundled queue and
capacity snapshot, ``canary plan`` (no cluster), ``cost report`` on the sample CUR, ``backup run``
(an unchanged re-run of a 20-file tree against a local moto S3 server), and ``model build`` /
``bootstrap run`` up to their input checks (a real build or converge is not start-up).

    .venv/bin/python benchmarks/cli_startup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.common.cli import GROUPS  # noqa: E402  (light: typer only)

BIN = Path(sys.executable).parent
HEAVY = ("prefect", "boto3", "onnxruntime", "polars")


def _env(extra: dict[str, str], prefect_home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": prefect_home, "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1",
                "INFEROPS_STATE_DIR": str(Path(prefect_home) / "state"), "NO_COLOR": "1"})
    env.update(extra)
    return env


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, p.returncode


def _imported(argv: list[str], env: dict[str, str]) -> list[str]:
    """Which heavy packages the command imports (one extra run under -X importtime)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "flows.common.cli", *argv[1:]] if argv[0] == "inferops" else argv
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    names = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def _commands(work: Path, s3: dict[str, str] | None) -> list[tuple[str, list[str], dict[str, str]]]:
    inferops = str(BIN / "inferops")
    demo = REPO / "flows" / "idle_gpu" / "demo_data"
    cmds: list[tuple[str, list[str], dict[str, str]]] = [("inferops --help", [inferops, "--help"], {})]
    cmds += [(f"inferops {g} --help", [inferops, g, "--help"], {}) for g in GROUPS]
    cmds += [
        ("drbd check --input (capture)",
         [inferops, "drbd", "check", "--input", str(REPO / "flows/drbd_health/captures/storage-a.json")], {}),
        ("idle-gpu plan (bundled queue)",
         [inferops, "idle-gpu", "plan", "--queue", str(demo / "queue.yaml"), "--capacity",
          str(demo / "capacity.json"), "--timezone", "UTC", "--json"], {}),
        ("canary plan (no cluster)",
         [inferops, "canary", "plan", "-n", "inference", "-d", "llm", "--image", "registry.example/llm:2"], {}),
        ("cost report (sample CUR)",
         [inferops, "cost", "report", "--cur", str(REPO / "tests/data/cur/legacy.csv.gz"), "--out",
          str(work / "cost")], {}),
        ("model build (to input check)",
         [inferops, "model", "build", str(work / "missing.onnx"), "--calib", "c.npz", "--eval", "e.npz",
          "--precision", "int8", "--out", str(work / "model")], {}),
        ("bootstrap run (to input check)",
         [inferops, "bootstrap", "run", "--inventory", "staging", "--tags", "no-such-tag"], {}),
    ]
    if s3 is not None:
        cmds.append(("backup run (unchanged, moto S3)",
                     [inferops, "backup", "run", "--source", str(work / "logs"), "--dest",
                      "s3://inferops-bench-backup/logs", "--dest-region", "eu-west-1"], s3))
    return cmds


def _start_s3(work: Path):
    from flows.standins.moto import MotoServer

    server = MotoServer().start()
    server.create_bucket("inferops-bench-backup", "eu-west-1")
    logs = work / "logs"
    logs.mkdir()
    for i in range(20):
        (logs / f"app-{i:02d}.log").write_text(f"line {i}\n" * 200)
    old = time.time() - 3600  # older than the backup's quiet period
    for p in logs.iterdir():
        os.utime(p, (old, old))
    return server, {**server.env(), "AWS_ENDPOINT_URL_S3": server.endpoint}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="rounds (median reported)")
    ap.add_argument("--no-s3", action="store_true", help="skip the backup row (no moto server)")
    ap.add_argument("--json", action="store_true", help="print one JSON line last")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cli-startup-") as tmp:
        work = Path(tmp)
        (work / "prefect-home").mkdir()
        server, s3 = (None, None) if args.no_s3 else _start_s3(work)
        try:
            base = _env({}, str(work / "prefect-home"))
            cmds = _commands(work, s3)
            peer = [str(BIN / "aws"), "--version"]
            rows = {name: {"wall": [], "cpu": [], "codes": set()} for name, _, _ in cmds}
            peer_wall, peer_cpu = [], []
            for _name, argv, extra in cmds:  # warm-up: page cache, .pyc files, first backup upload
                _run(argv, {**base, **extra})
            _run(peer, base)
            for _ in range(args.repeat):
                w, c, _ = _run(peer, base)
                peer_wall.append(w)
                peer_cpu.append(c)
                for name, argv, extra in cmds:
                    w, c, code = _run(argv, {**base, **extra})
                    rows[name]["wall"].append(w)
                    rows[name]["cpu"].append(c)
                    rows[name]["codes"].add(code)
            imported = {name: _imported(["inferops", *argv[1:]], {**base, **extra}) for name, argv, extra in cmds}
        finally:
            if server is not None:
                server.close()

    pw, pc = statistics.median(peer_wall), statistics.median(peer_cpu)
    out = {"aws --version": {"wall_s": round(pw, 3), "cpu_s": round(pc, 3)}}
    print(f"CLI start-up, {args.repeat} rounds, median ({platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}); peer: aws --version = {pw:.3f} s wall, {pc:.3f} s CPU")
    print(f"{'command':36} {'wall s':>7} {'x aws':>6} {'cpu s':>7} {'x aws':>6}  exit  heavy imports")
    for name, _, _ in cmds:
        r = rows[name]
        w, c = statistics.median(r["wall"]), statistics.median(r["cpu"])
        codes = sorted(r["codes"])
        out[name] = {"wall_s": round(w, 3), "cpu_s": round(c, 3), "wall_ratio_vs_aws": round(w / pw, 2),
                     "cpu_ratio_vs_aws": round(c / pc, 2), "exit_codes": codes, "imports": imported[name]}
        print(f"{name:36} {w:7.3f} {w / pw:6.2f} {c:7.3f} {c / pc:6.2f}  {','.join(map(str, codes)):4}  "
              f"{', '.join(imported[name]) or '-'}")
    helps = [v for k, v in out.items() if k.endswith("--help")]
    out["max_help_wall_s"] = max(h["wall_s"] for h in helps)
    out["max_help_cpu_s"] = max(h["cpu_s"] for h in helps)
    out["prefect_imported_by"] = [k for k, v in out.items() if isinstance(v, dict) and "prefect" in v.get("imports", [])]
    print(f"slowest --help: {out['max_help_wall_s']:.3f} s wall, {out['max_help_cpu_s']:.3f} s CPU (target < 1 s); "
          f"commands importing Prefect offline: {out['prefect_imported_by'] or 'none'}")
    if args.json:
        print(json.dumps({"benchmark": "cli_startup", "repeat": args.repeat, "results": out}))


if __name__ == "__main__":
    main()
