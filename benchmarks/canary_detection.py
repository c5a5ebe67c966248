"""Time to roll back faulty canaries, and false rollbacks of healthy ones, with a 5 s interval, on the
production rehearsal cluster, in both traffic modes.

Each traffic mode runs on its own rehearsal cluster (flows/standins/rehearsal: deploy/k8s/overlays/prod
applied to the strict Kubernetes emulator on 8 GPU nodes x 8 GPUs, the real Prometheus scraping every
pod through the shipped PodMonitor's scrape jobs, load routed through the HTTPRoute, Services and
NetworkPolicies, the HPA fed its Pods metrics), in a child process of its own (both at once). The
real ``canary_rollout`` flow (inline, no Prefect server) canaries llm-server with faulty images
(raised 5xx ratio, slower latency, a canary that reports nothing) and healthy ones, while a surge makes
the HPA scale up mid-rollout. The peer, in the same run on the same faulty canaries, is the same flow
with Flagger's defaults (thresholds only, failure threshold 5): the ratio is what the baseline
comparison and the lower failure limit buy.

Time to rollback: from the moment the faulty canary takes traffic (its pods ready and the traffic
shifted) to the end of the rollback; the serving pods load their model for 400 cluster seconds first
(10 s at the cluster's 40x), during which they are already scraped, as Triton's metrics port is.
Targets: every faulty canary rolled back, median <= 15 s at the 5 s interval, no false rollbacks, and
no PDB violation or HPA override (ServingGuard's watches) in either mode.

    .venv/bin/python benchmarks/canary_detection.py [--faulty-each 2] [--healthy 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODES = ("gateway-api", "replicas")
KINDS = ("5xx", "slow", "silent")


def policies():
    from flows.standins.rehearsal.scenarios import POLICY

    # ten points per interval: with 5 s scrapes an interval holds one new scrape, and the points after
    # it are the ones with data; five points too often leave fewer than the judge's three
    ours = POLICY.model_copy(update={"steps": [25, 50, 100], "samples_per_interval": 10})
    return ours, ours.model_copy(update={"failure_limit": 5, "tolerance": 10.0})  # flagger-like


def one_mode(mode: str, faulty_each: int, healthy: int) -> dict:
    """Every run of one traffic mode on one rehearsal cluster (a child process)."""
    from flows.standins.rehearsal import Rehearsal
    from flows.standins.rehearsal.scenarios import canary_image, flow_runner, run_canary

    ours, flagger = policies()
    rows = []
    with Rehearsal(speed=40.0, model_load_s=400.0) as r:
        r.use_traffic_mode(mode)
        runner = flow_runner(r.env())
        # ours first, faulty then healthy; the peer last: a faulty image it promotes stays in production
        # (the slow one makes the HPA scale the fleet up) and must not weigh on our runs
        plan = [("ours", kind, ours) for kind in KINDS for _ in range(faulty_each)]
        plan += [("ours", "healthy", ours)] * healthy
        plan += [("flagger-like", kind, flagger) for kind in KINDS for _ in range(faulty_each)]
        for n, (who, kind, policy) in enumerate(plan):
            image = canary_image(f"25.{n + 2:02d}-{kind}", None if kind == "healthy" else kind, r)
            run = run_canary(r, image, surge_pods=1, policy=policy, run=runner(image), keep_surge=False)
            rows.append({"mode": mode, "policy": who, "canary": kind, "outcome": run.outcome,
                         "seconds": run.seconds, "detection_s": run.detection_s, "reason": run.reason[:90],
                         "hpa_before": run.hpa_desired_before, "hpa_peak": run.hpa_desired_peak,
                         "replicas_after": run.replicas_after, "violations": run.violations,
                         "overrides": run.overrides, "notes": run.notes})
        problems = r.problems()
    return {"mode": mode, "rows": rows, "problems": problems}


def summarise(rows: list[dict]) -> dict:
    def faulty(policy):
        return [r for r in rows if r["policy"] == policy and r["canary"] != "healthy"]

    def median_rollback(policy):
        times = [r["detection_s"] for r in faulty(policy) if r["outcome"] == "rolled back" and r["detection_s"]]
        return round(statistics.median(times), 1) if times else None

    healthy = [r for r in rows if r["canary"] == "healthy"]
    ours, peer = median_rollback("ours"), median_rollback("flagger-like")
    return {
        "faulty_runs": len(faulty("ours")),
        "rolled_back": sum(r["outcome"] == "rolled back" for r in faulty("ours")),
        "median_time_to_rollback_s": ours,
        "healthy_runs": len(healthy),
        "false_rollbacks": sum(r["outcome"] != "promoted" for r in healthy),
        "peer_flagger_like_rolled_back": sum(r["outcome"] == "rolled back" for r in faulty("flagger-like")),
        "peer_flagger_like_median_time_to_rollback_s": peer,
        "peer_to_ours_time_ratio": round(peer / ours, 2) if ours and peer else None,
        "pdb_violations": sum(r["violations"] for r in rows),
        "hpa_overrides": sum(r["overrides"] for r in rows),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faulty-each", type=int, default=2, help="runs per fault kind (3 kinds) and mode")
    ap.add_argument("--healthy", type=int, default=3, help="healthy runs per mode")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--mode-child", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON line last")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.mode_child:  # one mode's cluster, reporting its rows as JSON on stdout
        print(json.dumps(one_mode(args.mode_child, args.faulty_each, args.healthy)))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def child(mode: str) -> dict:
        out = subprocess.run([sys.executable, __file__, "--mode-child", mode, "--faulty-each", str(args.faulty_each),
                              "--healthy", str(args.healthy)], capture_output=True, text=True, env=env, cwd=REPO)
        if out.returncode != 0:
            raise SystemExit(f"canary_detection: mode {mode} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(len(modes)) as pool:
        results = list(pool.map(child, modes))
    rows = [row for res in results for row in res["rows"]]
    print(f"{'mode':<12} {'policy':<13} {'canary':<8} {'outcome':<12} {'flow s':>6} {'detect s':>8} "
          f"{'hpa':>7}  reason")
    for r in rows:
        print(f"{r['mode']:<12} {r['policy']:<13} {r['canary']:<8} {r['outcome']:<12} {r['seconds']:>6} "
              f"{r['detection_s'] if r['detection_s'] is not None else '-':>8} "
              f"{r['hpa_before']}->{r['hpa_peak']:<4}  {r['reason']}")
        for note in r.get("notes") or []:
            print(f"{'':<12} {note}")
    result = {**summarise(rows), "interval_s": policies()[0].interval_s,
              "modes": {res["mode"]: summarise(res["rows"]) for res in results},
              "problems": [p for res in results for p in res["problems"]]}
    print(f"\nfaulty rolled back: {result['rolled_back']}/{result['faulty_runs']} (median {result['median_time_to_rollback_s']} s"
          f" from taking traffic); flagger-like: {result['peer_flagger_like_rolled_back']}/{result['faulty_runs']} "
          f"(median {result['peer_flagger_like_median_time_to_rollback_s']} s); false rollbacks: "
          f"{result['false_rollbacks']}/{result['healthy_runs']}; PDB violations {result['pdb_violations']}, "
          f"HPA overrides {result['hpa_overrides']}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
