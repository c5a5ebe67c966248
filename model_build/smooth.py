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

A ``Mul`` is a pass over the activation, as dear as any elementwise op of the model, so it goes
only where it pays. Attention's context needs none: the division goes into the V projection's
weight columns and bias (:func:`_value_projection`). Elsewhere the SQNR that smoothing buys the
INT8 GEMM is estimated on a calibration batch (:func:`gain_db`), and under ``MIN_GAIN_DB`` the
activation is left as it is (its outliers are still split). On MiniLM (AMX host, batch 32, one
thread, interleaved in one process) that removed the 12 ``Mul``s on the contexts and GELU outputs:
118 ms a batch against 126, held-back cosine unchanged (0.99911).

A handful of channels sit far beyond the rest (in MiniLM, 1-2 of 1536 GELU outputs at 14-26x the
median channel): no ``s`` fits them without wrecking the weights' per-channel scales. Each is split
into a few INT8 channels instead (outlier channel splitting, Zhao et al., ICML 2019; see
:func:`split_plan`): copies of the channel, each carrying a share of it small enough for the
inliers' scale, appended to the activation, with the weight row repeated. The GEMM grows by a few
dozen input channels and stays INT8 from end to end. This replaced a float side path per MatMul
(LLM.int8()'s decomposition), whose extra output-sized MatMul and Add cost more than the INT8
GEMM they sat beside: on MiniLM at batch 32 on an AMX host, 122 ms a batch against 141, at the same
fidelity (held-back cosine 0.9991 against 0.9992).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model_build.calibrate import Dataset, batches
from model_build.prepare import save

SUFFIX = "_smoothed"
_PROTO_LIMIT = 2**31 - 2**20  # a serialised ModelProto must stay under 2 GiB
MIN_SCALE, MAX_SCALE = 1e-2, 1e2  # keep weights and activations within a sane dynamic range
SAMPLE_ROWS = 1024  # activation rows (one calibration batch at most) that estimate what smoothing buys
# A Mul over a wide activation costs as much as an elementwise op of the model (on MiniLM at batch 32,
# 1 ms for each 1536-wide GELU output): smoothing is applied where it buys at least this much SQNR on
# the INT8 GEMM it feeds. On MiniLM the LayerNorm outputs gain 4.8-7.7 dB and need it (held-back
# cosine 0.77 without), the GELU outputs gain -0.9-3.2 dB and do not (0.99911 either way)
MIN_GAIN_DB = 4.0


@dataclass
class Smoothing:
    path: Path
    alpha: float
    tensors: list[str]  # activations divided by their channel scales
    matmuls: int  # weights multiplied
    max_rel_diff: float  # smoothed vs original FP32 outputs on one calibration batch
    outlier_channels: int = 0  # input channels split into INT8 copies (all activations together)
    outlier_copies: int = 0  # the input channels those copies add to the GEMMs
    folded: int = 0  # activations divided inside their producer's weights (attention's V projection), no Mul
    unsmoothed: int = 0  # activations left as they are: smoothing bought under min_gain_db (outliers still split)

    def describe(self) -> dict:
        return {"alpha": self.alpha, "tensors": len(self.tensors), "matmuls": self.matmuls,
                "outlier_channels": self.outlier_channels, "outlier_copies": self.outlier_copies,
                "folded": self.folded, "unsmoothed": self.unsmoothed, "fp32_max_rel_diff": self.max_rel_diff}


@dataclass
class SplitPlan:
    """Copies of outlier channels appended to an activation: copy ``i`` is
    ``x[:, index[i]] * share[i] + offset[i]`` and meets weight row ``index[i]`` times ``gain[i]``."""

    index: np.ndarray
    share: np.ndarray
    gain: np.ndarray
    offset: np.ndarray


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


_HEADS = [0, 2, 1, 3]  # [batch, seq, heads, dim] <-> [batch, heads, seq, dim]: the last axis stays put


def _value_projection(act: str, producer: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto],
                      readers: dict[str, int]) -> tuple[str, str | None] | None:
    """(weight, bias) of the V projection when ``act`` is attention's context,
    ``Reshape(Transpose(P @ Transpose(Reshape(x @ W + b))))`` with both transposes swapping only
    heads and sequence: context channel ``c`` is V's output channel ``c``, so dividing W's column
    ``c`` and ``b[c]`` by ``s[c]`` divides the context's channel ``c``, exactly, with no ``Mul``
    (the attention MatMul is linear in V). None for any other shape of graph, or when a tensor on
    the way has another reader (``readers``: how many nodes read each tensor)."""

    def perm(node: onnx.NodeProto) -> list[int] | None:
        return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)

    steps = [("Reshape", 0), ("Transpose", 0), ("MatMul", 1), ("Transpose", 0), ("Reshape", 0)]
    name = act
    for op, arg in steps:
        node = producer.get(name)
        if node is None or node.op_type != op or (op == "Transpose" and perm(node) != _HEADS):
            return None
        name = node.input[arg]
        if name in inits or readers.get(name, 0) != 1:
            return None
    bias = None
    node = producer.get(name)
    if node is not None and node.op_type == "Add":
        consts = [i for i in node.input if i in inits]
        if len(consts) != 1 or len(inits[consts[0]].dims) != 1 or readers.get(consts[0], 0) != 1:
            return None
        bias = consts[0]
        name = next(i for i in node.input if i != bias)
        if readers.get(name, 0) != 1:
            return None
        node = producer.get(name)
    if node is None or node.op_type != "MatMul" or node.input[1] not in inits or readers[node.input[1]] != 1:
        return None
    w = inits[node.input[1]]
    if len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT or (bias and inits[bias].dims[0] != w.dims[1]):
        return None
    return node.input[1], bias


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
                   threads: int = 0, sample: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over the calibration set, batch by batch;
    ``sample`` (when given) receives the first batch's rows of each tensor, at most ``SAMPLE_ROWS``."""
    sess = _session(model, tensors, threads)
    amax: dict[str, np.ndarray] = {}
    for feed in batches(calib, batch_size):
        for name, value in zip(tensors, sess.run(tensors, feed), strict=True):
            rows = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
            m = np.abs(rows).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
            if sample is not None and name not in sample:
                sample[name] = rows[np.linspace(0, len(rows) - 1, min(len(rows), SAMPLE_ROWS)).astype(np.int64)]
    return amax


