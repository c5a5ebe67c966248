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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.common.errors import BadInput
from model_build import evaluate, quantize, search, smooth
from model_build.benchmark import Perf, cpu_numbers, speedup
from model_build.calibrate import CalibMethod, Dataset, n_samples
from model_build.evaluate import Accuracy, Fidelity, Metric, Numerics
from model_build.isa import HostCPU, Scheme, choose, detect
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

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    namespace: str = Field("inference", description="Kubernetes namespace of the serving Deployment")
    deployment: str = Field("", description="Kubernetes Deployment that serves this model (a DNS-1123 name, "
                                            "at most 54 characters); empty: no canary is started")
    image: str = Field("", description="Serving image for the canary; empty: keep the Deployment's image and "
                                       "roll out the model manifest only")

    @model_validator(mode="after")
    def _names(self) -> Serving:
        for what, value, limit in (("serving.namespace", self.namespace, 63),
                                   ("serving.deployment", self.deployment, 54)):
            if (value or what == "serving.namespace") and (len(value) > limit or not _DNS_LABEL.fullmatch(value)):
                raise ValueError(f"{what} {value!r} is not a Kubernetes name (DNS-1123: lowercase letters, "
                                 f"digits and '-', at most {limit} characters)")
        if self.image and (len(self.image) > 255 or any(c.isspace() or ord(c) < 32 for c in self.image)):
            raise ValueError(f"serving.image {self.image!r} is not an image reference")
        return self


class BuildSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

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
    int8_scheme: Scheme | None = Field(None, description="INT8 encoding; default: chosen from the build host's ISA "
                                                         "(u8s8 with VNNI/AMX, 7-bit weights without) or s8s8 for "
                                                         "tensorrt. u8s8_reduce_range and u8u8 are exact on every CPU")
    min_speedup: float | None = Field(None, ge=0.0, description="fail (exit 3) unless the candidate is at least this "
                                                                "many times faster than FP32 on the target, at batch 1 "
                                                                "and at batch 32 (CPU time per batch, one thread); "
                                                                "default: only warn when slower")
    max_trials: int = Field(8, ge=1, le=12, description="INT8 search: candidates tried at most")
    smooth_alpha: float = Field(0.6, ge=0.0, lt=1.0, description="INT8 search: SmoothQuant migration strength "
                                                                 "tried when plain INT8 misses the tolerance (outlier "
                                                                 "channels are split into INT8 copies); 0 = off")
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
        if self.target is Target.tensorrt and self.int8_scheme not in (None, Scheme.s8s8):
            raise ValueError(f"target tensorrt needs int8_scheme s8s8 (symmetric int8), not {self.int8_scheme.value}")
        return self

    def schemes(self, host: HostCPU) -> tuple[list[Scheme], str]:
        """The INT8 schemes this build searches (the faster passing one wins), and why."""
        if self.int8_scheme is not None:
            return [self.int8_scheme], f"int8_scheme {self.int8_scheme.value} requested"
        return choose(host.isa, tensorrt=self.target is Target.tensorrt)

    @property
    def resolved_tolerance(self) -> float:
        return evaluate.DEFAULT_TOLERANCE[self.metric] if self.tolerance is None else self.tolerance


