"""``make demo``: an INT8 build of the digits CNN, judged by top-1 accuracy (≤1% relative loss),
written to ``demo-output/model-build/`` (manifest.json, config.pbtxt, 1/model.onnx) and published
to the embedded file:// model registry."""

from __future__ import annotations

from pathlib import Path

from flows.common.runtime import run_flow
from flows.model_build.flow import model_build
from model_build.build import BuildSpec, Precision
from model_build.evaluate import Metric

DIGITS = Path(__file__).resolve().parents[2] / "model_build" / "examples" / "digits"


def run(out: Path) -> str:
    spec = BuildSpec(source=str(DIGITS / "digits_cnn.onnx"), calib=str(DIGITS / "calib.npz"),
                     eval=str(DIGITS / "eval.npz"), labels=str(DIGITS / "labels.npy"),
                     precision=Precision.int8, metric=Metric.accuracy, out=str(out))
    result = run_flow(model_build, spec=spec)
    doc = result["manifest"]
    acc, speed = doc["metrics"]["accuracy"], doc["metrics"]["speedup"]
    return (f"digits INT8 deployable={doc['deployable']}: top-1 {acc['fp32']:.4f} -> {acc['candidate']:.4f} "
            f"(loss {acc['loss']:.2%}), {speed['cpu_time']['batch32']:.2f}x FP32 at batch 32 on CPU time, "
            f"{speed['throughput']:.2f}x on the wall clock; "
            f"{result['manifest_uri']}")
