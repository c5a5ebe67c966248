"""SmoothQuant for ONNX: migrate activation outliers into the weights before INT8 calibration.

Transformer activations carry a few channels far larger than the rest (after LayerNorm, after
GELU); one per-tensor INT8 scale then spends its range on them and rounds every other channel
away. SmoothQuant (Xiao et al., ICML 2023) divides each input channel ``k`` of a MatMul by
``s_k = max|X_k|**alpha / max|W_k|**(1 - alpha)`` and multiplies row ``k`` of the constant weight
by the same ``s_k``: ``X @ W == (X / s) @ (s * W)`` exactly, but ``X / s`` is flat enough for one
scale, and ``s * W`` is quantised per output channel anyway.

Here the division is a ``Mul`` by ``1/s`` inserted once per activation tensor (shared by every
MatMul/Gemm reading it, whose weights get one common ``s``). Channel maxima come from the
calibration set, a few batches at a time. The smoothed FP32 model is checked against the original
on a calibration batch before it is used.

A handful of channels sit far beyond the rest (in MiniLM, 1-2 of 1536 GELU outputs at 14-26x the
median channel): no ``s`` fits them without wrecking the weights' per-channel scales, so they take
a float side path instead (LLM.int8()'s decomposition, Dettmers et al. 2022; see :func:`smooth`).
With them out, a gentler migration (alpha 0.6) serves the rest better: MiniLM's smoothed INT8
went from cosine 0.9982 with 4 MatMuls then kept in float to 0.9990 with none, on the test's data.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model_build.calibrate import Dataset, batches
from model_build.prepare import save

SUFFIX = "_smoothed"
_PROTO_LIMIT = 2**31 - 2**20  # a serialised ModelProto must stay under 2 GiB
MIN_SCALE, MAX_SCALE = 1e-2, 1e2  # keep weights and activations within a sane dynamic range


@dataclass
class Smoothing:
    path: Path
    alpha: float
    tensors: list[str]  # activations divided by their channel scales
    matmuls: int  # weights multiplied
    max_rel_diff: float  # smoothed vs original FP32 outputs on one calibration batch
    outlier_channels: int = 0  # input channels moved to a float side path (all activations together)
    float_nodes: list[str] = field(default_factory=list)  # the side paths' MatMuls: never quantised

    def describe(self) -> dict:
        return {"alpha": self.alpha, "tensors": len(self.tensors), "matmuls": self.matmuls,
                "outlier_channels": self.outlier_channels, "fp32_max_rel_diff": self.max_rel_diff}


def _targets(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, str, bool]]]:
    """Activation -> [(node, weight initializer, transposed)] for MatMul/Gemm with a 2-D float
    constant weight (Gemm only without transA)."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[tuple[onnx.NodeProto, str, bool]]] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0):
            continue
        groups.setdefault(node.input[0], []).append((node, node.input[1], bool(attrs.get("transB", 0))))
    # a constant input has no outliers to move; a weight shared with a node outside the group
    # would change that node too: leave both alone
    constants = set(inits) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    return {a: g for a, g in groups.items() if a not in constants and all(users[w] == 1 for _, w, _ in g)}


def _session(model: onnx.ModelProto, outputs: list[str], threads: int):
    import onnxruntime as ort

    from model_build.evaluate import providers

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in outputs if n not in known)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    # no graph fusions: the tensors asked for must survive as graph outputs
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if m.ByteSize() < _PROTO_LIMIT:
        return ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=providers())
    with tempfile.TemporaryDirectory(prefix="inferops-smooth-") as tmp:  # over protobuf's 2 GiB
        path = save(m, Path(tmp) / "augmented.onnx")
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers())


def channel_maxima(model: onnx.ModelProto, tensors: list[str], calib: Dataset, *, batch_size: int = 16,
                   threads: int = 0) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over the calibration set, batch by batch."""
    sess = _session(model, tensors, threads)
    amax: dict[str, np.ndarray] = {}
    for feed in batches(calib, batch_size):
        for name, value in zip(tensors, sess.run(tensors, feed), strict=True):
            m = np.abs(np.asarray(value, dtype=np.float32)).reshape(-1, value.shape[-1]).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
    return amax


def scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel scale; 1 where the channel never fires or has no weight."""
    a, w = np.asarray(act_max, np.float64), np.asarray(weight_max, np.float64)
    s = np.ones_like(a)
    live = (a > 0) & (w > 0)
    s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return np.clip(s, MIN_SCALE, MAX_SCALE).astype(np.float32)


def spread(act_max: np.ndarray) -> float:
    """Largest channel maximum over the median one: how badly one INT8 scale fits the tensor."""
    a = np.asarray(act_max, np.float64)
    med = float(np.median(a))
    return float(a.max() / med) if med > 0 else float("inf")


def outlier_channels(act_max: np.ndarray, ratio: float, limit: int) -> np.ndarray:
    """Input channels whose maximum is over ``ratio`` times the median channel's, largest first,
    at most ``limit``: too far out for any common scale (tensors of 64 channels or more only)."""
    a = np.asarray(act_max, np.float64)
    if limit <= 0 or len(a) < 64 or not np.median(a) > 0:
        return np.zeros(0, dtype=np.int64)
    over = np.flatnonzero(a > ratio * np.median(a))
    return over[np.argsort(-a[over])][:limit].astype(np.int64)


