"""Model-build benchmark: our INT8 build against its peers, in the same run, on the same inputs.

For each model (the digits CNN, all-MiniLM-L6-v2, and a fully convolutional net with dynamic H
and W from ``model_build.examples.convnet``), one child process:

- builds **ours** through the real flow (offline; INT8 with the ISA's scheme, the accuracy-aware
  search judged on the evaluation set; digits by top-1 accuracy, the others by cosine);
- builds the **peers** from the same prepared FP32 model and the same calibration set:
  onnxruntime ``quantize_static`` with its defaults, ``quantize_dynamic`` with its defaults, and
  Hugging Face Optimum's ``ORTQuantizer`` with its ``AutoQuantizationConfig`` for this CPU
  (``avx512_vnni`` on VNNI/AMX, ``avx512`` or ``avx2`` without), static, per-channel;
- times every model against the FP32 model, interleaved (every other round in reverse order):
  batch-1 p50 latency and batch-32 throughput with ``--threads`` threads (wall clock), and the
  CPU time of one intra-op thread per batch (robust when the machine is shared), whose ratios are
  taken round by round (models that ran back to back) with their quartiles beside the median,
  the spread this host's noise gives them; and scores each on **held-back** inputs that no build
  saw (neither for calibration nor for its gate): mean cosine against FP32.

Optimum pins transformers < 5, which this project's environment does not have, so it runs from
its own virtual environment (``--setup-optimum`` makes it at ``$INFEROPS_OPTIMUM_VENV``, default
``/tmp/inferops-optimum-venv``, with uv; the benchmark calls it through a subprocess). Without it
the Optimum peer is reported as skipped. Targets: ours at least as fast as the fastest peer whose
cosine is >= 0.999, on every model; MiniLM >= 2.4x FP32 at batch 32 with cosine >= 0.999 on a
VNNI/AMX CPU. A human table, then (``--json``) one JSON line last; the CPU's ISA is printed.

    python benchmarks/model_build.py [--threads 2] [--only digits|minilm|convnet] [--json]
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = ("digits", "minilm", "convnet")
OPTIMUM_VENV = Path(os.environ.get("INFEROPS_OPTIMUM_VENV", "/tmp/inferops-optimum-venv"))
OPTIMUM_PINS = ("optimum-onnx==0.1.0", "optimum==2.1.0")
OPTIMUM_DEPS = ("transformers==4.57.6", "onnx", "numpy")  # + this onnxruntime version, + CPU torch
TARGETS = {"cosine": 0.999, "ours_vs_fastest_peer": 1.0, "minilm_int8_speedup_b32_vnni": 2.4}

OPTIMUM_SCRIPT = r"""
import json, sys
import numpy as np
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig, CalibrationConfig, CalibrationMethod
fp32, calib, out, config_name = sys.argv[1:5]
data = np.load(calib)
names = list(data.files)
samples = [{k: data[k][i] for k in names} for i in range(len(data[names[0]]))]
config = getattr(AutoQuantizationConfig, config_name)(is_static=True, per_channel=True)
quantizer = ORTQuantizer.from_pretrained(fp32.rsplit("/", 1)[0], file_name=fp32.rsplit("/", 1)[1])
calibration = CalibrationConfig(dataset_name="inferops", dataset_config_name="calib", dataset_split="calib",
                                dataset_num_samples=len(samples), method=CalibrationMethod.MinMax)
ranges = quantizer.fit(dataset=samples, calibration_config=calibration,
                       onnx_augmented_model_name=out + "/augmented.onnx",
                       operators_to_quantize=config.operators_to_quantize)
quantizer.quantize(quantization_config=config, save_dir=out, calibration_tensors_range=ranges)
stem = fp32.rsplit("/", 1)[1].removesuffix(".onnx")
print(json.dumps({"path": out + "/" + stem + "_quantized.onnx", "config": str(config)}))
"""


def _optimum_config(isa) -> str:
    from model_build.isa import ISA

    return {ISA.avx2: "avx2", ISA.avx512: "avx512", ISA.other: "avx2"}.get(isa, "avx512_vnni")


def setup_optimum() -> None:
    """Make Optimum's own environment: this onnxruntime, a CPU torch, transformers 4.x."""
    import onnxruntime

    uv = Path(sys.executable).with_name("uv")
    py = OPTIMUM_VENV / "bin" / "python"
    subprocess.run([str(uv), "venv", "-q", "-p", sys.executable, str(OPTIMUM_VENV)], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), "--no-deps", *OPTIMUM_PINS], check=True)
    torch_wheels = sorted(Path(os.environ.get("PIP_FIND_LINKS", "/opt/wheels")).glob("torch-*+cpu-*.whl"))
    torch = [str(torch_wheels[-1])] if torch_wheels else ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"]
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), *torch], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), f"onnxruntime=={onnxruntime.__version__}",
                    *OPTIMUM_DEPS], check=True)
    print(f"Optimum environment ready: {py}")


