"""The build policy (the flow's parameters) and the candidate builders the flow composes.

Tolerance: with ``metric=fidelity`` it is the minimum mean per-sample cosine (default 0.999);
with ``metric=accuracy`` the maximum relative top-1 loss (default 0.01, i.e. 1%).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, Field, model_validator

from flows.common.errors import BadInput
from model_build import evaluate, quantize, search, smooth
from model_build.benchmark import Perf, speedup
from model_build.calibrate import CalibMethod, Dataset, n_samples
from model_build.evaluate import Accuracy, Fidelity, Metric
from model_build.package import ARTIFACT, tool_versions
from model_build.prepare import PreparedModel

log = logging.getLogger("inferops.model_build")


class Precision(StrEnum):
    fp16 = "fp16"
    int8 = "int8"


class Target(StrEnum):
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Serving(BaseModel):
    """Where a deployable build is served. With ``deployment`` set, the build's ``inferops.model.built``
    event names it, and the ``canary-on-model-built`` automation rolls the build out there."""

    namespace: str = Field("inference", description="Kubernetes namespace of the serving Deployment")
    deployment: str = Field("", description="Kubernetes Deployment that serves this model (a DNS-1123 name, "
                                            "at most 54 characters); empty: no canary is started")
    image: str = Field("", description="Serving image for the canary; empty: keep the Deployment's image and "
                                       "roll out the model manifest only")

    @model_validator(mode="after")
    def _names(self) -> Serving:
        for what, value, limit in (("serving.namespace", self.namespace, 63),
                                   ("serving.deployment", self.deployment, 54)):
            if (value or what == "serving.namespace") and (len(value) > limit or not _DNS_LABEL.match(value)):
                raise ValueError(f"{what} {value!r} is not a Kubernetes name (DNS-1123: lowercase letters, "
                                 f"digits and '-', at most {limit} characters)")
        if self.image and (len(self.image) > 255 or any(c.isspace() or ord(c) < 32 for c in self.image)):
            raise ValueError(f"serving.image {self.image!r} is not an image reference")
        return self


class BuildSpec(BaseModel):
    source: str = Field(..., description="ONNX model: a path on the worker, or s3://bucket/key")
    calib: str = Field(..., description="calibration set: NPZ keyed by input names, a folder of one .npy per "
                                        "input name, or package.module:function")
    eval: str = Field(..., description="evaluation set, same forms as calib")
    precision: Precision = Precision.int8
    metric: Metric = Metric.fidelity
    tolerance: float | None = Field(None, description="fidelity: min mean cosine (0.999); "
                                                      "accuracy: max relative top-1 loss (0.01)")
    labels: str | None = Field(None, description=".npy integer labels of the evaluation set")
    out: str | None = Field(None, description="local artifact folder; default: builds/MODEL-NAME in the state "
                                              "folder (INFEROPS_STATE_DIR)")
    calib_method: CalibMethod = CalibMethod.minmax
    target: Target = Field(Target.onnxruntime, description="tensorrt: symmetric INT8 activations, "
                                                           "and an engine on GPU workers")
    max_trials: int = Field(8, ge=1, le=12, description="INT8 search: candidates tried at most")
    smooth_alpha: float = Field(0.8, ge=0.0, lt=1.0, description="INT8 search: SmoothQuant migration strength "
                                                                 "tried when plain INT8 misses the tolerance; 0 = off")
    compare: bool = Field(True, description="also build the other precision for the FP32/FP16/INT8 comparison")
    bench_threads: int = Field(0, ge=0, description="CPU threads for benchmarks; 0 = onnxruntime's default")
    publish: bool = Field(True, description="publish a deployable build to the model registry")
    serving: Serving = Field(Serving(), description="the Kubernetes Deployment that serves this model")

    @model_validator(mode="after")
    def _check(self) -> BuildSpec:
        if self.metric is Metric.accuracy and not self.labels:
            raise ValueError("metric 'accuracy' needs labels")
        tol = self.resolved_tolerance
        if not (0.0 <= tol <= 1.0):
            raise ValueError(f"tolerance {tol} must be within [0, 1]")
        return self

    @property
    def resolved_tolerance(self) -> float:
        return evaluate.DEFAULT_TOLERANCE[self.metric] if self.tolerance is None else self.tolerance


class Judge:
    """Scores candidates against the FP32 reference outputs on the evaluation set."""

    def __init__(self, reference: list[np.ndarray], data: Dataset, metric: Metric, tolerance: float,
                 labels: np.ndarray | None, threads: int = 0) -> None:
        self.reference, self.data, self.metric = reference, data, metric
        self.tolerance, self.labels, self.threads = tolerance, labels, threads
        if labels is not None and len(labels) != n_samples(data):
            raise BadInput(f"labels: {len(labels)} labels for {n_samples(data)} evaluation samples")

    def report(self, path: Path) -> tuple[Fidelity, Accuracy | None, bool, str]:
        outputs = evaluate.run(evaluate.session(path, self.threads), self.data)
        fid = evaluate.fidelity(self.reference, outputs)
        acc = evaluate.accuracy(self.reference, outputs, self.labels) if self.labels is not None else None
        ok, reason = evaluate.within(self.metric, self.tolerance, fid, acc)
        return fid, acc, ok, reason

    def __call__(self, path: Path) -> tuple[float, bool, str]:
        fid, acc, ok, reason = self.report(path)
        score = acc.loss if self.metric is Metric.accuracy and acc else fid.cosine
        return score, ok, reason


@dataclass
class Candidate:
    precision: Precision
    path: Path | None  # the best model tried (deployable only when ok)
    ok: bool
    reason: str
    fidelity: Fidelity | None = None
    accuracy: Accuracy | None = None
    excluded_nodes: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of conversion/calibration + search + evaluation
    smoothing: dict[str, Any] | None = None  # SmoothQuant applied before calibration (INT8)


def build_fp16(prepared: PreparedModel, workdir: Path, judge: Judge) -> Candidate:
    """FP16 with only the converter's default block list first; when that overflows (NaN/Inf)
    or misses the tolerance, again with LayerNorm/Softmax/reductions kept in FP32."""
    t0, trials, last = time.perf_counter(), [], None
    for block in (False, True):
        path = workdir / f"fp16{'_blocked' if block else ''}.onnx"
        converter = quantize.fp16(prepared.path, path, block_overflow_ops=block)
        fid, acc, ok, reason = judge.report(path)
        trials.append({"block_overflow_ops": block, "converter": converter, "cosine": fid.cosine,
                       "nonfinite": fid.nonfinite, "ok": ok, "reason": reason})
        last = Candidate(Precision.fp16, path, ok, reason, fid, acc, trials=trials,
                         notes=[f"converter {converter}", "overflow ops blocked" if block else "default block list"])
        if ok:
            break
    last.seconds = time.perf_counter() - t0
    return last


def build_int8(prepared: PreparedModel, workdir: Path, judge: Judge, calib: Dataset, spec: BuildSpec) -> Candidate:
    t0 = time.perf_counter()
    batch = 16 if prepared.batch_dynamic else (prepared.inputs[0].shape[0] or 1)
    symmetric = spec.target is Target.tensorrt
    graph = onnx.load(str(prepared.path), load_external_data=False).graph
    quantizable = {n.name for n in graph.node if n.op_type in quantize.INT8_OP_TYPES}
    # attention's activation-by-activation MatMuls stay float on CPU (the same names in the smoothed model)
    float_matmuls = quantize.activation_matmuls(graph) if spec.target is Target.onnxruntime else []

    def make(base: Path, excluded: list[str], out: Path) -> Path:
        # the ranges depend on the base model (smoothed or not), not on the exclusions
        cache = workdir / f"calibration_{base.stem}_{spec.calib_method.value}.json"
        return quantize.int8(base, out, calib, method=spec.calib_method, exclude=[*excluded, *float_matmuls],
                             symmetric_activations=symmetric, batch_size=batch, cache_path=cache)

    def smoothed() -> smooth.Smoothing | None:
        try:
            return smooth.smooth(prepared.path, workdir / "fp32_smoothed.onnx", calib, alpha=spec.smooth_alpha,
                                 batch_size=batch, threads=spec.bench_threads)
        except Exception as exc:  # an optimisation, not a requirement: the search goes on without it
            log.warning("SmoothQuant skipped: %s", " ".join(str(exc).split())[:300])
            return None

    result = search.search(prepared.path, workdir, make, judge, calib, quantizable, max_trials=spec.max_trials,
                           smooth=smoothed if spec.smooth_alpha > 0 else None,
                           higher_is_better=spec.metric is Metric.fidelity)
    trials = [{"excluded_tensors": t.excluded_tensors, "excluded_nodes": len(t.excluded_nodes),
               "smoothed": t.smoothed, "score": t.score, "ok": t.ok, "reason": t.reason} for t in result.trials]
    best = result.path or result.last
    fid, acc, ok, reason = judge.report(best)
    notes = [f"calibration {spec.calib_method.value} on {n_samples(calib)} samples",
             "symmetric activations (TensorRT)" if symmetric else "asymmetric uint8 activations"]
    if float_matmuls:
        notes.append(f"{len(float_matmuls)} activation-by-activation MatMuls (attention) kept in float")
    if result.smoothing:
        notes.append(f"SmoothQuant alpha {result.smoothing.alpha} on {len(result.smoothing.tensors)} activations")
    if result.sensitivity:
        notes.append("most sensitive: " + ", ".join(f"{t} ({db:.1f} dB)" for t, db in result.sensitivity[:3]))
    if not ok:
        reason = f"INT8 out of tolerance after {len(result.trials)} trials: {reason}"
    return Candidate(Precision.int8, best, ok, reason, fid, acc,
                     excluded_nodes=result.excluded_nodes if ok else result.trials[-1].excluded_nodes,
                     trials=trials, notes=notes, seconds=time.perf_counter() - t0,
                     smoothing=result.smoothing.describe() if result.smoothing else None)


def manifest(spec: BuildSpec, prepared: PreparedModel, chosen: Candidate, *, name: str, version: str,
             sha: str | None, source_sha: str, calib_samples: int, fp32_perf: Perf, cand_perf: Perf | None,
             tensorrt: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "fp32": fp32_perf.model_dump(),
        "candidate": cand_perf.model_dump() if cand_perf else None,
        "speedup": speedup(fp32_perf, cand_perf) if cand_perf else None,
        "fidelity": chosen.fidelity.model_dump() if chosen.fidelity else None,
    }
    if chosen.accuracy is not None:
        metrics["accuracy"] = chosen.accuracy.model_dump()
    return {
        "name": name,
        "version": version,
        "artifact": ARTIFACT if chosen.ok else None,
        "precision": chosen.precision.value,
        "sha256": sha,
        "source": spec.source,
        "source_sha256": source_sha,
        "deployable": chosen.ok,
        "reason": chosen.reason,
        "target": spec.target.value,
        "calibration": {"method": spec.calib_method.value if chosen.precision is Precision.int8 else None,
                        "samples": calib_samples if chosen.precision is Precision.int8 else 0,
                        "smoothing": chosen.smoothing},
        "excluded_nodes": chosen.excluded_nodes,
        "metrics": metrics,
        "tolerance": {"metric": spec.metric.value, "value": spec.resolved_tolerance,
                      "meaning": "min mean cosine" if spec.metric is Metric.fidelity else "max relative top-1 loss"},
        "search": chosen.trials,
        "preparation": {"source_opset": prepared.source_opset, "opset": prepared.opset, "steps": prepared.steps},
        "tensorrt": tensorrt,
        "serving": spec.serving.model_dump(),
        "tools": tool_versions(),
    }
