"""The build host's INT8 regime: ISA from /proc/cpuinfo, the scheme chosen from it, the numerics a
candidate is judged with (exact Q/DQ for TensorRT), and the speed gate. Every assertion holds on
every CPU: the AVX2 regime is forced with ``INFEROPS_CPU_ISA``, and the schemes it selects compute
the same integers on every ISA (no saturation), so their fidelity does not depend on the host."""

from __future__ import annotations

import collections
import os
import platform
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from flows.common.errors import BadInput
from model_build import evaluate, isa, quantize
from model_build.benchmark import Perf, cpu_speedup
from model_build.build import BuildSpec, Judge, Precision, Target, build_int8, speed_gate
from model_build.evaluate import Metric, Numerics
from model_build.isa import ISA, Scheme
from model_build.prepare import prepare
from tests.unit.model_build_support import normal, outlier_mlp

ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n")
HASWELL = "model name\t: Intel(R) Xeon(R) CPU E5-2686 v4\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
SKYLAKE_SP = "model name\t: Intel(R) Xeon(R) Platinum 8175M\nflags\t\t: avx2 avx512f avx512bw avx512vl\n"
ALDER_LAKE = "model name\t: 12th Gen Intel(R) Core(TM) i7-12700\nflags\t\t: avx2 avx_vnni\n"
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Platinum 8488C\n"
                   "flags\t\t: avx2 avx512bw avx512_vnni amx_bf16 amx_tile amx_int8\n")
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(("text", "machine", "expected"), [
    (ZEN4, "x86_64", ISA.avx512_vnni), (HASWELL, "x86_64", ISA.avx2), (SKYLAKE_SP, "x86_64", ISA.avx512),
    (ALDER_LAKE, "x86_64", ISA.avx_vnni), (SAPPHIRE_RAPIDS, "x86_64", ISA.amx), (GRAVITON, "aarch64", ISA.arm64),
    ("", "x86_64", ISA.other),
])
def test_isa_from_cpuinfo(text, machine, expected):
    flags, model = isa.parse_cpuinfo(text, machine)
    assert isa.isa_from_flags(flags, machine) is expected
    if "model name" in text:
        assert model == text.split("model name\t: ")[1].splitlines()[0]
    if text is ZEN4:
        assert "avx512_vnni" in flags and "fpu" in flags and len(flags) == 10  # the first processor only


def test_scheme_follows_the_isa_and_the_target():
    for saturating in (ISA.avx2, ISA.avx512, ISA.other):
        schemes, why = isa.choose(saturating, tensorrt=False)
        assert schemes == [Scheme.u8s8_reduce_range, Scheme.u8u8] and "saturates" in why
        assert all(s.portable for s in schemes)
    for exact in (ISA.avx512_vnni, ISA.avx_vnni, ISA.amx, ISA.arm64):
        assert isa.choose(exact, tensorrt=False)[0] == [Scheme.u8s8]
        assert isa.choose(exact, tensorrt=True)[0] == [Scheme.s8s8]
    assert not Scheme.u8s8.portable
    with pytest.raises(ValueError, match="needs int8_scheme s8s8"):
        BuildSpec(source="m.onnx", calib="c", eval="e", target=Target.tensorrt, int8_scheme=Scheme.u8u8)


def test_isa_override_and_detection(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(HASWELL)
    monkeypatch.delenv(isa.ENV, raising=False)
    host = isa.detect(cpuinfo)
    if host.machine == "x86_64":
        assert host.isa is ISA.avx2 and host.source == str(cpuinfo) and "E5-2686" in host.model
    monkeypatch.setenv(isa.ENV, "AVX512_VNNI")
    assert isa.detect(cpuinfo).isa is ISA.avx512_vnni and isa.detect(cpuinfo).source == isa.ENV
    monkeypatch.setenv(isa.ENV, "sse2")
    with pytest.raises(BadInput, match="INFEROPS_CPU_ISA='sse2': expected one of amx, avx512_vnni"):
        isa.detect(cpuinfo)
    monkeypatch.delenv(isa.ENV)
    assert isa.detect().isa in ISA  # this machine, whatever it is


def _matmul_model(path):
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (64, 32)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _optimised_ops(path, tmp_path, config):
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node)