def smooth(src: Path, dst: Path, calib: Dataset, *, alpha: float = 0.6, batch_size: int = 16,
           threads: int = 0, outlier_ratio: float = 8.0, max_outliers: int = 8,
           min_spread: float = 0.0) -> Smoothing | None:
    """Write the smoothed FP32 model to ``dst``; None when the model has no MatMul/Gemm to smooth.

    Channels beyond ``outlier_ratio`` times the median (at most ``max_outliers`` per activation)
    leave the INT8 path altogether, as in LLM.int8(): their ``1/s`` is 0 (so they no longer
    stretch the activation's INT8 scale), their weight rows are 0, and a float side path
    ``Gather(x, outliers) @ W[outliers]`` adds their exact contribution to the MatMul's output.
    The side MatMuls are listed in ``Smoothing.float_nodes``: they must stay float."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"SmoothQuant alpha {alpha} must be within (0, 1)")
    model = onnx.load(str(src))
    groups = _targets(model)
    if not groups:
        return None
    inits = {i.name: i for i in model.graph.initializer}
    amax = channel_maxima(model, list(groups), calib, batch_size=batch_size, threads=threads)
    before: dict[str, list[onnx.NodeProto]] = {}  # activation -> its Mul (and Gather), placed before the first reader
    after: dict[str, list[onnx.NodeProto]] = {}  # member node -> its side MatMul and Add, placed right after it
    float_nodes: list[str] = []
    split = 0
    for act, members in groups.items():
        weights = {w: numpy_helper.to_array(inits[w]) for _, w, _ in members}
        # row k of W (column k when transposed) multiplies input channel k
        rows = [np.abs(weights[w].T if t else weights[w]).max(axis=1) for _, w, t in members]
        if any(len(r) != len(amax[act]) for r in rows):
            continue  # a broadcast MatMul whose K is not the tensor's last axis: leave it
        if spread(amax[act]) < min_spread:
            continue  # flat enough for one INT8 scale: a Mul here costs time and buys nothing
        idx = outlier_channels(amax[act], outlier_ratio, max_outliers)
        keep = np.ones(len(amax[act]), dtype=bool)
        keep[idx] = False
        s = scales(np.where(keep, amax[act], 0.0), np.max(rows, axis=0), alpha)
        inv = np.where(keep, 1.0 / s, 0.0).astype(np.float32)
        nodes = [onnx.helper.make_node("Mul", [act, act + "_smooth_scale"], [act + SUFFIX], name=f"{act}/SmoothQuant")]
        model.graph.initializer.append(numpy_helper.from_array(inv, act + "_smooth_scale"))
        if len(idx):
            model.graph.initializer.append(numpy_helper.from_array(idx, act + "_outlier_index"))
            nodes.append(onnx.helper.make_node("Gather", [act, act + "_outlier_index"], [act + "_outliers"], axis=-1,
                                               name=f"{act}/Outliers"))
            split += len(idx)
        for node, w, transposed in members:
            weight = weights[w]
            mask = keep[None, :] if transposed else keep[:, None]
            scaled = np.where(mask, weight * (s[None, :] if transposed else s[:, None]), 0.0)
            inits[w].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), w))
            node.input[0] = act + SUFFIX
            if len(idx):
                side = (weight[:, idx].T if transposed else weight[idx, :]).astype(np.float32)
                out = node.output[0]
                model.graph.initializer.append(numpy_helper.from_array(side, f"{w}_outlier_rows"))
                node.output[0] = out + "_inliers"
                after[node.name] = [
                    onnx.helper.make_node("MatMul", [act + "_outliers", f"{w}_outlier_rows"], [out + "_outliers"],
                                          name=f"{node.name}/Outliers"),
                    onnx.helper.make_node("Add", [out + "_inliers", out + "_outliers"], [out],
                                          name=f"{node.name}/OutliersAdd"),
                ]
                float_nodes.append(f"{node.name}/Outliers")
        before[act] = nodes
    # the Mul (and Gather) right before the first node that reads the smoothed tensor, and each
    # side path right after its MatMul: topological order holds
    ordered: list[onnx.NodeProto] = []
    placed: set[str] = set()
    for node in model.graph.node:
        for name in node.input:
            act = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and act in before and act not in placed:
                ordered.extend(before[act])
                placed.add(act)
        ordered.append(node)
        ordered.extend(after.get(node.name, []))
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    save(model, dst)
    diff = _check(src, dst, calib, threads)
    return Smoothing(dst, alpha, sorted(before), sum(len(groups[a]) for a in before), diff, split, float_nodes)


def _check(src: Path, dst: Path, calib: Dataset, threads: int) -> float:
    """Largest relative deviation of the smoothed model's outputs on one calibration batch."""
    from model_build.evaluate import session

    feed = next(batches(calib, 8))
    ref = session(src, threads).run(None, feed)
    got = session(dst, threads).run(None, feed)
    worst = 0.0
    for r, g in zip(ref, got, strict=True):
        r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r.dtype.kind == "f" and r.size:
            worst = max(worst, float(np.max(np.abs(r - g)) / (np.max(np.abs(r)) or 1.0)))
    if not np.isfinite(worst) or worst > 1e-3:
        raise RuntimeError(f"SmoothQuant changed the FP32 model's outputs (max relative deviation {worst:.3g})")
    return worst
