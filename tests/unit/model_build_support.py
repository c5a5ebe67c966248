"""Small ONNX models of other shapes than the examples, built with onnx.helper (seeded weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def _w(name: str, *shape: int, scale: float | None = None) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    arr = RNG.normal(0, scale or (2.0 / fan_in) ** 0.5, size=shape).astype(np.float32)
    return numpy_helper.from_array(arr, name)


def _save(graph: onnx.GraphProto, path: Path, opset: int) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def conv_detector(path: Path, opset: int = 17) -> Path:
    """A tiny single-stage detector: backbone convs, then box and score heads; dynamic N, H, W."""
    nodes = [
        helper.make_node("Conv", ["image", "c1.w", "c1.b"], ["c1"], pads=[1, 1, 1, 1], name="backbone.conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="backbone.relu1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2],
                         name="backbone.conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="backbone.relu2"),
        helper.make_node("Conv", ["r2", "box.w", "box.b"], ["boxes"], name="head.box"),
        helper.make_node("Conv", ["r2", "cls.w", "cls.b"], ["cls"], name="head.cls"),
        helper.make_node("Sigmoid", ["cls"], ["scores"], name="head.sigmoid"),
    ]
    inits = [_w("c1.w", 16, 3, 3, 3), _w("c1.b", 16, scale=0.1), _w("c2.w", 32, 16, 3, 3),
             _w("c2.b", 32, scale=0.1), _w("box.w", 4, 32, 1, 1), _w("box.b", 4, scale=0.1),
             _w("cls.w", 3, 32, 1, 1), _w("cls.b", 3, scale=0.1)]
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4, "h", "w"]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3, "h", "w"])],
        inits)
    return _save(graph, path, opset)


def old_opset_mlp(path: Path, opset: int = 9) -> Path:
    """An MLP classifier as old exporters wrote it: opset 9, weights also listed as graph inputs."""
    inits = [_w("fc1.w", 32, 64), _w("fc1.b", 32, scale=0.1), _w("fc2.w", 10, 32), _w("fc2.b", 10, scale=0.1)]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.w", "fc1.b"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "fc2.w", "fc2.b"], ["logits"], transB=1, name="fc2"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])]
    inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits]
    graph = helper.make_graph(nodes, "old_mlp", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return _save(graph, path, opset)


def outlier_mlp(path: Path, outlier: float = 1000.0, seed: int = 1, others: dict[int, float] | None = None) -> Path:
    """Two MatMuls; the activation between them has one channel scaled by ``outlier`` (and the
    channels in ``others`` by theirs), so one per-tensor INT8 scale for ``mid`` wipes out every other
    channel: the second MatMul is the node that must stay in float (the first one stays INT8 within a
    0.995 cosine)."""
    rng = np.random.default_rng(seed)
    scale = np.ones(64, dtype=np.float32)
    scale[3] = outlier
    for channel, factor in (others or {}).items():
        scale[channel] = factor
    w2 = rng.normal(0, 0.2, (64, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (32, 64)).astype(np.float32), "w1"),
             numpy_helper.from_array(scale, "channel_scale"),
             numpy_helper.from_array(w2, "w2")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Mul", ["h", "channel_scale"], ["mid"], name="outlier"),
        helper.make_node("MatMul", ["mid", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return _save(graph, path, 17)


def attention_block(path: Path, *, heads: int = 4, context_also_output: bool = False,
                    heads_mix_positions: bool = False) -> Path:
    """One self-attention block as exporters write it: Q/K/V projections with biases, heads split by
    Reshape + Transpose [0, 2, 1, 3], Softmax, context = P @ V merged back, then the output
    projection. V's output channels are 1x-6x apart, so the context wants smoothing.
    ``context_also_output``: the context is a graph output too (another reader).
    ``heads_mix_positions``: each head's 16 channels become a position of their own (Reshape to
    [batch, seq * heads, 1, 16]), so attention mixes channels of V across heads: the context's
    channel ``c`` is no longer V's channel ``c`` although the ops are the same."""
    d, rng = 64, np.random.default_rng(3)
    spread = np.linspace(1.0, 6.0, d).astype(np.float32)
    weights = {f"w{p}": rng.normal(0, 0.15, (d, d)).astype(np.float32) for p in "qkvo"}
    weights["wv"] *= spread[None, :]
    inits = [numpy_helper.from_array(w, n) for n, w in weights.items()]
    inits += [numpy_helper.from_array(rng.normal(0, 0.1, d).astype(np.float32), f"b{p}") for p in "qkvo"]
    split = [0, -1, 1, d // heads] if heads_mix_positions else [0, 0, heads, d // heads]
    inits += [numpy_helper.from_array(np.array(split, np.int64), "heads_shape"),
              numpy_helper.from_array(np.array([0, -1, d], np.int64), "merged_shape"),
              numpy_helper.from_array(np.array(1 / np.sqrt(d // heads), np.float32), "scale")]
    nodes = []
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}_mm"], name=f"{p}/MatMul"),
                  helper.make_node("Add", [f"b{p}", f"{p}_mm"], [f"{p}_add"], name=f"{p}/Add"),
                  helper.make_node("Reshape", [f"{p}_add", "heads_shape"], [f"{p}_heads"], name=f"{p}/Reshape"),
                  helper.make_node("Transpose", [f"{p}_heads"], [f"{p}_t"], perm=[0, 2, 3, 1] if p == "k"
                                   else [0, 2, 1, 3], name=f"{p}/Transpose")]
    nodes += [helper.make_node("MatMul", ["q_t", "k_t"], ["scores"], name="attn/scores"),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="attn/scale"),
              helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1, name="attn/softmax"),
              helper.make_node("MatMul", ["probs", "v_t"], ["ctx_heads"], name="attn/context"),
              helper.make_node("Transpose", ["ctx_heads"], ["ctx_t"], perm=[0, 2, 1, 3], name="attn/merge"),
              helper.make_node("Reshape", ["ctx_t", "merged_shape"], ["context"], name="attn/Reshape"),
              helper.make_node("MatMul", ["context", "wo"], ["o_mm"], name="o/MatMul"),
              helper.make_node("Add", ["o_mm", "bo"], ["y"], name="o/Add")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", d])]
    if context_also_output:
        outputs.append(helper.make_tensor_value_info("context", TensorProto.FLOAT, ["N", "S", d]))
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", d])],
                              outputs, inits)
    return _save(graph, path, 17)


def overflow_model(path: Path) -> Path:
    """Fine in FP32, Inf in FP16: raw features far beyond FP16's 65504 go straight into a
    LayerNormalization (the input cast to FP16 overflows unless LayerNorm is kept in FP32)."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.scale", "ln.bias"], ["xn"], axis=-1, name="norm"),
        helper.make_node("MatMul", ["xn", "w"], ["y"], name="proj"),
    ]
    inits = [numpy_helper.from_array(np.ones(64, np.float32), "ln.scale"),
             numpy_helper.from_array(np.zeros(64, np.float32), "ln.bias"),
             numpy_helper.from_array(RNG.normal(0, 0.2, (64, 16)).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    return _save(graph, path, 17)


def npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)