def _splits(name: str, work: Path) -> dict:
    """Source model, calibration, gate (evaluation) and held-back sets; labels for digits."""
    if name == "digits":
        d = REPO / "model_build" / "examples" / "digits"
        pixels, labels = np.load(d / "eval.npz")["pixels"], np.load(d / "labels.npy")
        half = len(pixels) // 2
        np.savez(work / "eval.npz", pixels=pixels[:half])
        np.save(work / "labels.npy", labels[:half])
        np.savez(work / "heldout.npz", pixels=pixels[half:])
        return {"model": d / "digits_cnn.onnx", "calib": d / "calib.npz", "eval": work / "eval.npz",
                "heldout": work / "heldout.npz", "labels": work / "labels.npy"}
    if name == "minilm":
        from model_build.examples.minilm.export import build, sentences, tokenize

        paths = build()
        np.savez(work / "heldout.npz", **tokenize(sentences("eval", 128)[64:]))  # never calibrated on nor judged by
        return {**paths, "heldout": work / "heldout.npz"}
    from model_build.examples.convnet import build

    return build()


def _peers(fp32: Path, calib: dict, calib_path: Path, work: Path, isa) -> tuple[dict, dict]:
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    from model_build.calibrate import DatasetReader

    paths, notes = {}, {}
    paths["ort_static_default"] = work / "ort_static_default.onnx"
    quantize_static(str(fp32), str(paths["ort_static_default"]), DatasetReader(calib, 16))
    paths["ort_dynamic_default"] = work / "ort_dynamic_default.onnx"
    quantize_dynamic(str(fp32), str(paths["ort_dynamic_default"]))
    py = OPTIMUM_VENV / "bin" / "python"
    config = _optimum_config(isa)
    if not py.exists():
        notes["optimum"] = f"skipped: no Optimum environment at {OPTIMUM_VENV} (run with --setup-optimum)"
        return paths, notes
    out = work / "optimum"
    out.mkdir()
    p = subprocess.run([str(py), "-c", OPTIMUM_SCRIPT, str(fp32), str(calib_path), str(out), config],
                       capture_output=True, text=True)
    if p.returncode:
        notes["optimum"] = "failed: " + " ".join((p.stderr.strip().splitlines() or ["?"])[-1:])[:300]
        return paths, notes
    paths["optimum"] = Path(json.loads(p.stdout.strip().splitlines()[-1])["path"])
    notes["optimum"] = f"AutoQuantizationConfig.{config}(is_static=True, per_channel=True)"
    return paths, notes