def test_tensorrt_numerics_execute_the_qdq_graph_exactly(tmp_path):
    """Simulated TensorRT INT8: no fused integer kernel runs (so no CPU's saturation can enter), and
    the output is the float MatMul of the quantise-dequantised operands, computed here in numpy."""
    fp32 = _matmul_model(tmp_path / "mm.onnx")
    x = (normal(16, 64, seed=1) * 4).astype(np.float32)
    qdq = quantize.int8(fp32, tmp_path / "s8s8.onnx", {"x": x}, scheme=Scheme.s8s8, batch_size=16)
    integer_kernels = {"MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger"}
    assert integer_kernels & set(_optimised_ops(qdq, tmp_path, {}))  # the host's kernels: fused
    simulated = _optimised_ops(qdq, tmp_path, evaluate.EXACT_QDQ)
    assert simulated["MatMul"] == 1 and not integer_kernels & set(simulated)

    model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_x = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    sx, zx = inits[q_x.input[1]], inits[q_x.input[2]]
    assert zx.dtype == np.int8 and zx == 0  # symmetric: TensorRT has no zero points
    dq_w = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                and inits[n.input[0]].ndim == 2)
    w = inits[dq_w.input[0]].astype(np.float32) * inits[dq_w.input[1]][None, :]  # per output channel
    x_dq = np.clip(np.round(x / sx), -128, 127).astype(np.float32) * sx  # np.round: half to even, as ONNX
    expected = x_dq @ w
    got = evaluate.session(qdq, provider_list=["CPUExecutionProvider"], config=evaluate.EXACT_QDQ).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    ref = [x @ numpy_helper.to_array(onnx.load(str(fp32)).graph.initializer[0])]
    judge = Judge(ref, {"x": x}, Metric.fidelity, 0.99, None, numerics=Numerics.simulated_tensorrt_int8)
    fid, _, ok, _ = judge.report(qdq)
    assert ok and fid.nonfinite == 0
    host = isa.detect()
    sim = judge.describe(host, Precision.int8)
    assert sim["kind"] == "simulated_tensorrt_int8" and sim["session_config"] == {"session.disable_quant_qdq": "1"}
    real = Judge(ref, {"x": x}, Metric.fidelity, 0.99, None).describe(host, Precision.int8)
    assert real["kind"] == "host_kernels" and real["isa"] == host.isa.value and real["cpu"] == host.model


def _perf(b1_ms: float, thr: float) -> Perf:
    return Perf(provider="CPUExecutionProvider", threads=2, latency_ms_p50=b1_ms, latency_ms_p99=b1_ms * 1.2,
                throughput=thr, throughput_by_batch={"8": thr, "32": thr})


def test_speed_gate_never_ships_a_slower_model_silently():
    host = isa.HostCPU(ISA.avx2, "Test CPU", "x86_64", "test")
    spec = BuildSpec(source="m.onnx", calib="c", eval="e")
    fp32 = _perf(10.0, 100.0)
    faster = speed_gate(spec, Precision.int8, fp32, _perf(5.0, 250.0), host)
    assert faster.ok and not faster.warnings and faster.speedup["worst"] == 2.0
    assert faster.speedup["measured_on"] == {"provider": "CPUExecutionProvider", "threads": 2, "cpu": "Test CPU",
                                             "isa": "avx2", "target": "onnxruntime", "on_target": True}
    slower = speed_gate(spec, Precision.int8, fp32, _perf(12.5, 150.0), host)
    assert slower.ok and slower.speedup["worst"] == 0.8
    assert slower.warnings == ["INT8 is slower than FP32 on the target: batch 1 0.80x, largest batch 1.50x with "
                               "onnxruntime CPUExecutionProvider, 2 threads, on Test CPU (avx2)"]
    gated = speed_gate(spec.model_copy(update={"min_speedup": 1.0}), Precision.int8, fp32, _perf(12.5, 150.0), host)
    assert not gated.ok and "INT8 is 0.80x FP32" in gated.reason and "below --min-speedup 1.0" in gated.reason
    trt = spec.model_copy(update={"target": Target.tensorrt})
    unmeasured = speed_gate(trt, Precision.int8, fp32, _perf(5.0, 250.0), host)
    assert unmeasured.ok and unmeasured.speedup["measured_on"]["on_target"] is False
    assert "not measured on the target (tensorrt)" in unmeasured.warnings[0]
    trt_gated = speed_gate(trt.model_copy(update={"min_speedup": 1.0}), Precision.int8, fp32, _perf(5.0, 250.0), host)
    assert not trt_gated.ok and "cannot be measured on this worker" in trt_gated.reason


