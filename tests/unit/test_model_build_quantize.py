"""INT8 QDQ (per-channel weights, calibration methods, symmetric activations), FP16 with FP32 I/O
and overflow blocking, and the accuracy-aware search excluding the sensitive node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from model_build import evaluate, quantize, smooth
from model_build.build import BuildSpec, Judge, Precision, build_fp16, build_int8
from model_build.calibrate import CalibMethod, load_dataset
from model_build.evaluate import Metric
from model_build.isa import Scheme
from model_build.prepare import prepare
from tests.unit.model_build_support import (
    attention_block,
    conv_detector,
    normal,
    npz,
    outlier_mlp,
    overflow_model,
)

# The search's own tests pin u8u8, exact on every CPU: left to the host, an AVX2-only build host
# searches two schemes (more trials) and a VNNI one u8s8, so trial counts would depend on the ISA
PORTABLE = Scheme.u8u8


def _nodes(path, op):
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == op]


def _searched(result):
    """The trials of the searched recipe (the whole-graph recipe is one more trial beside them)."""
    return [t for t in result.trials if t["recipe"] == "compute_ops"]


def _judge(prepared, data, metric=Metric.fidelity, tolerance=0.999, labels=None):
    ref = evaluate.run(evaluate.session(prepared.path), data)
    return Judge(ref, data, metric, tolerance, labels)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    prepared = prepare(conv_detector(tmp / "det.onnx"), tmp / "work")
    calib = {"image": np.abs(normal(32, 3, 16, 16, seed=1))}
    data = {"image": np.abs(normal(16, 3, 24, 24, seed=2))}  # another H/W than calibration
    return tmp, prepared, calib, data


@pytest.mark.parametrize("method", list(CalibMethod))
def test_int8_qdq_per_channel_for_each_calibration_method(detector, method):
    tmp, prepared, calib, data = detector
    out = quantize.int8(prepared.path, tmp / f"int8_{method.value}.onnx", calib, method=method)
    dq_weights = [n for n in _nodes(out, "DequantizeLinear") if n.input[0].endswith(".w_quantized")]
    assert len(dq_weights) == 4  # every Conv weight
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    per_channel = [n for n in dq_weights if len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert len(per_channel) == 4
    fid = evaluate.fidelity(evaluate.run(evaluate.session(prepared.path), data),
                            evaluate.run(evaluate.session(out), data))
    assert fid.nonfinite == 0 and fid.cosine > 0.99


def test_symmetric_activations_for_tensorrt(detector):
    tmp, prepared, calib, _ = detector
    out = quantize.int8(prepared.path, tmp / "int8_sym.onnx", calib, scheme=Scheme.s8s8)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    zero_points = [inits[n.input[2]] for n in _nodes(out, "QuantizeLinear")]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)


def test_fp16_keeps_fp32_io(detector):
    tmp, prepared, _, data = detector
    quantize.fp16(prepared.path, tmp / "fp16.onnx", block_overflow_ops=False)
    model = onnx.load(str(tmp / "fp16.onnx"))
    io = [*model.graph.input, *model.graph.output]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(inits) >= 8  # weights and biases are FP16
    out = evaluate.run(evaluate.session(tmp / "fp16.onnx"), data)
    assert out[0].dtype == np.float32


def test_fp16_overflow_is_rejected_then_blocked(tmp_path):
    prepared = prepare(overflow_model(tmp_path / "ovf.onnx"), tmp_path / "work")
    data = {"x": normal(8, 64) * 3e5}  # raw features beyond FP16's range
    result = build_fp16(prepared, tmp_path, _judge(prepared, data))
    first, second = result.trials
    assert first["nonfinite"] > 0 and not first["ok"] and "NaN/Inf" in first["reason"]
    assert not second["nonfinite"] and second["ok"] and second["block_overflow_ops"]
    assert result.ok and result.fidelity.cosine > 0.999


def test_search_keeps_the_sensitive_matmul_in_float(tmp_path):
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    data = {"x": normal(32, 32, seed=2)}
    spec = BuildSpec(source="outlier.onnx", calib="-", eval="-", max_trials=4, tolerance=0.995, smooth_alpha=0, int8_scheme=PORTABLE)
    result = build_int8(prepared, tmp_path, _judge(prepared, data, tolerance=0.995), calib, spec)
    trials = _searched(result)
    assert not trials[0]["ok"] and trials[0]["score"] < 0.995
    assert result.ok and result.fidelity.cosine >= 0.995 and len(trials) == 2
    assert [t["ok"] for t in result.trials if t["recipe"] == "whole_graph"] == [False]  # the outlier wipes it out
    assert "mm2" in result.excluded_nodes and "mm1" not in result.excluded_nodes
    assert any(n.input[0] == "mid" for n in _nodes(tmp_path / "int8_trial1.onnx", "MatMul"))  # mm2 reads float


def test_smoothquant_fixes_the_outlier_channel_without_exclusions(tmp_path):
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    data = {"x": normal(32, 32, seed=2)}
    spec = BuildSpec(source="outlier.onnx", calib="-", eval="-", max_trials=4, tolerance=0.995, int8_scheme=PORTABLE)
    result = build_int8(prepared, tmp_path, _judge(prepared, data, tolerance=0.995), calib, spec)
    plain, smoothed = _searched(result)
    assert not plain["ok"] and not plain["smoothed"] and smoothed["smoothed"] and smoothed["ok"]
    assert result.ok and result.excluded_nodes == [] and result.fidelity.cosine >= 0.995
    # mid's outlier channel (1000x) is split into copies; neither x's nor mid's Gaussian inliers gain
    # enough from smoothing to be worth a Mul
    assert result.smoothing["tensors"] == 1 and result.smoothing["outlier_channels"] == 1
    assert result.smoothing["unsmoothed"] == 2
    assert result.smoothing["fp32_max_rel_diff"] < 1e-5
    mm2 = next(n for n in _nodes(tmp_path / "int8_smoothed.onnx", "MatMul") if n.name == "mm2")
    assert mm2.input[0] != "mid"  # mm2 reads the quantised, smoothed activation


def test_smoothing_is_exact_in_fp32(tmp_path):
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    done = smooth.smooth(prepared.path, tmp_path / "smoothed.onnx", calib, alpha=0.8, min_gain_db=0.0)
    model = onnx.load(str(done.path))
    muls = [n for n in model.graph.node if n.op_type == "Mul" and n.name.endswith("/SmoothQuant")]
    assert {n.input[0] for n in muls} == {"x", "mid"} and done.matmuls == 2
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["mid_smooth_scale"][3] < 0.05  # the outlier channel is divided down
    data = {"x": normal(16, 32, seed=3)}
    a = evaluate.run(evaluate.session(prepared.path), data)[0]
    b = evaluate.run(evaluate.session(done.path), data)[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        smooth.smooth(prepared.path, tmp_path / "x.onnx", calib, alpha=1.5)


@pytest.mark.parametrize("shape", ["heads", "context_also_output", "heads_mix_positions"])
def test_attention_context_is_smoothed_inside_the_value_projection(tmp_path, shape):
    """Attention's context is divided by its scales inside V's weight columns and bias (P @ V is
    linear in V), with no Mul: unless the context has another reader, or the graph only looks like
    attention (heads that are positions: channels mix), where a Mul does it. Exact in FP32 either way."""
    src = attention_block(tmp_path / "attn.onnx", context_also_output=shape == "context_also_output",
                          heads_mix_positions=shape == "heads_mix_positions")
    prepared = prepare(src, tmp_path / "work")
    calib = {"x": normal(16, 9, 64, seed=1)}
    done = smooth.smooth(prepared.path, tmp_path / "smoothed.onnx", calib, min_gain_db=0.0)
    model = onnx.load(str(done.path))
    muls = {n.input[0] for n in model.graph.node if n.name.endswith("/SmoothQuant")}
    assert "context" in done.tensors and done.matmuls == 4
    if shape == "heads":
        assert done.folded == 1 and muls == {"x"}
        before = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(prepared.path)).graph.initializer}
        after = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        ratio = after["bv"] / before["bv"]  # V's columns and bias carry 1/s of the context
        assert ratio.std() > 0.05 and np.allclose(after["wo"] / before["wo"], (1 / ratio)[:, None], rtol=1e-4)
    else:
        assert done.folded == 0 and muls == {"x", "context"}
    data = {"x": normal(8, 11, 64, seed=3)}  # another sequence length than calibration
    want = evaluate.run(evaluate.session(prepared.path), data)
    got = evaluate.run(evaluate.session(done.path), data)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert done.max_rel_diff < 1e-5


def test_smoothing_gain_tells_spread_channels_from_flat_ones():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.1, (64, 32))
    flat = rng.normal(size=(512, 64))
    spread = flat * np.geomspace(0.05, 6.0, 64)  # channel ranges 120x apart
    keep = np.ones(64, dtype=bool)
    for x, low, high in ((flat, -1.0, 2.0), (spread, smooth.MIN_GAIN_DB, np.inf)):
        s = smooth.scales(np.abs(x).max(axis=0), np.abs(w).max(axis=1), 0.6)
        assert low < smooth.gain_db(x, w, s, keep) < high
    assert smooth.gain_db(np.zeros((8, 64)), w, np.ones(64), keep) == 0.0  # silence: nothing to gain


def test_split_plan_is_exact_in_float_and_fits_the_inliers_scale():
    maxima, room, top = np.array([12.0, 9.0, 300.0]), np.array([1.0, 3.0, 1e6]), 2.0
    plan = smooth.split_plan(maxima, room, top)
    assert plan.index.tolist() == sorted(plan.index.tolist()) and set(plan.index.tolist()) == {0, 1, 2}
    for k in range(3):
        mine = plan.index == k
        assert np.isclose(np.sum(plan.share[mine] * plan.gain[mine]), 1.0, rtol=1e-6)  # the copies add up
        assert np.isclose(np.sum(plan.offset[mine] * plan.gain[mine]), 0.0, atol=1e-6)  # the dither cancels
        assert np.all(maxima[k] * plan.share[mine] <= 0.5 * top * (1 + 1e-6))  # each copy within the inliers' range
        assert len(set(np.round(plan.gain[mine], 6))) == mine.sum()  # no two copies round alike
    assert np.bincount(plan.index).tolist() == [24, 6, 6]  # room lets fewer copies do; it is capped at MAX_SCALE
    assert np.all(plan.gain <= smooth.MAX_SCALE)
    assert len(smooth.split_plan(np.array([40.0]), np.array([1.0]), 2.0).index) == 32  # at most 32 copies


def test_outlier_channel_is_split_into_int8_copies(tmp_path):
    """A channel 30x the rest (64 channels): smoothing splits it into copies appended to the
    activation; the FP32 model is unchanged, and the INT8 model keeps every MatMul INT8 (no float
    side path) within tolerance, with no intermediate shape annotations left behind."""
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx", outlier=30.0), tmp_path / "work")
    assert not onnx.load(str(prepared.path)).graph.value_info
    calib = {"x": normal(64, 32, seed=1)}
    done = smooth.smooth(prepared.path, tmp_path / "smoothed.onnx", calib)
    assert done.outlier_channels == 1 and done.outlier_copies >= 2
    model = onnx.load(str(done.path))
    ops = {n.name: n for n in model.graph.node}
    assert {"mid/Outliers", "mid/OutliersShare", "mid/OutliersDither", "mid/OutliersConcat"} <= set(ops)
    assert ops["mm2"].input[0] == "mid" + smooth.SUFFIX == ops["mid/OutliersConcat"].output[0]
    w2 = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}["w2"]
    assert w2.shape == (64 + done.outlier_copies, 16) and not w2[3].any()  # the channel's own row is empty
    data = {"x": normal(16, 32, seed=3)}
    a = evaluate.run(evaluate.session(prepared.path), data)[0]
    np.testing.assert_allclose(evaluate.run(evaluate.session(done.path), data)[0], a, rtol=1e-4, atol=1e-4)

    out = quantize.int8(done.path, tmp_path / "int8.onnx", calib)
    assert not onnx.load(str(out)).graph.value_info
    assert all(any(i.endswith("_DequantizeLinear_Output") for i in n.input) for n in _nodes(out, "MatMul"))
    fid = evaluate.fidelity([a], evaluate.run(evaluate.session(out), data))
    assert fid.nonfinite == 0 and fid.cosine >= 0.995

    # lowered for onnxruntime, the copies are appended as bytes: each part quantised, then joined
    assert quantize.lower_for_onnxruntime(out, tmp_path / "low.onnx") == 2
    low = onnx.load(str(tmp_path / "low.onnx"))
    producer = {o: n for n in low.graph.node for o in n.output}
    joined = next(n for n in low.graph.node if n.name == "mid/OutliersConcat")
    assert [producer[i].op_type for i in joined.input] == ["QuantizeLinear", "QuantizeLinear"]
    assert next(n for n in low.graph.node if n.name == "mm2").input[0] == joined.output[0]
    same = evaluate.fidelity(evaluate.run(evaluate.session(out), data), evaluate.run(evaluate.session(tmp_path / "low.onnx"), data))
    assert same.cosine > 0.9999
    # mid's inliers were not worth smoothing: its Mul only zeroes the outlier channel, whose weight row
    # is zero in the main block, so the lowered model quantises mid itself (the channel saturates x 0)
    assert done.unsmoothed == 2 and producer[joined.input[0]].input[0] == "mid"
    assert not [n for n in low.graph.node if n.op_type == "Mul" and n.input[0] == "mid"]
    # and nothing left behind that onnxruntime would warn about on every load (the mask, the weight DQs)
    read = {name for n in low.graph.node for name in n.input}
    assert [i.name for i in low.graph.initializer if i.name not in read] == []
    qdq = onnx.load(str(out))
    w2q = next(i for i in qdq.graph.initializer if i.name.startswith("w2") and i.data_type == onnx.TensorProto.INT8)
    row = onnx.numpy_helper.to_array(w2q).copy()
    row[3] = 1  # a masked channel that would count: the Mul stays
    w2q.CopyFrom(onnx.numpy_helper.from_array(row, w2q.name))
    onnx.save(qdq, str(tmp_path / "tampered.onnx"))
    quantize.lower_for_onnxruntime(tmp_path / "tampered.onnx", tmp_path / "tampered_low.onnx")
    kept = onnx.load(str(tmp_path / "tampered_low.onnx")).graph.node
    assert [n.name for n in kept if n.op_type == "Mul" and n.input[0] == "mid"] == ["mid/SmoothQuant"]


def test_outlier_channels_are_gathered_once_each_and_copied_by_broadcasting(tmp_path):
    """Two outlier channels that need different numbers of copies: each is gathered once (one
    index) and its copies made by the broadcast Mul and Add, in the weight rows' order; the FP32
    model is unchanged and the lowered INT8 model appends each channel's copies as bytes."""
    prepared = prepare(outlier_mlp(tmp_path / "two.onnx", outlier=12.0, others={10: 24.0}), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    done = smooth.smooth(prepared.path, tmp_path / "smoothed.onnx", calib)
    assert done.outlier_channels == 2
    model = onnx.load(str(done.path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert sorted(inits[n.input[1]].tolist() for n in gathers) == [[3], [10]]
    counts = [len(inits[f"mid_outlier_share{tag}"]) for tag in ("", "_1")]
    assert sum(counts) == done.outlier_copies and counts[0] != counts[1]
    w2 = inits["w2"]
    assert w2.shape == (64 + done.outlier_copies, 16) and not w2[3].any() and not w2[10].any()
    data = {"x": normal(16, 32, seed=3)}
    a = evaluate.run(evaluate.session(prepared.path), data)[0]
    np.testing.assert_allclose(evaluate.run(evaluate.session(done.path), data)[0], a, rtol=1e-4, atol=1e-4)
    out = quantize.int8(done.path, tmp_path / "int8.onnx", calib, scheme=Scheme.u8u8)  # exact on every CPU, AVX2 too
    quantize.lower_for_onnxruntime(out, tmp_path / "low.onnx")
    low = onnx.load(str(tmp_path / "low.onnx"))
    joined = next(n for n in low.graph.node if n.name == "mid/OutliersConcat")
    producer = {o: n for n in low.graph.node for o in n.output}
    assert [producer[i].op_type for i in joined.input] == ["QuantizeLinear"] * 3
    fid = evaluate.fidelity([a], evaluate.run(evaluate.session(tmp_path / "low.onnx"), data))
    assert fid.nonfinite == 0 and fid.cosine >= 0.995


@pytest.mark.parametrize("scheme,per_channel", [(Scheme.u8s8, True), (Scheme.u8u8, True), (Scheme.u8s8, False)])
def test_lowering_for_onnxruntime_keeps_the_integers_and_takes_the_bias(tmp_path, scheme, per_channel):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(normal(32, 64, seed=1) * 0.2, "w1"), numpy_helper.from_array(normal(64, seed=2), "b1"),
             numpy_helper.from_array(normal(64, 16, seed=3) * 0.2, "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Add", ["b1", "h"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    qdq = quantize.int8(path, tmp_path / "qdq.onnx", {"x": normal(64, 32, seed=4)}, scheme=scheme, per_channel=per_channel)
    assert quantize.lower_for_onnxruntime(qdq, tmp_path / "low.onnx") == 2
    low = onnx.load(str(tmp_path / "low.onnx"))
    fused = {n.name: n for n in low.graph.node if n.op_type == "MatMulIntegerToFloat"}
    assert set(fused) == {"mm1", "mm2"} and fused["mm1"].input[6] == "b1" and len(fused["mm2"].input) == 6
    assert not [n for n in low.graph.node if n.op_type in ("MatMul", "Add", "DequantizeLinear")]
    data = {"x": normal(16, 32, seed=5)}
    # the same integer GEMMs; the bias is added in another order, which can move the next
    # activation's rounding by one step now and then
    fid = evaluate.fidelity(evaluate.run(evaluate.session(qdq), data),
                            evaluate.run(evaluate.session(tmp_path / "low.onnx"), data))
    assert fid.nonfinite == 0 and fid.cosine > 0.9999


def test_search_gives_up_within_its_trial_budget(tmp_path):
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    data = {"x": normal(32, 32, seed=2)}
    spec = BuildSpec(source="outlier.onnx", calib="-", eval="-", max_trials=2, tolerance=1.0, smooth_alpha=0, int8_scheme=PORTABLE)
    result = build_int8(prepared, tmp_path, _judge(prepared, data, tolerance=1.0), calib, spec)
    assert not result.ok and len(_searched(result)) == 2
    assert "out of tolerance after 2 trials" in result.reason


def test_accuracy_metric_and_labels(tmp_path):
    prepared = prepare(conv_detector(tmp_path / "det.onnx"), tmp_path / "work")
    data = load_dataset(npz(tmp_path / "e.npz", image=np.abs(normal(20, 3, 8, 8))), prepared.inputs)
    ref = evaluate.run(evaluate.session(prepared.path), data)
    labels = ref[0].reshape(20, -1).argmax(axis=1)  # FP32 is right by construction
    judge = Judge(ref, data, Metric.accuracy, 0.01, labels)
    fid, acc, ok, _ = judge.report(prepared.path)
    assert acc.fp32 == 1.0 and acc.candidate == 1.0 and acc.loss == 0.0 and ok
    with pytest.raises(ValueError, match="needs labels"):
        BuildSpec(source="m.onnx", calib="c", eval="e", metric=Metric.accuracy, precision=Precision.fp16)


def test_attention_style_matmuls_stay_float_on_cpu(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(normal(8, 8, seed=4), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["qt"], name="t"),
             helper.make_node("MatMul", ["q", "qt"], ["y"], name="scores")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])], [w])
    path = tmp_path / "attn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    assert quantize.activation_matmuls(onnx.load(str(path)).graph) == ["scores"]
    calib = {"x": normal(8, 8, seed=5)}
    cpu = quantize.int8(path, tmp_path / "cpu.onnx", calib, batch_size=8, constant_weights_only=True)
    trt = quantize.int8(path, tmp_path / "trt.onnx", calib, batch_size=8)
    reads_dq = {n.name: any(i.endswith("_DequantizeLinear_Output") for i in n.input)
                for n in _nodes(cpu, "MatMul")}
    assert reads_dq == {"proj": True, "scores": False}
    assert all(any(i.endswith("_DequantizeLinear_Output") for i in n.input) for n in _nodes(trt, "MatMul"))


def test_a_smoothing_failure_leaves_the_search_to_exclusions(tmp_path, monkeypatch, caplog):
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    data = {"x": normal(32, 32, seed=2)}

    def broken(*args, **kwargs):
        raise RuntimeError("SmoothQuant changed the FP32 model's outputs (max relative deviation 0.2)")

    monkeypatch.setattr(smooth, "smooth", broken)
    spec = BuildSpec(source="outlier.onnx", calib="-", eval="-", max_trials=4, tolerance=0.995, int8_scheme=PORTABLE)
    result = build_int8(prepared, tmp_path, _judge(prepared, data, tolerance=0.995), calib, spec)
    assert result.ok and result.smoothing is None and result.excluded_nodes == ["mm2"]
    assert not any(t["smoothed"] for t in result.trials)
    assert "SmoothQuant skipped" in caplog.text


def test_whole_graph_recipe_competes_on_measured_speed(detector, tmp_path):
    """onnxruntime's own recipe (every op quantised, outputs too) is one more candidate, and so is that
    recipe with the Convs that read a model input kept in float (INT8 can cost more than it saves on a
    few input channels): when several meet the tolerance, the fastest on this worker is kept and the
    others are named."""
    _, prepared, calib, data = detector
    spec = BuildSpec(source="det.onnx", calib="-", eval="-", tolerance=0.99, int8_scheme=PORTABLE)
    result = build_int8(prepared, tmp_path, _judge(prepared, data, tolerance=0.99), calib, spec)
    by_recipe = {t["recipe"]: t for t in result.trials}
    assert set(by_recipe) == {"compute_ops", "whole_graph", "whole_graph_input_float"}
    assert all(t["ok"] for t in by_recipe.values())
    assert result.ok and result.recipe.value in by_recipe and result.fidelity.cosine >= 0.99
    assert any(n.startswith("fastest within tolerance here, over ") for n in result.notes)
    assert by_recipe["whole_graph_input_float"]["excluded_nodes"] == 1
    if result.recipe.value == "whole_graph_input_float":
        assert result.excluded_nodes == ["backbone.conv1"]
    # the Relus fold into the Conv outputs' quantisation: no float op left between the INT8 convs
    assert len(_nodes(tmp_path / "int8_whole_graph.onnx", "Relu")) == 0
    assert len(_nodes(tmp_path / "int8_trial0.onnx", "Relu")) == 2
    # the image goes straight into the first Conv, in float, with its float weights; every other Conv is INT8
    for name, float_convs in (("int8_whole_graph.onnx", 0), ("int8_whole_graph_input_float.onnx", 1)):
        model = onnx.load(str(tmp_path / name))
        weights = {i.name for i in model.graph.initializer}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert len([n for n in convs if n.input[0] == "image" and n.input[1] in weights]) == float_convs
        assert len([n for n in convs if n.input[1] not in weights]) == 4 - float_convs  # DequantizeLinear'd


def test_lowering_keeps_initializers_that_only_a_subgraph_reads(tmp_path):
    """An initializer read only inside an ``If`` branch is still read: lowering prunes only what
    nothing reads, and the model still runs."""
    from onnx import TensorProto, helper, numpy_helper

    branch = lambda name, op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["x", "k"], [f"{name}_y"])], name, [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["N", 4])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "Add"), else_branch=branch("else", "Sub"))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.full(4, 2, np.float32), "k"),
         numpy_helper.from_array(np.ones(3, np.float32), "dead")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "if.onnx"))
    assert quantize.lower_for_onnxruntime(tmp_path / "if.onnx", tmp_path / "low.onnx") == 0
    low = onnx.load(str(tmp_path / "low.onnx"))
    assert sorted(i.name for i in low.graph.initializer) == ["k", "zero"]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(evaluate.run(evaluate.session(tmp_path / "low.onnx"), {"x": x})[0], x + 2)


