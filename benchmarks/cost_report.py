"""Cost report on 6 million Athena-Parquet CUR line items, against DuckDB answering the same question.

Both sides run in their own fresh process (so each peak RSS is its own) on the same Parquet parts:

* ``inferops``: the whole ``cost_report`` flow (inline, no Prefect API): style detection, type checks
  and quarantine, the hourly cube, every measure, summary.json, HTML and Parquet outputs;
* ``duckdb``: the same amortized-cost question in SQL: the hourly cube (hour x line item type x
  pricing model x instance type x team, amortized cost and instance-hours) by AWS's rules, written
  the same two-stage way (sum per raw keys, then classify the groups) so neither side is handicapped.

Each side runs ``--repeat`` times, alternating, and its fastest run counts (the machine is shared).
The amortized cost per pricing model must agree between the two. Targets: inferops <= 2x DuckDB's time,
< 1 GiB peak RSS. Data is generated under /tmp and deleted afterwards.

    .venv/bin/python benchmarks/cost_report.py [--rows 6000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# VmHWM (this process image's peak RSS; ru_maxrss would carry the forking parent's peak over exec)
PEAK = """
def PEAK():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
"""

INFEROPS = """
import json, re, sys, time
from pathlib import Path
from flows.common.runtime import run_flow
from flows.cost_report.flow import cost_report
t, c = time.perf_counter(), time.process_time()
s = run_flow(cost_report, cur=[sys.argv[1]], out=sys.argv[2])
dt, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"seconds": dt, "cpu_seconds": cpu, "peak_rss_mib": PEAK(),
                  "by_model": {m: v["cost"] for m, v in s["by_pricing_model"].items()},
                  "rows_rejected": s["rejected_rows"]}))
"""

DUCKDB = """
import json, re, sys, time
from pathlib import Path
import duckdb
t, c = time.perf_counter(), time.process_time()
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(f'''
  CREATE TEMP TABLE cube AS WITH g AS (  -- sum per raw keys first, then apply the string rules per group
    SELECT time_bucket(INTERVAL 1 hour, line_item_usage_start_date) AS hour, line_item_line_item_type AS lit,
           line_item_usage_type AS ut, product_instance_type AS it, resource_tags_user_team AS team,
           sum(line_item_unblended_cost) AS unblended, sum(reservation_effective_cost) AS ri,
           sum(savings_plan_savings_plan_effective_cost) AS sp, sum(line_item_usage_amount) AS amount,
           count(*) AS lines
    FROM read_parquet('{sys.argv[1]}/*.parquet') GROUP BY ALL),
  c AS (
    SELECT *, CASE
      WHEN lit = 'Usage' AND contains(ut, 'SpotUsage') THEN 'spot'
      WHEN lit = 'Usage' THEN 'on_demand'
      WHEN lit = 'DiscountedUsage' THEN 'reserved'
      WHEN lit = 'SavingsPlanCoveredUsage' THEN 'savings_plan' END AS pricing_model
    FROM g)
  SELECT hour, lit, pricing_model, it, coalesce(team, 'untagged') AS team,
         sum(CASE pricing_model WHEN 'reserved' THEN ri WHEN 'savings_plan' THEN sp ELSE unblended END) AS cost,
         sum(CASE WHEN pricing_model IS NOT NULL AND it IS NOT NULL
                   AND regexp_matches(ut, '(BoxUsage|SpotUsage|DedicatedUsage|HostUsage)')
                  THEN amount ELSE 0 END) AS instance_hours,
         sum(lines) AS lines
  FROM c GROUP BY ALL''')
by_model = {r[0]: r[1] for r in con.sql(
    "SELECT pricing_model, sum(cost) FROM cube WHERE pricing_model IS NOT NULL GROUP BY 1").fetchall()}
