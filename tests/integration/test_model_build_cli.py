"""The real ``inferops model build`` CLI on the digits example: exit 0 with a complete artifact
folder, exit 3 with a non-deployable manifest (tolerance, or a speed-up that cannot be shown on
the target), exit 2 with one line for bad input (corrupt and mistaken data files included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_build.package import MANIFEST_FIELDS

DIGITS = Path(__file__).resolve().parents[2] / "model_build" / "examples" / "digits"
MODEL, CALIB, EVAL, LABELS = (str(DIGITS / f) for f in ("digits_cnn.onnx", "calib.npz", "eval.npz", "labels.npy"))


@pytest.fixture
def env(tmp_path):
    return {"INFEROPS_S3__MODEL_REGISTRY": f"file://{tmp_path / 'registry'}",
            "INFEROPS_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.slow
def test_int8_accuracy_build_is_deployable(run_cli, tmp_path, env):
    out = tmp_path / "out"
    r = run_cli("model", "build", MODEL, "--calib", CALIB, "--eval", EVAL, "--precision", "int8",
                "--metric", "accuracy", "--labels", LABELS, "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout.strip().splitlines()[-1])
    doc = json.loads((out / "manifest.json").read_text())
    assert set(MANIFEST_FIELDS) <= set(doc) and doc["deployable"] is True and printed["deployable"] is True
    assert doc["artifact"] == "1/model.onnx" and (out / doc["artifact"]).is_file()
    assert doc["precision"] == "int8" and doc["calibration"] == {"method": "minmax", "samples": 256, "smoothing": None}
    host = doc["host"]
    assert host["isa"] in ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "arm64", "other") and host["model"]
    quant = doc["quantization"]
    assert quant["isa"] == host["isa"] and quant["why"]
    exact_u8s8 = host["isa"] in ("amx", "avx512_vnni", "avx_vnni", "arm64")
    assert quant["scheme"] in (("u8s8",) if exact_u8s8 else ("u8s8_reduce_range", "u8u8"))
    assert quant["portable"] is (quant["scheme"] != "u8s8")
    assert quant["graph"] == ("onnxruntime" if quant["lowered_matmuls"] else "qdq")
    numerics = doc["metrics"]["fidelity"]["numerics"]
    assert numerics["kind"] == "host_kernels" and numerics["isa"] == host["isa"]
    acc = doc["metrics"]["accuracy"]
    assert acc["loss"] <= 0.01 and acc["fp32"] > 0.95
    assert doc["metrics"]["fidelity"]["cosine"] > 0.999
    for side in ("fp32", "candidate"):
        assert {"latency_ms_p50", "latency_ms_p99", "throughput"} <= set(doc["metrics"][side])
    speed = doc["metrics"]["speedup"]
    assert speed["throughput"] > 0 and speed["worst"] == min(speed["throughput"], speed["batch1_latency"])
    assert speed["measured_on"]["on_target"] is True and speed["measured_on"]["isa"] == host["isa"]
    cpu = speed["cpu_time"]  # what the gate judges: CPU time on one thread, FP32 and INT8 round by round
    assert speed["gated_on"] == "cpu_time" and cpu["threads"] == 1 and cpu["rounds"] == 5
    assert {"batch1", "batch32"} <= set(cpu) and cpu["worst"] == min(cpu["batch1"], cpu["batch32"]) > 0
    assert all(q25 <= cpu[b] <= q75 for b, (q25, q75) in cpu["quartiles"].items())
    assert printed["warnings"] == doc["warnings"]  # a slower INT8 would be said here, not hidden
    assert (cpu["worst"] < 1) == any("slower than FP32" in w for w in doc["warnings"])
    assert (cpu["worst"] >= 1 > speed["worst"]) == any("not on the wall clock" in w for w in doc["warnings"])
    assert (f"INT8 speed-up on CPU time, one thread (what --min-speedup judges): batch 1 {cpu['batch1']:.2f}x, "
            f"batch 32 {cpu['batch32']:.2f}x") in r.stderr
    assert all(f"warning: {w}\n" in r.stderr for w in doc["warnings"])  # one line each, for log scrapers
    assert doc["tolerance"]["metric"] == "accuracy" and doc["tolerance"]["value"] == 0.01
    assert doc["tools"]["onnxruntime"] and doc["tools"]["onnx"]
    assert "tensorrt is not installed" in doc["tensorrt"]["skipped"] or "GPU" in doc["tensorrt"]["skipped"]
    pbtxt = (out / "config.pbtxt").read_text()
    assert "max_batch_size: 32" in pbtxt and "max_queue_delay_microseconds: 50000" in pbtxt
    assert 'name: "pixels" data_type: TYPE_FP32 dims: [ 1, 8, 8 ]' in pbtxt
    published = Path(printed["manifest_uri"].removeprefix("file://"))
    assert published.parent.name == doc["version"] == doc["sha256"][:12]
    assert json.loads(published.read_text()) == doc and (published.parent / "1" / "model.onnx").is_file()


@pytest.mark.slow
def test_unmet_tolerance_exits_3_with_the_reason(run_cli, tmp_path, env):
    out = tmp_path / "out"
    r = run_cli("model", "build", MODEL, "--calib", CALIB, "--eval", EVAL, "--precision", "int8",
                "--tolerance", "1.0", "--out", str(out), env=env)
    assert r.returncode == 3, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("inferops: tolerance not met") and "Traceback" not in r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["deployable"] is False and doc["artifact"] is None and "mean cosine" in doc["reason"]
    assert len(doc["search"]) > 1 and not (out / "1").exists()
    assert not (tmp_path / "registry").exists()  # nothing published


@pytest.mark.slow
def test_tensorrt_target_is_judged_on_exact_int8_and_speed_is_not_assumed(run_cli, tmp_path, env):
    """target=tensorrt: symmetric int8, fidelity from exact Q/DQ arithmetic (no CPU kernel's
    saturation), and --min-speedup exits 3 because no TensorRT speed-up can be measured here."""
    out = tmp_path / "out"
    r = run_cli("model", "build", MODEL, "--calib", CALIB, "--eval", EVAL, "--precision", "int8", "--metric",
                "accuracy", "--labels", LABELS, "--target", "tensorrt", "--min-speedup", "1.0", "--out", str(out),
                env=env)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("inferops: speed-up gate not met")
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["deployable"] is False and "cannot be measured on this worker" in doc["reason"]
    assert doc["quantization"]["scheme"] == "s8s8" and doc["min_speedup"] == 1.0
    assert doc["quantization"]["graph"] == "qdq" and doc["quantization"]["lowered_matmuls"] == 0  # TensorRT parses QDQ
    fid = doc["metrics"]["fidelity"]
    assert fid["numerics"]["kind"] == "simulated_tensorrt_int8" and fid["nonfinite"] == 0
    assert doc["metrics"]["accuracy"]["loss"] <= 0.01  # the fidelity gate itself was met
    assert doc["metrics"]["speedup"]["measured_on"]["on_target"] is False
    assert any("not measured on the target (tensorrt)" in w for w in doc["warnings"])
    assert not (out / "1").exists() and not (tmp_path / "registry").exists()


def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, env):
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    np.savez(tmp_path / "keys.npz", image=np.zeros((4, 1, 8, 8), np.float32))
    np.savez(tmp_path / "dtype.npz", pixels=np.zeros((4, 1, 8, 8), np.float64))
    np.savez(tmp_path / "shape.npz", pixels=np.zeros((4, 8, 8), np.float32))
    # issue 16: a corrupt member inside an NPZ (zlib) and a plain .npy where an NPZ belongs (TypeError)
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, pixels=np.random.default_rng(0).random((64, 1, 8, 8), np.float32))
    raw = bytearray(corrupt.read_bytes())
    raw[300:340] = b"\xff" * 40  # inside the deflate stream of the member, past the zip headers
    corrupt.write_bytes(bytes(raw))
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((4, 1, 8, 8), np.float32))
    cases = [  # (arguments, what the one line says)
        ((str(junk), "--calib", CALIB, "--eval", EVAL), "cannot read model"),
        ((MODEL, "--calib", str(tmp_path / "keys.npz"), "--eval", EVAL),
         "keys ['image'] do not match the model's input names ['pixels']"),
        ((MODEL, "--calib", CALIB, "--eval", str(tmp_path / "dtype.npz")), "dtype float64"),
        ((MODEL, "--calib", str(tmp_path / "shape.npz"), "--eval", EVAL), "expects rank 4"),
        ((MODEL, "--calib", CALIB, "--eval", EVAL, "--metric", "accuracy"), "needs labels"),
        ((MODEL, "--calib", str(corrupt), "--eval", EVAL),
         f"inferops: dataset {corrupt}: member 'pixels' is unreadable (zlib.error: Error -3"),
        ((MODEL, "--calib", CALIB, "--eval", str(plain)),
         f"inferops: dataset {plain}: a single .npy array, not an NPZ archive keyed by input names"),
    ]

    def bad(i: int) -> str:  # each in its own output folder: they run side by side
        r = run_cli("model", "build", *cases[i][0], "--precision", "fp16", "--out", str(tmp_path / f"o{i}"), env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        return lines[0]

    with ThreadPoolExecutor(3) as pool:
        lines = list(pool.map(bad, range(len(cases))))
    for (_, said), line in zip(cases, lines, strict=True):
        assert said in line, line
    assert lines[5].startswith(cases[5][1]) and lines[6] == cases[6][1]
    assert not any((tmp_path / f"o{i}").exists() for i in range(len(cases)))  # nothing written