def test_speed_gate_judges_cpu_time_and_says_when_the_wall_clock_disagrees():
    host = isa.HostCPU(ISA.avx512_vnni, "Test CPU", "x86_64", "test")
    spec = BuildSpec(source="m.onnx", calib="c", eval="e", min_speedup=1.5)
    fp32 = {"1": [10.0, 11.0, 9.0, 10.0, 12.0], "32": [300.0, 310.0, 290.0, 300.0, 330.0]}
    int8 = {"1": [5.0, 5.5, 4.5, 5.0, 6.0], "32": [100.0, 103.0, 97.0, 100.0, 110.0]}
    cpu = cpu_speedup(fp32, int8)
    assert cpu["batch1"] == pytest.approx(2.0) and cpu["batch32"] == pytest.approx(3.0)
    assert cpu["worst"] == cpu["batch1"] and cpu["rounds"] == 5 and cpu["threads"] == 1
    # a busy worker: the wall clock says 0.9x at batch 1, CPU time 2x; the gate holds, with a warning
    busy = speed_gate(spec, Precision.int8, _perf(10.0, 100.0), _perf(11.1, 250.0), host, cpu)
    assert busy.ok and busy.speedup["gated_on"] == "cpu_time" and busy.speedup["cpu_time"] is cpu
    assert busy.speedup["worst"] == pytest.approx(10 / 11.1)
    assert len(busy.warnings) == 1 and "faster than FP32 on CPU time but not on the wall clock" in busy.warnings[0]
    assert "CPU time batch 1 2.00x, batch 32 3.00x (1 thread); wall clock batch 1 0.90x" in busy.warnings[0]
    # CPU time under the gate fails it, whatever the wall clock said
    slow = cpu_speedup(fp32, {b: [v * 0.8 for v in ms] for b, ms in fp32.items()})
    fails = speed_gate(spec, Precision.int8, _perf(10.0, 100.0), _perf(4.0, 300.0), host, slow)
    assert not fails.ok and fails.reason.startswith("INT8 is 1.25x FP32 (CPU time batch 1 1.25x, batch 32 1.25x")
    assert "below --min-speedup 1.5" in fails.reason and not fails.warnings
    slower = speed_gate(spec.model_copy(update={"min_speedup": None}), Precision.int8, _perf(10.0, 100.0),
                        _perf(4.0, 300.0), host, cpu_speedup(int8, fp32))
    assert slower.ok and "INT8 is slower than FP32 on the target: CPU time batch 1 0.50x" in slower.warnings[0]
    with pytest.raises(ValueError, match="no batch size timed for both"):
        cpu_speedup({"16": [1.0]}, {"32": [1.0]})