def test_cpu_time_is_taken_round_by_round_at_each_models_own_batch(tmp_path):
    """``benchmark.cpu_ms`` (how the build picks between candidates that both meet the tolerance):
    one figure per round for each model and batch size, a model with a fixed batch timed at that
    batch only."""
    from onnx import TensorProto, helper, numpy_helper

    from model_build.benchmark import cpu_ms

    def mlp(path, batch):
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 32])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])],
                                  [numpy_helper.from_array(normal(32, 8, seed=1), "w")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        return path

    samples = cpu_ms({"dynamic": mlp(tmp_path / "d.onnx", "N"), "fixed": mlp(tmp_path / "f.onnx", 4)},
                     {"x": normal(8, 32, seed=2)}, rounds=3, min_s=0.01)
    assert {k: sorted(v) for k, v in samples.items()} == {"dynamic": ["1", "32"], "fixed": ["4"]}
    assert all(len(v) == 3 and min(v) > 0 for per in samples.values() for v in per.values())


def test_whole_graph_int8_does_not_warn_on_each_1d_weight(tmp_path, caplog):
    """onnxruntime's quantiser warns on the root logger for every 1-D weight (a LayerNormalization's
    scale) that per-channel axis 1 is out of range, then quantises it per tensor: that warning is
    kept out of users' logs, the weight is still quantised, and other root warnings still pass."""
    import logging

    prepared = prepare(overflow_model(tmp_path / "ln.onnx"), tmp_path / "work")
    with caplog.at_level(logging.WARNING):
        out = quantize.int8(prepared.path, tmp_path / "int8.onnx", {"x": normal(32, 64, seed=4)}, op_types=None,
                            scheme=PORTABLE)
        logging.warning("after the build")
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if r.getMessage() == "after the build"] == ["after the build"]
    graph = onnx.load(str(out)).graph
    norm = next(n for n in graph.node if n.op_type == "LayerNormalization")
    producer = {o: n for n in graph.node for o in n.output}
    dq = producer[norm.input[1]]
    assert dq.op_type == "DequantizeLinear"  # the scale is quantised, per tensor: one scale, no axis
    scale = next(i for i in graph.initializer if i.name == dq.input[1])
    assert list(scale.dims) == []