class Judge:
    """Scores candidates against the FP32 reference outputs on the evaluation set, with the
    target's numerics: exact Q/DQ arithmetic (``simulated_tensorrt_int8``) or this worker's
    onnxruntime kernels (``host_kernels``)."""

    def __init__(self, reference: list[np.ndarray], data: Dataset, metric: Metric, tolerance: float,
                 labels: np.ndarray | None, threads: int = 0, numerics: Numerics = Numerics.host_kernels) -> None:
        self.reference, self.data, self.metric = reference, data, metric
        self.tolerance, self.labels, self.threads, self.numerics = tolerance, labels, threads, numerics
        if labels is not None and len(labels) != n_samples(data):
            raise BadInput(f"labels: {len(labels)} labels for {n_samples(data)} evaluation samples")

    def _session(self, path: Path):
        if self.numerics is Numerics.simulated_tensorrt_int8:
            return evaluate.session(path, self.threads, ["CPUExecutionProvider"], evaluate.EXACT_QDQ)
        return evaluate.session(path, self.threads)

    def describe(self, host: HostCPU, precision: Precision) -> dict[str, Any]:
        """What ``metrics.fidelity.numerics`` says: whose arithmetic judged the candidate."""
        import onnxruntime as ort

        if self.numerics is Numerics.simulated_tensorrt_int8 and precision is Precision.int8:
            return {"kind": self.numerics.value, "provider": "CPUExecutionProvider",
                    "session_config": evaluate.EXACT_QDQ, "onnxruntime": ort.__version__,
                    "detail": "QuantizeLinear/DequantizeLinear executed as written (no fused integer kernels): "
                              "s8 symmetric, round to nearest even, no saturation, as TensorRT computes INT8"}
        provider = evaluate.providers()[0]
        return {"kind": Numerics.host_kernels.value, "provider": provider, "onnxruntime": ort.__version__,
                "isa": host.isa.value, "cpu": host.model,
                "detail": f"onnxruntime's {precision.value.upper()} kernels on this build host "
                          f"({host.model}, {host.isa.value})"}

    def report(self, path: Path) -> tuple[Fidelity, Accuracy | None, bool, str]:
        outputs = evaluate.run(self._session(path), self.data)
        fid = evaluate.fidelity(self.reference, outputs)
        acc = evaluate.accuracy(self.reference, outputs, self.labels) if self.labels is not None else None
        ok, reason = evaluate.within(self.metric, self.tolerance, fid, acc)
        return fid, acc, ok, reason

    def __call__(self, path: Path) -> tuple[float, bool, str]:
        fid, acc, ok, reason = self.report(path)
        score = acc.loss if self.metric is Metric.accuracy and acc else fid.cosine
        return score, ok, reason


class Recipe(StrEnum):
    """Which ops an INT8 candidate quantises."""

    compute_ops = "compute_ops"  # Conv/MatMul/Gemm inputs, MatMul outputs float; searched (smoothing, exclusions)
    whole_graph = "whole_graph"  # every op onnxruntime quantises, outputs too: one trial, no search
    # the whole graph but the Convs that read a model input, which stay float: with one to a few input
    # channels INT8 can cost more than it saves (the digits CNN: 10% faster at batch 32), so it is timed
    whole_graph_input_float = "whole_graph_input_float"


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
    scheme: Scheme | None = None  # INT8 encoding (model_build.isa)
    scheme_reason: str = ""
    recipe: Recipe | None = None  # which ops INT8 quantised
    lowered: int = 0  # MatMuls as com.microsoft.MatMulIntegerToFloat: the artifact is for onnxruntime only


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


def build_int8(prepared: PreparedModel, workdir: Path, judge: Judge, calib: Dataset, spec: BuildSpec,
               host: HostCPU | None = None) -> Candidate:
    """INT8 in the scheme(s) this host (or ``spec.int8_scheme``) calls for, the fastest candidate
    within tolerance kept, measured here.

    Per scheme: the compute-ops recipe with the accuracy-aware search and, for onnxruntime
    targets, one whole-graph trial (onnxruntime's own recipe, in our scheme with per-channel
    weights), which keeps CNNs INT8 from end to end, and, when Convs read a model input, one more
    whole-graph trial with those Convs in float. When more than one candidate passes (recipes, or
    the two exact schemes of a CPU without VNNI), the faster on this worker wins; the others are
    named in the notes, and every trial is in ``trials``."""
    t0 = time.perf_counter()
    schemes, why = spec.schemes(host or detect())
    input_convs = _input_convs(prepared.path) if spec.target is Target.onnxruntime else []
    results: list[Candidate] = []
    for scheme in schemes:
        where = workdir / scheme.value if len(schemes) > 1 else workdir
        results.append(_int8_search(prepared, where, judge, calib, spec, scheme, why))
        if spec.target is Target.onnxruntime:
            results.append(_int8_whole_graph(prepared, where, judge, calib, spec, scheme, why))
            if input_convs:
                results.append(_int8_whole_graph(prepared, where, judge, calib, spec, scheme, why,
                                                 float_nodes=input_convs))
    passing = [c for c in results if c.ok]

    def label(c: Candidate) -> str:
        return f"{c.scheme.value if c.scheme else '?'}/{c.recipe.value}"

    if len(passing) > 1:
        from model_build.benchmark import cpu_ms

        # CPU time on one thread, not wall clock: two INT8 graphs of one model are often within a few
        # percent of each other, less than a shared worker's wall clock moves between two timings
        samples = cpu_ms({label(c): c.path for c in passing if c.path}, judge.data, rounds=5, min_s=0.1)

        def speed(c: Candidate) -> float:  # geometric mean of the batch-1 and batch-32 rates
            ms = [float(np.median(v)) for v in samples[label(c)].values()]
            return float(np.prod(ms) ** (-1 / len(ms)))

        chosen = max(passing, key=speed)
        chosen.notes.append("fastest within tolerance here, over " + ", ".join(
            f"{label(c)} ({len(c.excluded_nodes)} nodes in float, {speed(c) / speed(chosen):.2f}x the speed)"
            for c in passing if c is not chosen))
    else:
        chosen = passing[0] if passing else results[0]
        chosen.notes += [f"{label(c)} missed: {c.reason}" for c in results if c is not chosen]
    chosen.trials = [t for c in results for t in c.trials]
    chosen.seconds = time.perf_counter() - t0
    return chosen