def test_avx2_regime_searches_both_exact_schemes(tmp_path, monkeypatch):
    monkeypatch.setenv(isa.ENV, "avx2")
    prepared = prepare(outlier_mlp(tmp_path / "outlier.onnx"), tmp_path / "work")
    calib = {"x": normal(64, 32, seed=1)}
    data = {"x": normal(32, 32, seed=2)}
    ref = evaluate.run(evaluate.session(prepared.path), data)
    spec = BuildSpec(source="outlier.onnx", calib="-", eval="-", max_trials=4, tolerance=0.995)
    result = build_int8(prepared, tmp_path, Judge(ref, data, Metric.fidelity, 0.995, None), calib, spec)
    assert result.ok and result.fidelity.cosine >= 0.995 and result.fidelity.nonfinite == 0
    assert result.scheme in (Scheme.u8s8_reduce_range, Scheme.u8u8) and result.scheme.portable
    assert {t["scheme"] for t in result.trials} == {"u8s8_reduce_range", "u8u8"}
    assert "avx2 has no VNNI" in result.scheme_reason
    assert any(n.startswith("fastest within tolerance here, over ") or " missed: " in n for n in result.notes)
    weights = [i for i in onnx.load(str(result.path)).graph.initializer if i.name.endswith("_quantized")]
    q = np.concatenate([numpy_helper.to_array(w).ravel().astype(np.int32) for w in weights])
    if result.scheme is Scheme.u8s8_reduce_range:
        # onnxruntime's reduced int8 range is [-64, 64]: 2 x 255 x 64 = 32640 fits VPMADDUBSW's 16 bits
        assert q.min() >= -64 and q.max() <= 64 and 2 * 255 * max(-q.min(), q.max()) <= 32767
    else:
        assert all(w.data_type == TensorProto.UINT8 for w in weights)


QEMU = shutil.which("qemu-x86_64")
_RUN_ALL = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])["x"]
out = {p: ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0] for p in sys.argv[3:]}
np.savez(sys.argv[2], **{str(i): out[p] for i, p in enumerate(sys.argv[3:])})
"""


@pytest.mark.skipif(platform.machine() != "x86_64" or QEMU is None,
                    reason="needs x86-64 and qemu-user (make setup installs it)")
def test_on_an_avx2_cpu_u8s8_saturates_and_our_avx2_schemes_are_exact(tmp_path):
    """onnxruntime's own kernels on an emulated AVX2 CPU without VNNI or AVX-512 (qemu-x86_64 -cpu
    Haswell), whatever this host is: full-range u8s8 saturates, as issue 17 saw on AVX2 hosts;
    the two schemes chosen for such CPUs compute exactly what the Q/DQ graph says."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(np.abs(rng.normal(1.0, 0.05, (64, 8))).astype(np.float32), "w")  # -> int8 ~127
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    fp32 = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(fp32))
    calib = {"x": rng.random((32, 64), dtype=np.float32)}
    x = np.full((4, 64), 0.999, np.float32)  # activations that quantise to ~255
    models = {s: quantize.int8(fp32, tmp_path / f"{s.value}.onnx", calib, scheme=s, batch_size=16)
              for s in (Scheme.u8s8, Scheme.u8s8_reduce_range, Scheme.u8u8)}
    exact = {s: evaluate.session(p, provider_list=["CPUExecutionProvider"], config=evaluate.EXACT_QDQ).run(
        None, {"x": x})[0] for s, p in models.items()}
    np.savez(tmp_path / "x.npz", x=x)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    run = subprocess.run([QEMU, "-cpu", "Haswell", os.path.realpath(sys.executable), "-c", _RUN_ALL,
                          str(tmp_path / "x.npz"), str(tmp_path / "avx2.npz"), *map(str, models.values())],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    avx2 = np.load(tmp_path / "avx2.npz")
    got = {s: avx2[str(i)] for i, s in enumerate(models)}
    assert np.abs(got[Scheme.u8s8] - exact[Scheme.u8s8]).max() > 0.1 * np.abs(exact[Scheme.u8s8]).max()
    for scheme in (Scheme.u8s8_reduce_range, Scheme.u8u8):
        np.testing.assert_allclose(got[scheme], exact[scheme], rtol=1e-5, err_msg=scheme.value)