def _fake_int8(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` through INT8: x on one asymmetric 8-bit scale, w symmetric per output column."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / step)
    xq = (np.clip(np.round(x / step) + zero, 0, 255) - zero) * step
    wstep = np.abs(w).max(axis=0) / 127
    wstep[wstep == 0] = 1.0
    return xq @ (np.round(w / wstep) * wstep)


def gain_db(x: np.ndarray, w: np.ndarray, s: np.ndarray, keep: np.ndarray) -> float:
    """How many dB of signal-to-quantisation-noise ratio smoothing by ``s`` buys ``x @ w`` (rows of
    activation by the group's weights side by side) through INT8; outlier channels (not ``keep``)
    left out of both, since they are split either way."""
    x, w, s = np.asarray(x, np.float64) * keep, np.asarray(w, np.float64), np.asarray(s, np.float64)
    ref = x @ w
    signal = float(np.sum(ref ** 2))
    plain = float(np.sum((_fake_int8(x, w) - ref) ** 2))
    smoothed = float(np.sum((_fake_int8(x / s, w * s[:, None]) - ref) ** 2))
    if not signal or not smoothed:
        return float("inf") if plain else 0.0
    return 10.0 * float(np.log10(max(plain, 1e-300) / smoothed))


def scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel scale; 1 where the channel never fires or has no weight."""
    a, w = np.asarray(act_max, np.float64), np.asarray(weight_max, np.float64)
    s = np.ones_like(a)
    live = (a > 0) & (w > 0)
    s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return np.clip(s, MIN_SCALE, MAX_SCALE).astype(np.float32)


def outlier_channels(act_max: np.ndarray, ratio: float, limit: int) -> np.ndarray:
    """Input channels whose maximum is over ``ratio`` times the median channel's, largest first,
    at most ``limit``: too far out for any common scale (tensors of 64 channels or more only)."""
    a = np.asarray(act_max, np.float64)
    if limit <= 0 or len(a) < 64 or not np.median(a) > 0:
        return np.zeros(0, dtype=np.int64)
    over = np.flatnonzero(a > ratio * np.median(a))
    return over[np.argsort(-a[over])][:limit].astype(np.int64)


def split_plan(act_max: np.ndarray, room: np.ndarray, top: float, *, target: float = 0.5, spread: float = 2.0,
               dither: float = 2 / 255, max_copies: int = 32) -> SplitPlan:
    """How to split outlier channels (maxima ``act_max``) into INT8 copies.

    ``room`` is how far each channel's weight row can be scaled up without raising any output
    channel's weight maximum (free precision, since weights are quantised per output channel);
    ``top`` is the smoothed inliers' largest channel maximum, which sets the activation's INT8 scale.
    Copy ``j`` of ``c`` scales the weight row by a different gain (from ``room`` down to
    ``room / spread``) and carries ``1 / (c * gain)`` of the channel, at most ``target * top``.
    Identical copies would round identically, so their errors would add up as one coarse channel:
    the gains differ, and a dither offset of ``(j - (c-1)/2) / c`` steps (one step ``dither * top``,
    an 8-bit step of ``[-top, top]``) decorrelates them further. Over a channel's copies
    ``share * gain`` sums to 1 and ``offset * gain`` to 0, so the split is exact in float."""
    room = np.clip(np.asarray(room, np.float64), 1.0, MAX_SCALE)
    top = max(float(top), 1e-30)
    copies = np.clip(np.ceil(np.asarray(act_max, np.float64) * spread / (room * target * top)), 1, max_copies)
    copies = copies.astype(np.int64)
    index = np.repeat(np.arange(len(copies)), copies)
    c = copies[index].astype(np.float64)
    j = np.concatenate([np.arange(n) for n in copies]).astype(np.float64)
    gain = room[index] * (1.0 - (1.0 - 1.0 / spread) * j / np.maximum(c - 1, 1))
    return SplitPlan(index=index, share=(1.0 / (c * gain)).astype(np.float32), gain=gain,
                     offset=((j - (c - 1) / 2) / c * dither * top / gain).astype(np.float32))


def smooth(src: Path, dst: Path, calib: Dataset, *, alpha: float = 0.6, batch_size: int = 16,
           threads: int = 0, outlier_ratio: float = 8.0, max_outliers: int = 8,
           min_gain_db: float = MIN_GAIN_DB) -> Smoothing | None:
    """Write the smoothed FP32 model to ``dst``; None when the model has no MatMul/Gemm to smooth.

    Channels beyond ``outlier_ratio`` times the median (at most ``max_outliers`` per activation)
    are split (:func:`split_plan`): their ``1/s`` is 0 and their weight rows are 0 in the main
    block, so they no longer stretch the activation's INT8 scale, and
    ``Concat(x / s, Gather(x, outliers) * share + offset)`` meets ``[s * W; gain * W[outliers]]``.
    Attention's context (no outliers) is divided inside the V projection's weights instead of by a
    ``Mul`` (:func:`_value_projection`); should the smoothed model then differ from the original,
    it is rebuilt with a ``Mul`` everywhere. Any other activation is divided only where that buys
    ``min_gain_db`` (:func:`gain_db`; 0: everywhere); elsewhere its inliers stay as they are, and its
    outliers' ``Mul`` by 0 or 1 is left for :func:`model_build.quantize.lower_for_onnxruntime` to drop."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"SmoothQuant alpha {alpha} must be within (0, 1)")
    model = onnx.load(str(src))
    groups = _targets(model)
    if not groups:
        return None
    sample: dict[str, np.ndarray] = {}
    amax = channel_maxima(model, list(groups), calib, batch_size=batch_size, threads=threads, sample=sample)
    knobs = {"alpha": alpha, "outlier_ratio": outlier_ratio, "max_outliers": max_outliers, "min_gain_db": min_gain_db,
             "sample": sample}
    done = _apply(model, groups, amax, dst, fold=True, **knobs)
    try:
        return replace(done, max_rel_diff=_check(src, dst, calib, threads))
    except RuntimeError:
        if not done.folded:
            raise
    model = onnx.load(str(src))
    done = _apply(model, _targets(model), amax, dst, fold=False, **knobs)
    return replace(done, max_rel_diff=_check(src, dst, calib, threads))


def _apply(model: onnx.ModelProto, groups: dict[str, list[tuple[onnx.NodeProto, str, bool]]],
           amax: dict[str, np.ndarray], dst: Path, *, alpha: float, outlier_ratio: float, max_outliers: int,
           min_gain_db: float, sample: dict[str, np.ndarray], fold: bool) -> Smoothing:
    inits = {i.name: i for i in model.graph.initializer}
    before: dict[str, list[onnx.NodeProto]] = {}  # activation -> the nodes that smooth it, placed before the first reader
    folded: list[str] = []
    split = copies = unsmoothed = 0

    def const(name: str, value: np.ndarray) -> str:
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for act, members in groups.items():
        # every weight as K x N: row k multiplies input channel k (a Gemm with transB holds W^T)
        weights = {w: (numpy_helper.to_array(inits[w]).T if t else numpy_helper.to_array(inits[w]))
                   for _, w, t in members}
        if any(len(weights[w]) != len(amax[act]) for _, w, _ in members):
            continue  # a broadcast MatMul whose K is not the tensor's last axis: leave it
        idx = outlier_channels(amax[act], outlier_ratio, max_outliers)
        keep = np.ones(len(amax[act]), dtype=bool)
        keep[idx] = False
        s = scales(np.where(keep, amax[act], 0.0), np.max([np.abs(w).max(axis=1) for w in weights.values()], axis=0),
                   alpha)
        foldable = fold and not len(idx) and readers.get(act) == len(members)
        v = _value_projection(act, producer, inits, readers) if foldable else None
        if v is not None and v[0] in weights:
            v = None
        if v is None and min_gain_db > 0 and gain_db(sample[act], np.concatenate(list(weights.values()), axis=1),
                                                     s, keep) < min_gain_db:
            s = np.ones_like(s)  # not worth a Mul: the inliers stay as they are
            unsmoothed += 1
            if not len(idx):
                continue
        inv = np.where(keep, 1.0 / s, 0.0).astype(np.float32)
        scaled = {w: np.where(keep[:, None], wk * s[:, None], 0.0) for w, wk in weights.items()}
        if v is not None:
            # divide V's output channels (its weight's columns and its bias) instead of the context
            wv, bias = v
            inits[wv].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[wv]) * inv[None, :], wv))
            if bias:
                inits[bias].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[bias]) * inv, bias))
            folded.append(act)
        else:
            before[act] = _smoothing_nodes(act, inv, idx, keep, s, amax[act], weights, scaled, const)
            split += len(idx)
            copies += len(scaled[members[0][1]]) - len(keep)
        for node, w, transposed in members:
            inits[w].CopyFrom(numpy_helper.from_array((scaled[w].T if transposed else scaled[w]).astype(np.float32), w))
            if act in before:
                node.input[0] = act + SUFFIX
    # the smoothing nodes right before the first node that reads the smoothed tensor: topological order holds
    ordered: list[onnx.NodeProto] = []
    placed: set[str] = set()
    for node in model.graph.node:
        for name in node.input:
            act = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and act in before and act not in placed:
                ordered.extend(before[act])
                placed.add(act)
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    save(model, dst)
    tensors = sorted([*before, *folded])
    return Smoothing(dst, alpha, tensors, sum(len(groups[a]) for a in tensors), float("nan"), split, copies,
                     len(folded), unsmoothed)


def _smoothing_nodes(act: str, inv: np.ndarray, idx: np.ndarray, keep: np.ndarray, s: np.ndarray,
                     amax: np.ndarray, weights: dict[str, np.ndarray], scaled: dict[str, np.ndarray],
                     const) -> list[onnx.NodeProto]:
    """The Mul by ``1/s``, and the outlier copies when ``idx`` names outlier channels (whose weight
    rows in ``scaled`` are then extended by the copies' rows, in place)."""
    smoothed = act + SUFFIX if not len(idx) else act + "_inliers"
    nodes = [onnx.helper.make_node("Mul", [act, const(act + "_smooth_scale", inv)], [smoothed],
                                   name=f"{act}/SmoothQuant")]
    if not len(idx):
        return nodes
    colmax = [np.abs(scaled[w]).max(axis=0) for w in weights]
    room = [min(float(np.min(cm / np.maximum(np.abs(wk[k]), 1e-30)))
                for wk, cm in zip(weights.values(), colmax, strict=True)) for k in idx]
    plan = split_plan(amax[idx], np.array(room), float(np.max(amax[keep] / s[keep])))
    rows = idx[plan.index]
    for w, wk in weights.items():
        scaled[w] = np.concatenate([scaled[w], wk[rows] * plan.gain[:, None]])
    # one Gather of each outlier channel, its copies made by broadcasting: onnxruntime gathers
    # element by element (301 us for 32 copies of one channel of [32, 37, 384], 20 us for one)
    copies = []
    for n, channel in enumerate(idx.tolist()):  # the plan's copies come channel by channel, in idx's order
        at, tag = np.flatnonzero(plan.index == n), "" if n == 0 else f"_{n}"
        nodes += [
            onnx.helper.make_node("Gather", [act, const(act + "_outlier_index" + tag, np.array([channel]))],
                                  [act + "_outliers" + tag], axis=-1, name=f"{act}/Outliers{tag}"),
            onnx.helper.make_node("Mul", [act + "_outliers" + tag, const(act + "_outlier_share" + tag, plan.share[at])],
                                  [act + "_outlier_shares" + tag], name=f"{act}/OutliersShare{tag}"),
            onnx.helper.make_node("Add", [act + "_outlier_shares" + tag,
                                          const(act + "_outlier_dither" + tag, plan.offset[at])],
                                  [act + "_outlier_copies" + tag], name=f"{act}/OutliersDither{tag}")]
        copies.append(act + "_outlier_copies" + tag)
    return nodes + [onnx.helper.make_node("Concat", [smoothed, *copies], [act + SUFFIX], axis=-1,
                                          name=f"{act}/OutliersConcat")]


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
