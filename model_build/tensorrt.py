"""TensorRT engines from the chosen QDQ or FP16 ONNX model (the ``gpu`` extra, GPU workers only).

Written against the TensorRT 10.x/11 Python API (checked against NVIDIA's current Builder docs):
a strongly typed network (the precision comes from the QDQ/FP16 graph itself; TensorRT 11
removed the precision builder flags and makes every network strongly typed, so the
``STRONGLY_TYPED`` creation flag is set on 10.x only), one optimisation profile covering the
dynamic dimensions, and a timing cache loaded from and saved back to S3 so that rebuilds on the
same GPU model are fast. NOT RUN in this project's CI or on its development machines: TensorRT
cannot be installed there. Without ``tensorrt`` or a GPU, :func:`available` says why and the
flow skips the step.

Checked statically instead: ``tests/unit/test_model_build_tensorrt_types.py`` runs mypy (strict)
on this module against ``tensorrt-stubs`` (the TensorRT 10.13 Python API) and checks that it uses
none of the Python APIs TensorRT 11 removed (:data:`REMOVED_IN_TRT11`). What the 10.13 stubs
revealed, and how each is handled for 10.x and 11.x alike:

- ``Builder.build_serialized_network`` is typed as never returning None; TensorRT returns None
  when the build fails (both versions' docs), so the result is typed ``IHostMemory | None``.
- ``IOptimizationProfile.set_shape`` takes ``Dims``; tuples only work through pybind11's implicit
  conversion, so shapes are passed as ``trt.Dims``.
- ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists in 10.x (opt-in there); 11.x makes
  every network strongly typed, so the flag is set on 10.x only.
- A ``tensorrt`` directory of ``.pyi`` stubs imports as an empty namespace package: it is not
  TensorRT, and :func:`available` says so.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from model_build.prepare import InputSpec

# Python APIs that TensorRT 11 removed (NVIDIA, "Removed Python APIs and Replacements",
# docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html):
# weak typing and implicit-quantization calibration. This module must use none of them.
REMOVED_IN_TRT11 = ("FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                    "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "int8_calibrator", "set_calibration_profile",
                    "get_calibration_profile", "set_quantization_flag", "get_quantization_flag",
                    "quantization_flags", "clear_quantization_flag", "platform_has_fast_fp16",
                    "platform_has_fast_int8", "device_memory_size", "set_flag", "IInt8Calibrator",
                    "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IAlgorithmSelector")


@dataclass
class EngineInfo:
    path: Path
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    timing_cache_uri: str | None


def available() -> tuple[bool, str]:
    """(True, version) when TensorRT and an NVIDIA GPU are usable here, else (False, why not)."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "tensorrt is not installed (pip install 'inferops[gpu]' on a GPU worker)"
    version = getattr(trt, "__version__", None)
    if getattr(trt, "__file__", None) is None or not isinstance(version, str):  # only tensorrt-stubs' .pyi files
        return False, "tensorrt is not installed, only its type stubs (pip install 'inferops[gpu]' on a GPU worker)"
    if not gpu():
        return False, "no NVIDIA GPU visible (nvidia-smi found none)"
    return True, version


def gpu() -> tuple[str, str] | None:
    """(name, compute capability) of GPU 0 from nvidia-smi, or None."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=False)
    first = out.stdout.strip().splitlines()[:1]
    if out.returncode or not first:
        return None
    name, _, cc = first[0].partition(",")
    return name.strip(), cc.strip()


Shape = tuple[int, ...]


def profile_shapes(spec: InputSpec, sample_shape: Shape, max_batch: int) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) for one input: batch 1 / 8 / ``max_batch``; other dynamic dims 1 / the
    sample's / the sample's."""
    lo: list[int] = []
    opt: list[int] = []
    hi: list[int] = []
    for axis, (dim, seen) in enumerate(zip(spec.shape, sample_shape, strict=True)):
        low, best, high = ((dim, dim, dim) if dim is not None else
                           (1, min(8, max_batch), max_batch) if axis == 0 else (1, seen, seen))
        lo.append(low)
        opt.append(best)
        hi.append(high)
    return tuple(lo), tuple(opt), tuple(hi)


def build_engine(onnx_path: Path, out_path: Path, inputs: list[InputSpec],
                 sample_shapes: dict[str, Shape], *, max_batch: int = 32,
                 timing_cache_uri: str | None = None, workspace_gib: float = 4.0) -> EngineInfo:
    import tensorrt as trt

    from flows.common.errors import InferopsError

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major == 10 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InferopsError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    for spec in inputs:
        low, best, high = profile_shapes(spec, sample_shapes[spec.name], max_batch)
        profile.set_shape(spec.name, trt.Dims(list(low)), trt.Dims(list(best)), trt.Dims(list(high)))
    config.add_optimization_profile(profile)
    cache_bytes = _read_cache(timing_cache_uri)
    cache = config.create_timing_cache(cache_bytes or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    # None when the build fails (TensorRT 10 and 11 docs), though the 10.13 stubs say it never is
    serialized = cast("trt.IHostMemory | None", builder.build_serialized_network(network, config))
    if serialized is None:
        raise InferopsError(f"TensorRT failed to build an engine from {onnx_path.name}")
    out_path.write_bytes(bytes(serialized))
    if timing_cache_uri:
        _write_cache(timing_cache_uri, bytes(config.get_timing_cache().serialize()))
    name, cc = gpu() or ("unknown", "unknown")
    return EngineInfo(out_path, trt.__version__, name, cc, timing_cache_uri)


def _read_cache(uri: str | None) -> bytes | None:
    if not uri:
        return None
    from model_build.package import read_bytes

    return read_bytes(uri)


def _write_cache(uri: str, data: bytes) -> None:
    from model_build.package import write_bytes

    write_bytes(uri, data)
