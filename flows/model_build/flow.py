"""The ``model-build`` flow: a thin Prefect shell around the ``model_build`` library.

prepare → load and check the data sets → FP32 reference → FP16/INT8 candidates (INT8 with the
accuracy-aware search) → benchmarks → TensorRT engine (GPU workers) → artifact folder → registry →
``inferops.model.built`` event. A build that misses its tolerance, or ``min_speedup``, still writes
its manifest (``deployable: false`` and the reason), publishes nothing and ends with GateFailed
(exit 3). A candidate slower than FP32 without ``min_speedup`` is deployable with a warning.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from flows.common.artifacts import Progress, code, emit, markdown
from flows.common.errors import BackendUnavailable, GateFailed
from flows.common.runtime import NO_CACHE, flow, get_logger, ops_task
from flows.common.s3 import credential_error
from flows.common.settings import get_settings
from model_build import benchmark, evaluate, isa, package, prepare, tensorrt
from model_build.build import (
    BuildSpec,
    Candidate,
    Judge,
    Precision,
    SpeedVerdict,
    Target,
    build_fp16,
    build_int8,
    manifest,
    speed_gate,
)
from model_build.calibrate import load_dataset, n_samples
from model_build.sources import artifact_folder, clear_build

EVENT = "inferops.model.built"


def _io_error(task, task_run, state) -> bool:
    """Retry only I/O failures (file system, S3, network), never bad input nor missing or rejected
    credentials (they do not heal: waiting 2 + 10 + 30 s would only delay the same error)."""
    try:
        state.result()
    except Exception as exc:
        if credential_error(exc):
            return False
        if isinstance(exc, (OSError, BackendUnavailable)):
            return True
        return type(exc).__module__.startswith(("botocore", "boto3", "urllib3"))
    return False


IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 10, 30], "retry_condition_fn": _io_error}


@ops_task(name="prepare-model", cache_policy=NO_CACHE, **IO_RETRIES)
def prepare_model(source: str, workdir: Path, target: Target) -> prepare.PreparedModel:
    return prepare.prepare(source, workdir, softmax_floor=target is Target.onnxruntime)


@ops_task(name="load-datasets", cache_policy=NO_CACHE, **IO_RETRIES)
def load_datasets(spec: BuildSpec, prepared: prepare.PreparedModel):
    calib = load_dataset(spec.calib, prepared.inputs, "calibration set")
    data = load_dataset(spec.eval, prepared.inputs, "evaluation set")
    labels = evaluate.load_labels(spec.labels) if spec.labels else None
    return calib, data, labels


@ops_task(name="fp32-reference", cache_policy=NO_CACHE)
def fp32_reference(prepared: prepare.PreparedModel, data, threads: int):
    return evaluate.run(evaluate.session(prepared.path, threads), data)


@ops_task(name="build-candidate", cache_policy=NO_CACHE)
def build_candidate(precision: Precision, prepared, workdir: Path, judge: Judge, calib, spec,
                    host: isa.HostCPU) -> Candidate:
    if precision is Precision.fp16:
        return build_fp16(prepared, workdir, judge)
    return build_int8(prepared, workdir, judge, calib, spec, host)


@ops_task(name="benchmark", cache_policy=NO_CACHE)
def bench(paths: dict[str, Path], data, threads: int, gated: str) -> tuple[dict[str, benchmark.Perf], dict | None]:
    """Wall clock of every model with ``threads``; CPU time of FP32 and the ``gated`` candidate."""
    wall = benchmark.measure(paths, data, threads=threads)
    if gated not in paths:
        return wall, None
    cpu = benchmark.cpu_ms({"fp32": paths["fp32"], gated: paths[gated]}, data, rounds=5, min_s=0.1)
    return wall, benchmark.cpu_speedup(cpu["fp32"], cpu[gated])


@ops_task(name="tensorrt-engine", cache_policy=NO_CACHE, **IO_RETRIES)
def tensorrt_engine(candidate: Candidate, prepared, data, out: Path, name: str) -> dict[str, Any]:
    ok, why = tensorrt.available()
    if not ok:
        get_logger().info("TensorRT engine skipped: %s", why)
        return {"built": False, "skipped": why}
    registry = get_settings().s3.model_registry.rstrip("/")
    gpu_name, cc = tensorrt.gpu() or ("unknown", "unknown")
    cache_uri = f"{registry}/timing-cache/{why}/{cc}.cache"
    info = tensorrt.build_engine(candidate.path, out / "model.plan", prepared.inputs,
                                 {k: v.shape for k, v in data.items()}, timing_cache_uri=cache_uri)
    return {"built": True, "engine": info.path.name, "tensorrt_version": info.tensorrt_version,
            "gpu_name": info.gpu_name, "compute_capability": info.compute_capability,
            "timing_cache_uri": info.timing_cache_uri}


@ops_task(name="publish", cache_policy=NO_CACHE, **IO_RETRIES)
def publish(folder: Path, name: str, version: str) -> str:
    return package.publish(folder, get_settings().s3.model_registry, name, version)


def _fmt(v: float | None, pattern: str = "{:.3f}") -> str:
    return "–" if v is None else pattern.format(v)


def comparison(fp32: benchmark.Perf, rows: list[tuple[Candidate, benchmark.Perf | None]], spec: BuildSpec,
               host: isa.HostCPU, judge: Judge, speed: SpeedVerdict) -> str:
    acc_col = spec.labels is not None
    head = "| model | p50 ms (b1) | p99 ms (b1) | thr/s b8 | thr/s b32 | speedup b1 | cosine | rel L2 |"
    head += " top-1 |" if acc_col else ""
    head += " excluded nodes | status |"
    lines = [f"## model build: {code(package.model_name(spec.source))} → {spec.precision.value}", "",
             f"Tolerance: {spec.metric.value} {spec.resolved_tolerance}; provider {fp32.provider}, "
             f"threads {fp32.threads or 'default'}; build host {host.model} ({host.isa.value}); INT8 judged with "
             f"{judge.describe(host, Precision.int8)['kind']} numerics.", "", head, "|" + "---|" * (head.count("|") - 1)]

    def row(label, perf, cand):
        cells = [label, _fmt(perf and perf.latency_ms_p50), _fmt(perf and perf.latency_ms_p99),
                 _fmt(perf and perf.throughput_by_batch.get("8"), "{:.1f}"),
                 _fmt(perf and perf.throughput_by_batch.get("32"), "{:.1f}"),
                 _fmt(perf and fp32.latency_ms_p50 / perf.latency_ms_p50, "{:.2f}×"),
                 _fmt(cand.fidelity.cosine if cand else 1.0, "{:.5f}"),
                 _fmt(cand.fidelity.rel_l2 if cand else 0.0, "{:.4f}")]
        if acc_col:
            acc = cand.accuracy.candidate if cand and cand.accuracy else (
                next((c.accuracy.fp32 for c, _ in rows if c.accuracy), None))
            cells.append(_fmt(acc, "{:.4f}"))
        cells += [str(len(cand.excluded_nodes)) if cand else "–",
                  "reference" if cand is None else ("ok" if cand.ok else
                                                    " ".join(f"rejected: {cand.reason}".replace("|", "\\|").split()))]
        return "| " + " | ".join(cells) + " |"

    lines.append(row("FP32", fp32, None))
    for cand, perf in rows:
        lines.append(row(cand.precision.value.upper(), perf, cand))
    for cand, _ in rows:
        lines += ["", f"**{cand.precision.value.upper()}**: " + "; ".join(cand.notes)]
    cpu = (speed.speedup or {}).get("cpu_time")
    if cpu:
        lines += ["", f"**Speed-up of {rows[0][0].precision.value.upper()} on CPU time** (1 thread, {cpu['rounds']} "
                  f"rounds, what the speed gate judges): " + benchmark.cpu_numbers(cpu, "×")]
    lines += [f"\n**Warning**: {w}" for w in speed.warnings]
    return "\n".join(lines) + "\n"


@flow(name="model-build", log_prints=False)
def model_build(spec: BuildSpec) -> dict[str, Any]:
    """Build a deployable FP16/INT8 model with an accuracy gate; publish it and announce it.

    A published build emits ``inferops.model.built``; with ``spec.serving.deployment`` set, the
    ``canary-on-model-built`` automation rolls it out to that Deployment.

    Args:
        spec: What to build and how: the ONNX source, calibration and evaluation sets, precision,
            accuracy gate, and the Kubernetes Deployment that serves the model.
    """
    log = get_logger()
    name = package.model_name(spec.source)
    settings = get_settings()  # a bad setting (the registry's URI) is reported now, not after the build
    out = artifact_folder(Path(spec.out) if spec.out else settings.state_dir / "builds" / name)
    workdir = Path(tempfile.mkdtemp(prefix="inferops-model-build-"))
    progress = Progress(f"model build {name}", 7)
    try:
        prepared = prepare_model(spec.source, workdir, spec.target)
        progress.advance()
        calib, data, labels = load_datasets(spec, prepared)
        reference = fp32_reference(prepared, data, spec.bench_threads)
        host = isa.detect()
        numerics = (evaluate.Numerics.simulated_tensorrt_int8 if spec.target is Target.tensorrt
                    else evaluate.Numerics.host_kernels)
        judge = Judge(reference, data, spec.metric, spec.resolved_tolerance, labels, spec.bench_threads, numerics)
        progress.advance()
        precisions = [spec.precision] + ([p for p in Precision if p is not spec.precision] if spec.compare else [])
        candidates = [build_candidate(p, prepared, workdir, judge, calib, spec, host) for p in precisions]
        chosen = candidates[0]
        progress.advance(2)
        measured, cpu = bench({"fp32": prepared.path, **{c.precision.value: c.path for c in candidates if c.path}},
                              data, spec.bench_threads, chosen.precision.value)
        fp32_perf = measured["fp32"]
        perfs = [measured.get(c.precision.value) for c in candidates]
        speed = speed_gate(spec, chosen.precision, fp32_perf, perfs[0], host, cpu)
        if chosen.ok and chosen.scheme is not None and not chosen.scheme.portable:
            speed.warnings.append(f"INT8 scheme {chosen.scheme.value} is exact only on CPUs with VNNI, AMX or ARM dot "
                                  "products; served on AVX2 without VNNI it saturates (rebuild with --int8-scheme "
                                  "u8s8_reduce_range for such hosts)")
        for warning in speed.warnings:
            log.warning("%s", warning)
        deployable = chosen.ok and speed.ok
        reason = chosen.reason if not chosen.ok else speed.reason
        progress.advance()
        clear_build(out)  # a re-run replaces an earlier build's files; the registry keeps published versions
        out.mkdir(parents=True, exist_ok=True)
        trt = (tensorrt_engine(chosen, prepared, data, out, name) if deployable else
               {"built": False, "skipped": "no deployable candidate"})
        if spec.target is Target.tensorrt and not trt["built"]:
            log.warning("target tensorrt: engine not built (%s); the QDQ/FP16 ONNX model is the artifact",
                        trt["skipped"])
        sha = package.sha256(chosen.path) if deployable else None
        version = sha[:12] if sha else "rejected"
        doc = manifest(spec, prepared, chosen, name=name, version=version, sha=sha,
                       source_sha=prepared.source_sha256,
                       calib_samples=n_samples(calib), fp32_perf=fp32_perf, cand_perf=perfs[0], tensorrt=trt,
                       host=host, numerics=judge.describe(host, chosen.precision), speed=speed,
                       deployable=deployable, reason=reason)
        manifest_path = package.write_folder(out, chosen.path if deployable else None, name, doc)
        progress.advance()
        manifest_uri = None
        if deployable and spec.publish:
            manifest_uri = publish(out, name, version)
        markdown(f"model-build-{name}", comparison(fp32_perf, list(zip(candidates, perfs, strict=True)), spec, host,
                                                   judge, speed),
                 description=f"FP32 vs FP16 vs INT8 for {name}")
        progress.finish()
        if not chosen.ok:
            raise GateFailed(f"tolerance not met, nothing deployable: {chosen.reason} (manifest: {manifest_path})")
        if not speed.ok:
            raise GateFailed(f"speed-up gate not met, nothing deployable: {speed.reason} (manifest: {manifest_path})")
        if manifest_uri:
            serving = spec.serving
            labels = {"inferops.model.precision": chosen.precision.value, "inferops.model.version": version}
            if serving.deployment:  # what the canary-on-model-built trigger matches on
                labels.update({"inferops.serving.namespace": serving.namespace,
                               "inferops.serving.deployment": serving.deployment})
            emit(EVENT, f"inferops.model.{name}",
                 {"manifest_uri": manifest_uri, "target": spec.target.value, "serving": serving.model_dump()},
                 **labels)
        log.info("built %s %s: %s", name, chosen.precision.value, manifest_uri or manifest_path)
        return {"manifest": doc, "manifest_path": str(manifest_path), "manifest_uri": manifest_uri,
                "warnings": speed.warnings,
                "candidates": [{"precision": c.precision.value, "ok": c.ok, "reason": c.reason,
                                "fidelity": c.fidelity.model_dump() if c.fidelity else None,
                                "accuracy": c.accuracy.model_dump() if c.accuracy else None,
                                "excluded_nodes": len(c.excluded_nodes), "trials": c.trials,
                                "smoothing": c.smoothing, "seconds": c.seconds,
                                "perf": p.model_dump() if p else None}
                               for c, p in zip(candidates, perfs, strict=True)],
                "fp32_perf": fp32_perf.model_dump(), "prepared": {"steps": prepared.steps}}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
