"""Running a model on a dataset, and judging a candidate against the FP32 reference.

``fidelity`` (default): per-sample cosine similarity and relative L2 error of all outputs
(flattened and concatenated per sample) against FP32. ``accuracy``: top-1 of the first output
against labels. Non-finite outputs (NaN/Inf) are counted and make a candidate unacceptable.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from flows.common.errors import BadInput
from model_build.calibrate import Dataset, batches, n_samples


class Metric(StrEnum):
    fidelity = "fidelity"
    accuracy = "accuracy"


class Numerics(StrEnum):
    """Whose arithmetic a candidate is judged with."""

    host_kernels = "host_kernels"  # onnxruntime's fused kernels on this worker (its ISA, saturation included)
    simulated_tensorrt_int8 = "simulated_tensorrt_int8"  # Q/DQ executed as written: exact s8 symmetric INT8


# QuantizeLinear/DequantizeLinear run as ops, the MatMul/Conv between them in float: the exact
# value of the quantised graph (round to nearest even, clip to [-128, 127], no 16-bit saturation),
# which is what TensorRT's INT8 kernels compute up to float summation order
EXACT_QDQ = {"session.disable_quant_qdq": "1"}


DEFAULT_TOLERANCE = {Metric.fidelity: 0.999, Metric.accuracy: 0.01}


def providers() -> list[str]:
    """The execution providers of this worker, best first (CPU always last)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(path: str | Path, threads: int = 0, provider_list: list[str] | None = None,
            config: dict[str, str] | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=provider_list or providers())


def fixed_batch(sess) -> int | None:
    """The model's fixed batch size, or None when the batch dimension is dynamic."""
    dims = {i.shape[0] for i in sess.get_inputs() if i.shape}
    return next((d for d in dims if isinstance(d, int) and d > 0), None)


def run(sess, data: Dataset, batch_size: int = 32) -> list[np.ndarray]:
    """All outputs for all samples, concatenated over batches (one array per model output)."""
    bs = fixed_batch(sess) or batch_size
    if n_samples(data) % bs and fixed_batch(sess):
        raise BadInput(f"the model has a fixed batch of {bs}; the dataset has {n_samples(data)} samples")
    parts: list[list[np.ndarray]] = []
    for feed in batches(data, bs):
        parts.append(sess.run(None, feed))
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


class Fidelity(BaseModel):
    cosine: float  # mean per-sample cosine similarity
    cosine_min: float
    rel_l2: float  # mean per-sample ||y - y_ref|| / ||y_ref||
    nonfinite: int  # samples whose candidate outputs contain NaN or Inf


class Accuracy(BaseModel):
    fp32: float
    candidate: float
    loss: float  # relative: (fp32 - candidate) / fp32


def _per_sample(outputs: list[np.ndarray]) -> np.ndarray:
    n = len(outputs[0])
    return np.concatenate([o.reshape(n, -1).astype(np.float64) for o in outputs], axis=1)


def fidelity(reference: list[np.ndarray], candidate: list[np.ndarray]) -> Fidelity:
    ref, cand = _per_sample(reference), _per_sample(candidate)
    finite = np.isfinite(cand).all(axis=1)
    eps = np.finfo(np.float64).tiny
    dot = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(finite, dot / np.maximum(norms, eps), -1.0)
    rel = np.where(finite, np.linalg.norm(cand - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), eps),
                   np.inf)
    return Fidelity(cosine=float(cos.mean()), cosine_min=float(cos.min()), rel_l2=float(rel.mean()),
                    nonfinite=int((~finite).sum()))


def top1(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    logits = outputs[0]
    if logits.shape[0] != labels.shape[0]:
        raise BadInput(f"labels: {labels.shape[0]} labels for {logits.shape[0]} evaluation samples")
    return float((logits.reshape(len(logits), -1).argmax(axis=1) == labels.reshape(-1)).mean())


def accuracy(reference: list[np.ndarray], candidate: list[np.ndarray], labels: np.ndarray) -> Accuracy:
    a_ref, a_cand = top1(reference, labels), top1(candidate, labels)
    return Accuracy(fp32=a_ref, candidate=a_cand, loss=(a_ref - a_cand) / a_ref if a_ref else 0.0)


def load_labels(path: str | Path) -> np.ndarray:
    try:
        labels = np.load(path, allow_pickle=False)
    except Exception as exc:  # missing, empty, truncated, pickled, not an array: the file is bad, whatever the error
        raise BadInput(f"labels {path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from exc
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
        raise BadInput(f"labels {path}: expected a .npy array of integer class ids")
    return labels


def within(metric: Metric, tolerance: float, fid: Fidelity, acc: Accuracy | None) -> tuple[bool, str]:
    """Whether a candidate meets the tolerance, and why not."""
    if fid.nonfinite:
        return False, f"{fid.nonfinite} evaluation samples produced NaN/Inf"
    if metric is Metric.accuracy:
        if acc is None:
            raise BadInput("--metric accuracy needs --labels")
        ok = acc.loss <= tolerance
        return ok, "" if ok else f"relative accuracy loss {acc.loss:.4f} > tolerance {tolerance}"
    ok = fid.cosine >= tolerance
    return ok, "" if ok else f"mean cosine {fid.cosine:.5f} < tolerance {tolerance}"