def _input_convs(path: Path) -> list[str]:
    """The Conv nodes that read a model input directly."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]


def _int8_whole_graph(prepared: PreparedModel, workdir: Path, judge: Judge, calib: Dataset, spec: BuildSpec,
                      scheme: Scheme, why: str, float_nodes: list[str] | None = None) -> Candidate:
    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = Recipe.whole_graph_input_float if float_nodes else Recipe.whole_graph
    batch = 16 if prepared.batch_dynamic else (prepared.inputs[0].shape[0] or 1)
    # one calibration for both whole-graph candidates: a node kept in float changes no range
    out = quantize.int8(prepared.path, workdir / f"int8_{recipe.value}.onnx", calib, method=spec.calib_method,
                        scheme=scheme, batch_size=batch, op_types=None, exclude=float_nodes or (),
                        cache_path=workdir / f"calibration_whole_graph_{spec.calib_method.value}.json")
    fid, acc, ok, reason = judge.report(out)
    score = acc.loss if spec.metric is Metric.accuracy and acc else fid.cosine
    trial = {"scheme": scheme.value, "recipe": recipe.value, "excluded_tensors": 0,
             "excluded_nodes": len(float_nodes or ()), "smoothed": False, "score": score, "ok": ok, "reason": reason}
    what = "whole graph quantised (onnxruntime's recipe: every supported op, outputs too)"
    if float_nodes:
        what += f", but the Convs that read a model input, kept in float ({', '.join(float_nodes)})"
    return Candidate(Precision.int8, out, ok, reason if ok else f"{recipe.value.replace('_', '-')} INT8: {reason}",
                     fid, acc, excluded_nodes=list(float_nodes or ()), trials=[trial],
                     seconds=time.perf_counter() - t0, scheme=scheme, scheme_reason=why, recipe=recipe,
                     notes=[f"calibration {spec.calib_method.value} on {n_samples(calib)} samples",
                            f"{scheme.value}: {scheme.describe()} ({why})", what])


def _int8_search(prepared: PreparedModel, workdir: Path, judge: Judge, calib: Dataset, spec: BuildSpec,
                 scheme: Scheme, why: str) -> Candidate:
    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    batch = 16 if prepared.batch_dynamic else (prepared.inputs[0].shape[0] or 1)
    graph = onnx.load(str(prepared.path), load_external_data=False).graph
    quantizable = {n.name for n in graph.node if n.op_type in quantize.INT8_OP_TYPES}
    # attention's activation-by-activation MatMuls stay float on CPU (the same names in the smoothed model)
    float_matmuls = quantize.activation_matmuls(graph) if spec.target is Target.onnxruntime else []

    def make(base: Path, excluded: list[str], out: Path) -> Path:
        # the ranges depend on the base model (smoothed or not), not on the exclusions
        cache = workdir / f"calibration_{base.stem}_{spec.calib_method.value}.json"
        return quantize.int8(base, out, calib, method=spec.calib_method,
                             exclude=[*excluded, *float_matmuls],
                             scheme=scheme, batch_size=batch, cache_path=cache)

    def smoothed(everywhere: bool) -> smooth.Smoothing | None:
        try:
            return smooth.smooth(prepared.path, workdir / f"fp32_smoothed{'_everywhere' if everywhere else ''}.onnx",
                                 calib, alpha=spec.smooth_alpha, batch_size=batch, threads=spec.bench_threads,
                                 min_gain_db=0.0 if everywhere else smooth.MIN_GAIN_DB)
        except Exception as exc:  # an optimisation, not a requirement: the search goes on without it
            log.warning("SmoothQuant skipped: %s", " ".join(str(exc).split())[:300])
            return None

    result = search.search(prepared.path, workdir, make, judge, calib, quantizable, max_trials=spec.max_trials,
                           smooth=smoothed if spec.smooth_alpha > 0 else None,
                           higher_is_better=spec.metric is Metric.fidelity)
    trials = [{"scheme": scheme.value, "recipe": Recipe.compute_ops.value, "excluded_tensors": t.excluded_tensors, "excluded_nodes": len(t.excluded_nodes),
               "smoothed": t.smoothed, "score": t.score, "ok": t.ok, "reason": t.reason} for t in result.trials]
    best = result.path or result.last
    fid, acc, ok, reason = judge.report(best)
    notes = [f"calibration {spec.calib_method.value} on {n_samples(calib)} samples",
             f"{scheme.value}: {scheme.describe()} ({why})"]
    count = 0  # MatMuls lowered
    if ok and spec.target is Target.onnxruntime:  # the same integers, one kernel per MatMul and its bias
        lowered = best.with_name(best.stem + "_lowered.onnx")
        count = quantize.lower_for_onnxruntime(best, lowered)
        verdict = judge.report(lowered) if count else None
        if verdict and verdict[2]:
            best, (fid, acc, ok, reason) = lowered, verdict
            notes.append(f"{count} MatMuls lowered to MatMulIntegerToFloat with their bias")
        else:
            count = 0
    if float_matmuls:
        notes.append(f"{len(float_matmuls)} activation-by-activation MatMuls (attention) kept in float")
    if result.smoothing:
        sm = result.smoothing
        notes.append(f"SmoothQuant alpha {sm.alpha} on {len(sm.tensors)} activations ({sm.folded} inside the V "
                     f"projection, {sm.unsmoothed} left as they are: too little to gain), {sm.outlier_channels} "
                     f"outlier channels split into {sm.outlier_copies} INT8 copies")
    if result.sensitivity:
        notes.append("most sensitive: " + ", ".join(f"{t} ({db:.1f} dB)" for t, db in result.sensitivity[:3]))
    if not ok:
        reason = f"INT8 out of tolerance after {len(result.trials)} trials: {reason}"
    return Candidate(Precision.int8, best, ok, reason, fid, acc,
                     excluded_nodes=result.excluded_nodes if ok else result.trials[-1].excluded_nodes,
                     trials=trials, notes=notes, seconds=time.perf_counter() - t0,
                     smoothing=result.smoothing.describe() if result.smoothing else None, scheme=scheme,
                     scheme_reason=why, recipe=Recipe.compute_ops, lowered=count)


@dataclass
class SpeedVerdict:
    """Whether the candidate is fast enough: measured, never assumed."""

    speedup: dict[str, Any] | None  # batch1_latency, throughput, worst, cpu_time, gated_on, measured_on
    ok: bool  # False only when --min-speedup is given and not met (or cannot be measured on the target)
    reason: str
    warnings: list[str] = field(default_factory=list)


def speed_gate(spec: BuildSpec, precision: Precision, fp32: Perf, cand: Perf | None, host: HostCPU,
               cpu: dict[str, Any] | None = None) -> SpeedVerdict:
    """Compare the candidate's measured speed with FP32's, on the target when it can be measured here.

    Two measures: the wall clock with the benchmark's threads (``batch1_latency``, ``throughput``
    and their ``worst``), and, when given, ``cpu`` (``benchmark.cpu_speedup``): CPU time per batch
    on one thread, compared round by round. CPU time is what each inference costs, and it holds
    still on a shared worker where the wall clock moves by tens of percent from minute to minute;
    so the verdict (``gated_on``) is the worse CPU-time ratio when there is one, else the wall
    clock's. Below 1 the build warns (still deployable); below ``spec.min_speedup`` it fails. A
    wall clock below 1 beside a CPU time above it is warned about too. A TensorRT target is not
    measurable on this worker (the onnxruntime figures are the host's), so ``min_speedup`` fails
    there rather than pass on a number that does not describe the target.
    """
    if cand is None:
        return SpeedVerdict(None, True, "")
    ratio = speedup(fp32, cand)
    worst = min(ratio.values())
    gate = cpu["worst"] if cpu else worst
    on_target = spec.target is Target.onnxruntime
    where = (f"onnxruntime {cand.provider}, {cand.threads or 'default'} threads, on {host.model} ({host.isa.value})")
    measured = {"provider": cand.provider, "threads": cand.threads, "cpu": host.model, "isa": host.isa.value,
                "target": spec.target.value, "on_target": on_target}
    doc = {**ratio, "worst": worst, "cpu_time": cpu, "gated_on": "cpu_time" if cpu else "wall_clock",
           "measured_on": measured}
    label = precision.value.upper()
    wall = f"batch 1 {ratio['batch1_latency']:.2f}x, largest batch {ratio['throughput']:.2f}x"
    numbers = (f"CPU time {cpu_numbers(cpu)} (1 thread); wall clock {wall}" if cpu else wall)
    warnings = []
    if not on_target:
        warnings.append(f"{label} speed-up not measured on the target ({spec.target.value}): {numbers} is "
                        f"{where}")
    elif gate < 1.0:
        warnings.append(f"{label} is slower than FP32 on the target: {numbers} with {where}")
    elif worst < 1.0:
        warnings.append(f"{label} is faster than FP32 on CPU time but not on the wall clock: {numbers} with {where} "
                        f"(the worker was busy, or the {label} model spreads worse over threads)")
    if spec.min_speedup is not None:
        if not on_target:
            return SpeedVerdict(doc, False, f"--min-speedup {spec.min_speedup}: the {label} speed-up on "
                                            f"{spec.target.value} cannot be measured on this worker", warnings)
        if gate < spec.min_speedup:
            return SpeedVerdict(doc, False, f"{label} is {gate:.2f}x FP32 ({numbers}) with {where}, "
                                            f"below --min-speedup {spec.min_speedup}", warnings)
    return SpeedVerdict(doc, True, "", warnings)


def manifest(spec: BuildSpec, prepared: PreparedModel, chosen: Candidate, *, name: str, version: str,
             sha: str | None, source_sha: str, calib_samples: int, fp32_perf: Perf, cand_perf: Perf | None,
             tensorrt: dict[str, Any], host: HostCPU, numerics: dict[str, Any], speed: SpeedVerdict,
             deployable: bool, reason: str) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "fp32": fp32_perf.model_dump(),
        "candidate": cand_perf.model_dump() if cand_perf else None,
        "speedup": speed.speedup,
        "fidelity": chosen.fidelity.model_dump() | {"numerics": numerics} if chosen.fidelity else None,
    }
    if chosen.accuracy is not None:
        metrics["accuracy"] = chosen.accuracy.model_dump()
    int8 = chosen.precision is Precision.int8
    return {
        "name": name,
        "version": version,
        "artifact": ARTIFACT if deployable else None,
        "precision": chosen.precision.value,
        "sha256": sha,
        "source": spec.source,
        "source_sha256": source_sha,
        "deployable": deployable,
        "reason": reason,
        "warnings": speed.warnings,
        "target": spec.target.value,
        "host": host.describe(),
        "quantization": {"scheme": chosen.scheme.value if chosen.scheme else None,
                         "recipe": chosen.recipe.value if chosen.recipe else None,
                         "encoding": chosen.scheme.describe() if chosen.scheme else None,
                         "why": chosen.scheme_reason or None,
                         "portable": chosen.scheme.portable if chosen.scheme else None,
                         "isa": host.isa.value,
                         # "onnxruntime": MatMuls lowered to com.microsoft.MatMulIntegerToFloat (not for TensorRT)
                         "graph": "onnxruntime" if chosen.lowered else "qdq",
                         "lowered_matmuls": chosen.lowered} if int8 else None,
        "calibration": {"method": spec.calib_method.value if int8 else None,
                        "samples": calib_samples if int8 else 0,
                        "smoothing": chosen.smoothing},
        "excluded_nodes": chosen.excluded_nodes,
        "metrics": metrics,
        "tolerance": {"metric": spec.metric.value, "value": spec.resolved_tolerance,
                      "meaning": "min mean cosine" if spec.metric is Metric.fidelity else "max relative top-1 loss"},
        "min_speedup": spec.min_speedup,
        "search": chosen.trials,
        "preparation": {"source_opset": prepared.source_opset, "opset": prepared.opset, "steps": prepared.steps},
        "tensorrt": tensorrt,
        "serving": spec.serving.model_dump(),
        "tools": tool_versions(),
    }