dt, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"seconds": dt, "cpu_seconds": cpu, "peak_rss_mib": PEAK(),
                  "by_model": by_model,
                  "cube_rows": con.execute("SELECT count(*) FROM cube").fetchone()[0]}))
"""


def _child(code: str, *args: str) -> dict:
    p = subprocess.run([sys.executable, "-c", PEAK + code, *args], capture_output=True, text=True, cwd=REPO,
                       env={"INFEROPS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    if p.returncode:
        raise SystemExit(f"benchmark child failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6_000_000)
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side; the fastest counts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from flows.cost_report import sample

    tmp = Path(tempfile.mkdtemp(prefix="inferops-bench-cost-"))
    try:
        t = time.perf_counter()
        one, two = sample.generate(scale=1).height, sample.generate(scale=2).height
        per_scale, fixed = two - one, 2 * one - two  # fleet lines scale, the SP fee lines don't
        df = sample.generate(scale=-(-(args.rows - fixed) // per_scale)).head(args.rows)
        sample.write_athena_parquet(df, tmp / "cur", parts=args.parts)
        rows, size = df.height, sum(p.stat().st_size for p in (tmp / "cur").iterdir())
        del df
        gen_s = time.perf_counter() - t
        runs: dict[str, list[dict]] = {"inferops": [], "duckdb": []}
        for _ in range(args.repeat):  # alternate, so both sides see the same machine load
            runs["inferops"].append(_child(INFEROPS, str(tmp / "cur"), str(tmp / "out")))
            runs["duckdb"].append(_child(DUCKDB, str(tmp / "cur")))
        ours, duck = (min(runs[k], key=lambda r: r["seconds"]) for k in ("inferops", "duckdb"))
        for k in runs:  # peak memory: the worst run's
            (ours if k == "inferops" else duck)["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs[k])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    agree = all(abs(ours["by_model"][m] - duck["by_model"].get(m, 0.0)) < 1e-6 * max(1.0, abs(ours["by_model"][m]))
                for m in ours["by_model"])
    ratio = ours["seconds"] / duck["seconds"]
    cpu = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
    result = {
        "benchmark": "cost_report", "rows": rows, "repeat": args.repeat, "parquet_mib": round(size / 2**20, 1),
        "inferops_s": round(ours["seconds"], 3), "duckdb_s": round(duck["seconds"], 3),
        "time_ratio_vs_duckdb": round(ratio, 3),
        "inferops_cpu_s": round(cpu["inferops"], 3), "duckdb_cpu_s": round(cpu["duckdb"], 3),
        "cpu_ratio_vs_duckdb": round(cpu["inferops"] / cpu["duckdb"], 3),
        "runs_s": {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()},
        "inferops_peak_rss_mib": round(ours["peak_rss_mib"], 1), "duckdb_peak_rss_mib": round(duck["peak_rss_mib"], 1),
        "amortized_cost_agrees": agree, "rejected_rows": ours["rows_rejected"],
        "target_time_ratio_le_2": ratio <= 2.0, "target_peak_lt_1gib": ours["peak_rss_mib"] < 1024,
    }
    print(f"cost report on {rows:,} Athena-Parquet line items ({result['parquet_mib']} MiB, "
          f"{args.parts} parts; generated in {gen_s:.1f} s)")
    print(f"best of {args.repeat} alternating runs each")
    print(f"{'':12}{'seconds':>10}{'CPU s':>10}{'peak RSS MiB':>15}  all runs (s)")
    for name, best in (("inferops", ours), ("duckdb", duck)):
        every = " ".join(f"{r['seconds']:.2f}" for r in runs[name])
        print(f"{name:12}{best['seconds']:>10.2f}{cpu[name]:>10.2f}{best['peak_rss_mib']:>15.1f}  {every}")
    print(f"time ratio {ratio:.2f}x (target <= 2x), CPU-time ratio {cpu['inferops'] / cpu['duckdb']:.2f}x; "
          f"amortized cost per model agrees: {agree}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