def _one(name: str, threads: int) -> dict:
    os.environ["INFEROPS_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO))
    from flows.common.errors import GateFailed
    from flows.common.runtime import run_flow
    from flows.model_build.flow import model_build
    from model_build import benchmark, evaluate, isa
    from model_build.build import BuildSpec, Precision
    from model_build.calibrate import CalibMethod, load_dataset
    from model_build.evaluate import Metric
    from model_build.prepare import prepare

    host = isa.detect()
    work = Path(tempfile.mkdtemp(prefix=f"bench-model-{name}-"))
    s = _splits(name, work)
    spec = BuildSpec(source=str(s["model"]), calib=str(s["calib"]), eval=str(s["eval"]), precision=Precision.int8,
                     metric=Metric.accuracy if "labels" in s else Metric.fidelity,
                     labels=str(s["labels"]) if "labels" in s else None,
                     calib_method=CalibMethod.percentile if name == "minilm" else CalibMethod.minmax,
                     out=str(work / "out"), bench_threads=threads, publish=False, compare=False)
    t0 = time.perf_counter()
    try:
        run_flow(model_build, spec=spec)
        gate = None
    except GateFailed as exc:  # reported, and ours is then missing from the comparison
        gate = str(exc)
    build_s = time.perf_counter() - t0
    doc = json.loads((work / "out" / "manifest.json").read_text())

    prepared = prepare(s["model"], work / "prepared", softmax_floor=True)  # as the build prepared it
    calib = load_dataset(s["calib"], prepared.inputs, "calibration set")
    heldout = load_dataset(s["heldout"], prepared.inputs, "held-back set")
    t0 = time.perf_counter()
    paths, notes = _peers(prepared.path, calib, Path(s["calib"]), work, host.isa)
    peers_s = time.perf_counter() - t0
    if doc["deployable"]:
        paths = {"ours": work / "out" / doc["artifact"], **paths}
    paths = {"fp32": prepared.path, **paths}

    reference = evaluate.run(evaluate.session(prepared.path, threads), heldout)
    wall = benchmark.measure(paths, heldout, threads=threads, batches=(32,), repeats=9)
    cpu = benchmark.cpu_ms(paths, heldout)  # 9 rounds in alternating order, 0.3 s a model and batch
    models = {}
    for key, path in paths.items():
        fid = evaluate.fidelity(reference, evaluate.run(evaluate.session(path, threads), heldout))
        w = wall[key]
        cpu_b1, cpu_b32 = (benchmark.paired(cpu["fp32"][b], cpu[key][b]) for b in ("1", "32"))
        models[key] = {
            "cosine": fid.cosine, "cosine_min": fid.cosine_min, "nonfinite": fid.nonfinite,
            "speedup_b1": wall["fp32"].latency_ms_p50 / w.latency_ms_p50,
            "speedup_b32": w.throughput_by_batch["32"] / wall["fp32"].throughput_by_batch["32"],
            "cpu_speedup_b1": cpu_b1["median"], "cpu_speedup_b32": cpu_b32["median"],
            "cpu_speedup_b32_quartiles": [cpu_b32["q25"], cpu_b32["q75"]],
            "latency_ms_p50": w.latency_ms_p50, "throughput_b32": w.throughput_by_batch["32"],
            "cpu_ms_b1": float(np.median(cpu[key]["1"])), "cpu_ms_b32": float(np.median(cpu[key]["32"])),
        }
    ours = models.get("ours")
    fit = [k for k in models if k not in ("fp32", "ours") and models[k]["cosine"] >= TARGETS["cosine"]
           and not models[k]["nonfinite"]]
    verdict = {}
    for metric in ("speedup_b1", "speedup_b32", "cpu_speedup_b1", "cpu_speedup_b32"):
        best = max(fit, key=lambda k, m=metric: models[k][m], default=None)
        verdict[metric] = {"fastest_peer_meeting_cosine": best,
                           "ours_over_it": (ours[metric] / models[best][metric]) if ours and best else None}
        if metric.startswith("cpu_") and ours and best:  # round by round: the peer's time over ours
            batch = metric.rsplit("_b", 1)[1]
            paired = benchmark.paired(cpu[best][batch], cpu["ours"][batch])
            verdict[metric].update(ours_over_it=paired["median"], quartiles=[paired["q25"], paired["q75"]])
    return {
        "model": name, "isa": host.isa.value, "cpu": host.model, "threads": threads,
        "ours_build": {"deployable": doc["deployable"], "reason": doc["reason"] or gate, "warnings": doc["warnings"],
                       "scheme": (doc["quantization"] or {}).get("scheme"), "excluded_nodes": len(doc["excluded_nodes"]),
                       "trials": len(doc["search"]), "smoothing": doc["calibration"]["smoothing"],
                       "gate_cosine": (doc["metrics"]["fidelity"] or {}).get("cosine"),
                       "gate_accuracy_loss": (doc["metrics"].get("accuracy") or {}).get("loss"),
                       "build_s": build_s},
        "peers": notes, "peers_build_s": peers_s, "models": models, "vs_fastest_peer": verdict,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=MODELS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--setup-optimum", action="store_true", help=f"create Optimum's environment at {OPTIMUM_VENV}")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.setup_optimum:
        setup_optimum()
        return
    if args.child:
        print(json.dumps(_one(args.child, args.threads)))
        return
    sys.path.insert(0, str(REPO))
    from model_build.isa import detect

    host = detect()
    results = []
    for name in [args.only] if args.only else MODELS:
        p = subprocess.run([sys.executable, __file__, "--child", name, "--threads", str(args.threads)],
                           capture_output=True, text=True, cwd=REPO)
        if p.returncode:
            sys.exit(f"benchmark {name} failed: {p.stderr.strip().splitlines()[-3:]}")
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"CPU: {host.model}, INT8 ISA {host.isa.value} ({host.source}); {args.threads} threads for wall-clock "
          f"figures, 1 thread for CPU-time figures; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':8} {'candidate':20} {'cosine':>8} {'b1 wall':>8} {'b32 wall':>8} {'b1 cpu':>7} {'b32 cpu':>7}  notes")
    for r in results:
        for key, m in r["models"].items():
            if key == "fp32":
                continue
            note = ""
            if key == "ours":
                b = r["ours_build"]
                note = f"{b['scheme']}, {b['excluded_nodes']} nodes in float, built in {b['build_s']:.0f}s"
            elif key == "optimum":
                note = r["peers"]["optimum"]
            print(f"{r['model']:8} {key:20} {m['cosine']:8.5f} {m['speedup_b1']:7.2f}x {m['speedup_b32']:7.2f}x "
                  f"{m['cpu_speedup_b1']:6.2f}x {m['cpu_speedup_b32']:6.2f}x  {note}")
        if "ours" not in r["models"]:
            print(f"{r['model']:8} {'ours':20} not deployable: {r['ours_build']['reason']}")
        if "optimum" not in r["models"]:
            print(f"{r['model']:8} {'optimum':20} {r['peers'].get('optimum')}")
        v = r["vs_fastest_peer"]["cpu_speedup_b32"]
        if v["fastest_peer_meeting_cosine"]:
            q = v.get("quartiles") or [0, 0]
            print(f"{'':8} ours / fastest peer with cosine >= 0.999 ({v['fastest_peer_meeting_cosine']}), batch 32 "
                  f"CPU time: {v['ours_over_it'] or 0:.2f}x (round by round; quartiles {q[0]:.2f}-{q[1]:.2f}x)")
        else:
            print(f"{'':8} no peer meets cosine >= 0.999")
    if args.json:
        print(json.dumps({"isa": host.isa.value, "cpu": host.model, "threads": args.threads, "loadavg_1m": load[0],
                          "targets": TARGETS, "results": results}))


if __name__ == "__main__":
    main()
