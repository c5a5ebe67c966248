"""``inferops model build``: FP16/INT8 with an accuracy gate (exit 0 deployable, 3 tolerance or
``--min-speedup`` not met, 2 bad input). A candidate slower than FP32 is still deployable without
``--min-speedup``, with a warning on stderr and in the JSON."""

from __future__ import annotations

import json
from typing import Literal

import typer

from flows.common.errors import bad_input_from
from flows.common.runtime import run_flow

# model_build.build.Precision / Target, model_build.evaluate.Metric and model_build.isa.Scheme, spelled
# out so that `--help` does not import onnx and numpy (tests/unit/test_cli_startup.py keeps them equal)
Precision = Literal["fp16", "int8"]
Metric = Literal["fidelity", "accuracy"]
Target = Literal["onnxruntime", "tensorrt"]
Scheme = Literal["u8s8", "u8s8_reduce_range", "u8u8", "s8s8"]

app = typer.Typer(help="Build FP16/INT8 models with an accuracy gate", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Build FP16/INT8 models with an accuracy gate."""


@app.command("build")
def build_cmd(
    src: str = typer.Argument(..., help="ONNX model: a path or s3://bucket/key"),
    calib: str = typer.Option(..., "--calib", help="calibration NPZ keyed by the model's input names"),
    eval_: str = typer.Option(..., "--eval", help="evaluation NPZ keyed by the model's input names"),
    precision: Precision = typer.Option(..., "--precision", help="fp16 or int8"),
    out: str = typer.Option(..., "--out", help="artifact folder (manifest.json, config.pbtxt, 1/model.onnx)"),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="fidelity: min mean cosine (default 0.999); accuracy: max relative loss (0.01)"),
    metric: Metric = typer.Option("fidelity", "--metric", help="fidelity (vs FP32) or accuracy (top-1)"),
    labels: str | None = typer.Option(None, "--labels", help=".npy integer labels for --metric accuracy"),
    target: Target = typer.Option("onnxruntime", "--target",
                                  help="onnxruntime (judged on this host's kernels) or tensorrt (judged on exact "
                                       "symmetric INT8)"),
    min_speedup: float | None = typer.Option(
        None, "--min-speedup", help="exit 3 unless the candidate is at least X times faster than FP32 on the target "
                                    "(CPU time per batch, one thread, at batch 1 and batch 32); without it a slower "
                                    "candidate only warns"),
    int8_scheme: Scheme | None = typer.Option(
        None, "--int8-scheme", help="INT8 encoding; default from this host's ISA (u8s8_reduce_range and u8u8 are "
                                    "exact on every CPU)"),
) -> None:
    """Build SRC at --precision; write DIR/manifest.json and the model; exit 3 if the tolerance is not met."""
    from model_build.sources import artifact_folder, local_model

    local_model(src)  # a missing model or an unusable --out is reported before onnx and onnxruntime load
    artifact_folder(out)
    from pydantic import ValidationError
    from rich.console import Console
    from rich.table import Table

    from model_build.benchmark import cpu_numbers
    from model_build.build import BuildSpec

    try:
        spec = BuildSpec(source=src, calib=calib, eval=eval_, precision=precision, tolerance=tolerance,
                         metric=metric, labels=labels, out=out, target=target, min_speedup=min_speedup,
                         int8_scheme=int8_scheme)
    except ValidationError as exc:
        raise bad_input_from(exc, "model build") from None
    result = run_flow(_flow(), spec=spec)
    doc = result["manifest"]
    table = Table(title=f"{doc['name']} {doc['precision']} → {result['manifest_uri'] or result['manifest_path']}")
    for col in ("candidate", "status", "cosine", "top-1 loss", "p50 ms b1", "thr/s b32"):
        table.add_column(col)
    fp32 = result["fp32_perf"]
    table.add_row("fp32", "reference", "1", "0", f"{fp32['latency_ms_p50']:.3f}",
                  f"{fp32['throughput']:.1f}")
    for c in result["candidates"]:
        perf, acc = c["perf"] or {}, c["accuracy"] or {}
        table.add_row(c["precision"], "ok" if c["ok"] else c["reason"], f"{c['fidelity']['cosine']:.5f}",
                      f"{acc['loss']:.4f}" if acc else "–", f"{perf.get('latency_ms_p50', 0):.3f}",
                      f"{perf.get('throughput', 0):.1f}")
    console = Console(stderr=True, markup=False)  # paths and reasons are never markup
    console.print(table)
    cpu = (doc["metrics"]["speedup"] or {}).get("cpu_time")
    if cpu:
        console.print(f"{doc['precision'].upper()} speed-up on CPU time, one thread (what --min-speedup judges): "
                      + cpu_numbers(cpu),
                      markup=False, highlight=False, soft_wrap=True)
    for warning in result["warnings"]:
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)  # one line each
    typer.echo(json.dumps({"manifest": result["manifest_path"], "manifest_uri": result["manifest_uri"],
                           "deployable": doc["deployable"], "warnings": result["warnings"]}))


def _flow():
    from flows.model_build.flow import model_build

    return model_build
