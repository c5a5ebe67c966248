"""Model-build benchmark: both examples through the real flow (offline), CPU EP, fixed threads.

For each example (digits CNN judged by top-1 accuracy, all-MiniLM-L6-v2 judged by fidelity) one
child process runs ``model_build`` with ``compare=True`` (FP32 reference, INT8 with the
accuracy-aware search, FP16) and reports: INT8 and FP16 speedups over FP32 (batch-1 p50 latency,
batch-32 throughput; the peer is the prepared FP32 model in the same process, same threads),
the accuracy or fidelity loss, the build wall time, the INT8 calibration+search time and the
child's peak RSS. A human table, then (``--json``) one JSON line last.

    python benchmarks/model_build.py [--threads 2] [--only digits|minilm] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"minilm_int8_speedup_b32": 3.2, "minilm_int8_cosine": 0.999, "digits_int8_accuracy_loss": 0.01,
           "calibration_search_s": 300.0}


def _one(name: str, threads: int) -> dict:
    os.environ["INFEROPS_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO))
    from flows.common.runtime import run_flow
    from flows.model_build.flow import model_build
    from model_build.build import BuildSpec, Precision
    from model_build.calibrate import CalibMethod
    from model_build.evaluate import Metric

    work = Path(tempfile.mkdtemp(prefix=f"bench-model-{name}-"))
    if name == "digits":
        d = REPO / "model_build" / "examples" / "digits"
        spec = BuildSpec(source=str(d / "digits_cnn.onnx"), calib=str(d / "calib.npz"), eval=str(d / "eval.npz"),
                         labels=str(d / "labels.npy"), metric=Metric.accuracy, precision=Precision.int8,
                         out=str(work / "out"), bench_threads=threads, publish=False)
    else:
        from model_build.examples.minilm.export import build

        paths = build()
        spec = BuildSpec(source=str(paths["model"]), calib=str(paths["calib"]), eval=str(paths["eval"]),
                         metric=Metric.fidelity, precision=Precision.int8, calib_method=CalibMethod.percentile,
                         out=str(work / "out"), bench_threads=threads, publish=False)
    from flows.common.errors import GateFailed

    t0 = time.perf_counter()
    try:
        result = run_flow(model_build, spec=spec)
        gate = None
    except GateFailed as exc:  # still measured: the manifest and candidates were written
        gate, result = str(exc), None
    wall = time.perf_counter() - t0
    doc = json.loads((work / "out" / "manifest.json").read_text())
    out = {"example": name, "build_wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "deployable": doc["deployable"], "reason": doc["reason"] or gate, "calibration": doc["calibration"],
           "fp32": doc["metrics"]["fp32"]}
    for cand in (result or {}).get("candidates", []):
        perf = cand["perf"]
        out[cand["precision"]] = {
            "ok": cand["ok"], "seconds": cand["seconds"], "excluded_nodes": cand["excluded_nodes"],
            "trials": len(cand["trials"]), "cosine": cand["fidelity"]["cosine"], "rel_l2": cand["fidelity"]["rel_l2"],
            "accuracy_loss": (cand["accuracy"] or {}).get("loss"),
            "speedup_b1": doc["metrics"]["fp32"]["latency_ms_p50"] / perf["latency_ms_p50"],
            "speedup_b32": perf["throughput_by_batch"]["32"] / doc["metrics"]["fp32"]["throughput_by_batch"]["32"],
            "speedup_b8": perf["throughput_by_batch"]["8"] / doc["metrics"]["fp32"]["throughput_by_batch"]["8"],
            "latency_ms_p50": perf["latency_ms_p50"], "throughput_b32": perf["throughput_by_batch"]["32"]}
    if result is None:  # the gate failed: report what the manifest holds for the requested precision
        m = doc["metrics"]
        out["int8"] = {"ok": False, "excluded_nodes": len(doc["excluded_nodes"]), "trials": len(doc["search"]),
                       "cosine": (m["fidelity"] or {}).get("cosine"),
                       "speedup_b1": (m["speedup"] or {}).get("batch1_latency"),
                       "speedup_b32": (m["speedup"] or {}).get("throughput")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["digits", "minilm"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, args.threads)))
        return
    results = []
    for name in [args.only] if args.only else ["digits", "minilm"]:
        p = subprocess.run([sys.executable, __file__, "--child", name, "--threads", str(args.threads)],
                           capture_output=True, text=True, cwd=REPO)
        if p.returncode:
            sys.exit(f"benchmark {name} failed: {p.stderr.strip().splitlines()[-1:]}")
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"CPU EP, {args.threads} threads, load average {load[0]:.1f} on {os.cpu_count()} CPUs (shared machine: noisy)")
    print(f"{'example':8} {'cand':5} {'ok':5} {'b1 speedup':>10} {'b8 speedup':>10} {'b32 speedup':>11} "
          f"{'cosine':>8} {'acc loss':>8} {'excl':>5} {'cand s':>7} {'build s':>8} {'peak MiB':>8}")
    for r in results:
        for c in ("int8", "fp16"):
            if c not in r:
                continue
            x = r[c]
            loss = x.get("accuracy_loss")
            print(f"{r['example']:8} {c:5} {str(x['ok']):5} {x.get('speedup_b1') or 0:10.2f} "
                  f"{x.get('speedup_b8') or 0:10.2f} {x.get('speedup_b32') or 0:11.2f} {x.get('cosine') or 0:8.5f} "
                  f"{'-' if loss is None else f'{loss:.4f}':>8} {x['excluded_nodes']:5d} {x.get('seconds') or 0:7.1f} "
                  f"{r['build_wall_s']:8.1f} {r['peak_rss_mib']:8.0f}")
    if args.json:
        print(json.dumps({"threads": args.threads, "loadavg_1m": load[0], "targets": TARGETS, "results": results}))


if __name__ == "__main__":
    main()
