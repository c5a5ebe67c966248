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
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
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

    def describe(self) -> dict:
        return {"alpha": self.alpha, "tensors": len(self.tensors), "matmuls": self.matmuls,
                "fp32_max_rel_diff": self.max_rel_diff}


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


def smooth(src: Path, dst: Path, calib: Dataset, *, alpha: float = 0.8, batch_size: int = 16,
           threads: int = 0) -> Smoothing | None:
    """Write the smoothed FP32 model to ``dst``; None when the model has no MatMul/Gemm to smooth."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"SmoothQuant alpha {alpha} must be within (0, 1)")
    model = onnx.load(str(src))
    groups = _targets(model)
    if not groups:
        return None
    inits = {i.name: i for i in model.graph.initializer}
    amax = channel_maxima(model, list(groups), calib, batch_size=batch_size, threads=threads)
    new_nodes: dict[str, onnx.NodeProto] = {}
    for act, members in groups.items():
        weights = {w: numpy_helper.to_array(inits[w]) for _, w, _ in members}
        # row k of W (column k when transposed) multiplies input channel k
        rows = [np.abs(weights[w].T if t else weights[w]).max(axis=1) for _, w, t in members]
        if any(len(r) != len(amax[act]) for r in rows):
            continue  # a broadcast MatMul whose K is not the tensor's last axis: leave it
        s = scales(amax[act], np.max(rows, axis=0), alpha)
        for node, w, transposed in members:
            scaled = weights[w] * (s[None, :] if transposed else s[:, None])
            inits[w].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), w))
            node.input[0] = act + SUFFIX
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), act + "_smooth_scale"))
        new_nodes[act] = onnx.helper.make_node("Mul", [act, act + "_smooth_scale"], [act + SUFFIX],
                                               name=f"{act}/SmoothQuant")
    # each Mul goes right before the first node that reads its output: topological order holds
    ordered: list[onnx.NodeProto] = []
    placed: set[str] = set()
    for node in model.graph.node:
        for name in node.input:
            act = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and act in new_nodes and act not in placed:
                ordered.append(new_nodes[act])
                placed.add(act)
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    save(model, dst)
    diff = _check(src, dst, calib, threads)
    return Smoothing(dst, alpha, sorted(new_nodes), sum(len(groups[a]) for a in new_nodes), diff)


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
