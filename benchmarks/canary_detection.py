"""Time to roll back faulty canaries, and false rollbacks of healthy ones, with a 5 s interval.

Runs the real ``canary_rollout`` flow (inline, no Prefect server) against the Kubernetes API
emulator and a real Prometheus scraping simulated Triton traffic (flows/standins/traffic.py): faulty
canaries (raised 5xx rate, slower latency, a canary that reports nothing) and healthy ones. The
peer, in the same run on the same faulty canaries, is the same flow with Flagger's defaults
(thresholds only, failure threshold 5): the ratio is what the baseline comparison and the lower
failure limit buy. Targets: every faulty canary rolled back, median <= 15 s at the 5 s interval,
no false rollbacks.

    .venv/bin/python benchmarks/canary_detection.py [--faulty-each 2] [--healthy 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from flows.canary import planner  # noqa: E402
from flows.canary.flow import canary_rollout  # noqa: E402
from flows.canary.models import CanaryPolicy  # noqa: E402
from flows.common.errors import InferopsError  # noqa: E402
from flows.common.runtime import run_flow  # noqa: E402
from flows.common.settings import get_settings  # noqa: E402
from flows.standins.kube_emulator import KubeEmulator  # noqa: E402
from flows.standins.prometheus import PrometheusServer  # noqa: E402
from flows.standins.traffic import FAULTS, start_tracks, wait_scraped  # noqa: E402

NS = "inference"
OURS = CanaryPolicy(interval_s=5, scrape_interval_s=1, intervals_per_step=2, failure_limit=2, inconclusive_limit=3, readiness_timeout_s=60)
FLAGGER = OURS.model_copy(update={"failure_limit": 5, "tolerance": 10.0})  # thresholds only, threshold 5


def one(prom: PrometheusServer, apps, name: str, canary: dict | None, policy: CanaryPolicy, seed: int) -> dict:
    apps.create_namespaced_deployment(NS, planner.sample_deployment(NS, name, 4))
    traffic = start_tracks(prom.exporter, NS, name, canary=canary, seed=seed)
    try:
        wait_scraped(prom, traffic)
        t0 = time.monotonic()
        try:
            out = run_flow(canary_rollout, namespace=NS, deployment=name, image="registry.example/llm:2",
                           policy=policy)["outcome"]
            why = ""
        except InferopsError as exc:
            out, why = ("rolled back" if "rolled back" in str(exc) else "error"), str(exc)
        return {"run": name, "outcome": out, "seconds": round(time.monotonic() - t0, 1), "reason": why[:90]}
    finally:
        for t in traffic:
            t.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faulty-each", type=int, default=2, help="runs per fault kind (3 kinds)")
    ap.add_argument("--healthy", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=6)
    ap.add_argument("--json", action="store_true", help="print one JSON line last")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    kube = KubeEmulator().start()
    prom = PrometheusServer().start()
    try:
        kube.create_namespace(NS)
        for i in range(16):  # pods only run where GPUs are free: room for every run's stable, canary, baseline
            kube.add_node(f"gpu-{i}", gpus=8)
        os.environ.update(INFEROPS_KUBE__KUBECONFIG=kube.kubeconfig, INFEROPS_PROMETHEUS__URL=prom.url,
                          INFEROPS_OFFLINE="1")
        get_settings.cache_clear()
        from kubernetes import client

        apps = client.AppsV1Api(kube.api_client())
        jobs = []
        for kind, canary in FAULTS.items():
            for i in range(args.faulty_each):
                jobs.append(("ours", kind, f"{kind}-{i}", canary, OURS))
                jobs.append(("flagger-like", kind, f"peer-{kind}-{i}", canary, FLAGGER))
        jobs += [("ours", "healthy", f"healthy-{i}", {}, OURS) for i in range(args.healthy)]
        with ThreadPoolExecutor(args.parallel) as pool:
            futures = [(j, pool.submit(one, prom, apps, j[2], j[3], j[4], n)) for n, j in enumerate(jobs)]
            rows = [{"policy": j[0], "canary": j[1], **f.result()} for j, f in futures]
    finally:
        prom.stop()
        kube.stop()

    print(f"{'policy':<13} {'canary':<9} {'run':<16} {'outcome':<12} {'seconds':>7}  reason")
    for r in rows:
        print(f"{r['policy']:<13} {r['canary']:<9} {r['run']:<16} {r['outcome']:<12} {r['seconds']:>7}  {r['reason']}")

    def faulty(policy):
        return [r for r in rows if r["policy"] == policy and r["canary"] != "healthy"]

    def median_rollback(policy):
        times = [r["seconds"] for r in faulty(policy) if r["outcome"] == "rolled back"]
        return round(statistics.median(times), 1) if times else None

    healthy = [r for r in rows if r["canary"] == "healthy"]
    ours, peer = median_rollback("ours"), median_rollback("flagger-like")
    result = {
        "faulty_runs": len(faulty("ours")),
        "rolled_back": sum(r["outcome"] == "rolled back" for r in faulty("ours")),
        "median_time_to_rollback_s": ours,
        "healthy_runs": len(healthy),
        "false_rollbacks": sum(r["outcome"] != "promoted" for r in healthy),
        "peer_flagger_like_rolled_back": sum(r["outcome"] == "rolled back" for r in faulty("flagger-like")),
        "peer_flagger_like_median_time_to_rollback_s": peer,
        "peer_to_ours_time_ratio": round(peer / ours, 2) if ours and peer else None,
        "interval_s": OURS.interval_s,
    }
    print(f"\nfaulty rolled back: {result['rolled_back']}/{result['faulty_runs']} (median {ours} s); "
          f"flagger-like: {result['peer_flagger_like_rolled_back']}/{len(faulty('flagger-like'))} "
          f"(median {peer} s); false rollbacks: {result['false_rollbacks']}/{len(healthy)}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
