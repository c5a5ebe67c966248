"""Candidate builders: static INT8 QDQ (onnxruntime.quantization) and FP16 (onnxconverter-common).

Both start from the prepared FP32 model, so tensor and node names match the reference.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model_build.calibrate import CalibMethod, Dataset, DatasetReader
from model_build.isa import Scheme
from model_build.prepare import drop_value_info, save

# ops that overflow or lose too much in FP16: normalisations, softmax, large reductions, exp/pow
FP16_OVERFLOW_OPS = (
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "InstanceNormalization", "GroupNormalization", "Softmax", "LogSoftmax",
    "ReduceSum", "ReduceSumSquare", "ReduceMean", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "Pow", "Exp",
)
# compute-heavy ops: what INT8 speeds up. Quantising every op (residual Adds, attention-mask Adds
# with -FLT_MAX, Softmax, embeddings Gather) costs fidelity for no speed on CPU/TensorRT.
INT8_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _not_a_1d_axis_warning(record: logging.LogRecord) -> bool:
    """onnxruntime's quantiser warns on the root logger, once per weight of every build, that a 1-D
    weight (a LayerNormalization's scale, with ``op_types=None``) has no channel axis 1; it then
    quantises that weight per tensor, as it should. Not for users' logs."""
    return "is out-of-range for weight" not in record.getMessage()


def int8(fp32_path: Path, out_path: Path, calib: Dataset, *, method: CalibMethod = CalibMethod.minmax,
         exclude: Sequence[str] = (), scheme: Scheme = Scheme.u8s8, per_channel: bool = True,
         batch_size: int = 16, cache_path: Path | None = None, stride_batches: int = 4,
         op_types: Sequence[str] | None = INT8_OP_TYPES, constant_weights_only: bool = False) -> Path:
    """Static QDQ INT8 with per-channel weights.

    Calibration runs ``stride_batches`` batches at a time (``CalibStridedMinMax``), so activation
    memory stays bounded by one stride; the ranges are cached in ``cache_path`` and reused by
    every later trial of the search. ``scheme`` (:mod:`model_build.isa`) sets the encoding:
    ``s8s8`` gives signed, zero-point-free activations as TensorRT expects; ``u8s8_reduce_range``
    and ``u8u8`` keep CPUs without VNNI from saturating. ``constant_weights_only`` leaves
    activation-by-activation MatMuls (attention's QK^T and AV) in float: a few percent of the time
    on CPU, and a disproportionate share of the error. ``op_types=None`` quantises every op
    onnxruntime can, outputs too (onnxruntime's own default recipe): CNNs then stay INT8 from end
    to end (QLinearConv, pooling, residual adds), at a fidelity cost transformers rarely afford.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if constant_weights_only:  # onnxruntime's QDQ quantizer ignores its own MatMulConstBOnly option
        exclude = [*exclude, *activation_matmuls(onnx.load(str(fp32_path), load_external_data=False).graph)]
    reader = DatasetReader(calib, batch_size)
    symmetric = scheme is Scheme.s8s8
    root = logging.getLogger()
    root.addFilter(_not_a_1d_axis_warning)
    try:
        quantize_static(
            str(fp32_path), str(out_path), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if scheme is Scheme.u8u8 else QuantType.QInt8,
            reduce_range=scheme is Scheme.u8s8_reduce_range,
            calibrate_method=method.ort(),
            nodes_to_exclude=list(exclude),
            calibration_cache_path=cache_path,
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "CalibStridedMinMax": reader.stride(stride_batches),
                # MatMul/Gemm outputs stay float: onnxruntime then runs DQ->MatMul as
                # MatMulIntegerToFloat (the same int8 GEMM) without re-quantising pre-residual
                # activations, whose outliers are what costs transformers their fidelity
                "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"] if op_types is not None else [],
            },
        )
    finally:
        root.removeFilter(_not_a_1d_axis_warning)
    drop_value_info(out_path)  # the quantiser's shape inference adds them back
    return out_path


def lower_for_onnxruntime(src: Path, dst: Path) -> int:
    """Write ``src`` with each ``DQ(x) -> MatMul <- DQ(W)`` (and the bias ``Add`` after it) as one
    ``com.microsoft.MatMulIntegerToFloat``; returns how many were lowered. For onnxruntime only.

    onnxruntime makes the same INT8 GEMM from the QDQ form, but leaves the bias ``Add`` beside it
    (and ``Add`` + Gelu becomes ``BiasGelu``, about twice the time of ``Gelu``): the integers, scales
    and bias are the ones of ``src``, only added inside the kernel (in another order, which can move
    a later activation's rounding by a step now and then). On MiniLM at batch 32 on an AMX host:
    100 ms a batch against 112, held-back cosine unchanged (0.99912). Lowered only where the
    activation has one scale and the weight one scale per output column, as the op requires."""
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def size(name: str) -> int:
        return int(np.prod(inits[name].dims)) if name in inits else -1

    replaced: dict[int, onnx.NodeProto | list[onnx.NodeProto] | None] = {}  # id(node) -> replacement(s); None: removed
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        a, b = (producer.get(name) for name in node.input)
        if not (a and b and a.op_type == "DequantizeLinear" and b.op_type == "DequantizeLinear"):
            continue
        weight = inits.get(b.input[0])
        axis = next((onnx.helper.get_attribute_value(x) for x in b.attribute if x.name == "axis"), 1)
        columns = weight.dims[-1] if weight is not None and len(weight.dims) == 2 else -1
        if columns < 0 or size(a.input[1]) != 1 or size(b.input[1]) not in (1, columns) or (
                size(b.input[1]) > 1 and axis not in (1, -1)):
            continue
        out, bias = node.output[0], None
        after = readers.get(out, [])
        if out not in outputs and len(after) == 1 and after[0].op_type == "Add":
            other = [name for name in after[0].input if name != out]
            if len(other) == 1 and size(other[0]) == columns and len(inits[other[0]].dims) == 1:
                bias = other[0]
                replaced[id(after[0])] = None
                out = after[0].output[0]
        zero_points = [a.input[2] if len(a.input) > 2 else "", b.input[2] if len(b.input) > 2 else ""]
        replaced[id(node)] = onnx.helper.make_node(
            "MatMulIntegerToFloat", [a.input[0], b.input[0], a.input[1], b.input[1], *zero_points,
                                     *([bias] if bias else [])],
            [out], name=node.name, domain="com.microsoft")
    # Q(Concat(a, b)) == Concat(Q(a), Q(b)) with one scale: the outlier copies (model_build.smooth)
    # are then appended to the activation as bytes, not floats
    for node in graph.node:
        concat = producer.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if (concat is None or concat.op_type != "Concat" or size(node.input[1]) != 1 or concat.output[0] in outputs
                or len(readers.get(concat.output[0], [])) != 1):
            continue
        parts = [onnx.helper.make_node("QuantizeLinear", [x, *node.input[1:]], [f"{x}_quantized_part"],
                                       name=f"{node.name}/{i}") for i, x in enumerate(concat.input)]
        for part in parts:
            part.attribute.extend(node.attribute)
        joined = onnx.helper.make_node("Concat", [p.output[0] for p in parts], list(node.output), name=concat.name)
        joined.attribute.extend(concat.attribute)
        replaced[id(node)] = None
        replaced[id(concat)] = [*parts, joined]
    kept = []
    for n in graph.node:
        new = replaced.get(id(n), n)
        kept += new if isinstance(new, list) else [new] if new is not None else []
    used = {name for n in kept for name in n.input} | outputs
    kept = [n for n in kept if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
    kept = _drop_channel_masks(kept, inits, outputs)
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unread_initializers(graph)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    save(model, dst)
    return sum(1 for n in replaced.values() if isinstance(n, onnx.NodeProto) and n.op_type == "MatMulIntegerToFloat")


def _drop_channel_masks(nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto],
                        outputs: set[str]) -> list[onnx.NodeProto]:
    """Without each ``Mul`` by a 0/1 channel mask (the outlier channels of an activation that is
    not smoothed otherwise, :mod:`model_build.smooth`) whose bytes only reach
    ``MatMulIntegerToFloat`` weight rows that are zero at the masked channels: there a masked
    channel's byte, saturated or not, is multiplied by zero either way. Checked, not assumed."""
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def zero_rows(gemm: onnx.NodeProto, rows: np.ndarray) -> bool:
        w = inits.get(gemm.input[1])
        if w is None or len(w.dims) != 2 or w.dims[0] <= rows.max():
            return False
        zp_name = gemm.input[5] if len(gemm.input) > 5 else ""
        if zp_name and zp_name not in inits:
            return False
        zp = numpy_helper.to_array(inits[zp_name]) if zp_name else 0
        return bool(np.all(numpy_helper.to_array(w)[rows] == zp))

    dropped: set[int] = set()
    for q in nodes:
        mul = producer.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if mul is None or mul.op_type != "Mul" or mul.output[0] in outputs or len(readers[mul.output[0]]) != 1:
            continue
        mask_name = next((i for i in mul.input if i in inits), None)
        mask = numpy_helper.to_array(inits[mask_name]) if mask_name else None
        if mask is None or mask.ndim != 1 or not np.isin(mask, (0.0, 1.0)).all() or mask.all():
            continue
        gemms = []
        for r in readers.get(q.output[0], []):
            axis = next((onnx.helper.get_attribute_value(a) for a in r.attribute if a.name == "axis"), None)
            if r.op_type == "Concat" and r.input[0] == q.output[0] and axis == -1 and r.output[0] not in outputs:
                gemms += [(g, r.output[0]) for g in readers.get(r.output[0], [])]
            else:
                gemms.append((r, q.output[0]))
        if q.output[0] not in outputs and gemms and all(g.op_type == "MatMulIntegerToFloat" and g.input[0] == a
                                                       and zero_rows(g, np.flatnonzero(mask == 0)) for g, a in gemms):
            q.input[0] = next(i for i in mul.input if i != mask_name)
            dropped.add(id(mul))
    return [n for n in nodes if id(n) not in dropped]


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, in ``graph`` and in the subgraphs of its ``If``/``Loop``/``Scan``
    nodes (which may read the outer graph's initializers)."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(sub)
    return names


def _drop_unread_initializers(graph: onnx.GraphProto) -> None:
    """Without the initializers no node reads any more (the masks and weight DQs lowering removed):
    onnxruntime warns about each one every time it loads the model."""
    read = _names_read(graph)
    unread = [i for i in graph.initializer if i.name not in read]
    for init in unread:
        graph.initializer.remove(init)
    names = {i.name for i in unread}
    for inp in [i for i in graph.input if i.name in names]:
        graph.input.remove(inp)


def activation_matmuls(graph: onnx.GraphProto) -> list[str]:
    """MatMul nodes whose second input is computed, not a weight (attention's QK^T and AV)."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] not in constants]


def fp16(fp32_path: Path, out_path: Path, *, block_overflow_ops: bool) -> str:
    """FP16 weights and compute, FP32 inputs and outputs kept (Cast nodes at the edges).

    Returns the converter used: onnxconverter-common, or onnxruntime's maintained fork of the
    same converter when onnxconverter-common's result does not load (it leaves ``Cast(to=FLOAT)``
    nodes whose outputs it retyped to FLOAT16: onnxconverter-common issue #320).
    """
    import onnxruntime as ort
    from onnxconverter_common import float16

    block = list(float16.DEFAULT_OP_BLOCK_LIST)
    if block_overflow_ops:
        block += [op for op in FP16_OVERFLOW_OPS if op not in block]
    with warnings.catch_warnings():  # one warning per clamped tiny weight: noise, not news
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True,
                                                     op_block_list=block)
        converter = "onnxconverter-common"
        try:
            ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            from onnxruntime.transformers import float16 as ort_float16

            converted = ort_float16.convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True,
                                                             op_block_list=block)
            converter = "onnxruntime.transformers.float16"
    onnx.save_model(converted, str(out_path))
    return converter
