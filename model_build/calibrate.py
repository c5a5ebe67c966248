"""Datasets (calibration and evaluation) and the calibration data reader.

A dataset is a mapping ``input name -> array`` with the batch dimension first, read from an NPZ
keyed by the model's input names, a directory of ``<input name>.npy`` files (memory-mapped), or an
importable entrypoint ``package.module:function`` returning such a mapping. Every dataset is
checked against the model's inputs (names, dtypes, ranks, fixed dims) before any work starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import numpy as np

from flows.common.errors import BadInput
from model_build.prepare import InputSpec

Dataset = dict[str, np.ndarray]


class CalibMethod(StrEnum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"

    def ort(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[self.value]


def _npy(path: Path, source: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated, not an array, pickled objects: the file is bad, whatever the error
        raise BadInput(f"dataset {source}: unreadable .npy file {path.name} ({_why(exc)})") from exc


def _npz(path: Path, source: str) -> dict[str, np.ndarray]:
    """Every member of an NPZ, read now: a corrupt member (zlib, CRC, header) is bad input here,
    not a crash in the middle of calibration."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BadInput(f"dataset {source}: unreadable NPZ ({_why(exc)})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # np.load gives a plain array for a .npy file
        raise BadInput(f"dataset {source}: a single .npy array, not an NPZ archive keyed by input names")
    with loaded as npz:
        data = {}
        for key in npz.files:
            try:
                data[key] = npz[key]
            except Exception as exc:
                raise BadInput(f"dataset {source}: member {key!r} is unreadable ({_why(exc)})") from exc
    return data


def _why(exc: BaseException) -> str:
    kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
    return f"{kind}: {' '.join(str(exc).split())[:200]}".rstrip(": ")


def _read(source: str) -> Mapping[str, np.ndarray]:
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise BadInput(f"dataset {source}: no .npy files in the directory")
        return {f.stem: _npy(f, source) for f in files}
    if path.is_file():
        return _npz(path, source)
    if ":" in source and not source.startswith(("/", ".")):
        module, _, func = source.partition(":")
        try:
            loader = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise BadInput(f"dataset {source}: cannot import the loader ({exc})") from exc
        try:
            data = loader()
        except Exception as exc:
            raise BadInput(f"dataset {source}: the loader failed ({_why(exc)})") from exc
        if not isinstance(data, Mapping):
            raise BadInput(f"dataset {source}: the loader must return a mapping input name -> array")
        return {k: np.asarray(v) for k, v in data.items()}
    raise BadInput(f"dataset {source}: no such file, directory or module:function entrypoint")


def load_dataset(source: str | Path, inputs: list[InputSpec], what: str = "dataset") -> Dataset:
    """Read ``source`` and check it against the model's inputs; BadInput names the first mismatch."""
    data = _read(str(source))
    names = [s.name for s in inputs]
    if sorted(data) != sorted(names):
        raise BadInput(f"{what} {source}: keys {sorted(data)} do not match the model's input names {names}")
    counts = set()
    for spec in inputs:
        arr = data[spec.name]
        if arr.dtype != spec.dtype:
            raise BadInput(f"{what} {source}: {spec.name!r} has dtype {arr.dtype}, the model expects {spec.dtype}")
        if arr.ndim != len(spec.shape):
            raise BadInput(f"{what} {source}: {spec.name!r} has shape {arr.shape}, the model expects rank "
                           f"{len(spec.shape)} {_fmt(spec.shape)} with the batch dimension first")
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if axis > 0 and want is not None and got != want:
                raise BadInput(f"{what} {source}: {spec.name!r} has shape {arr.shape}, the model expects "
                               f"{_fmt(spec.shape)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BadInput(f"{what} {source}: {spec.name!r} holds NaN or Inf values")
        counts.add(arr.shape[0])
    if len(counts) != 1 or 0 in counts:
        raise BadInput(f"{what} {source}: inputs need the same, non-zero number of samples (got {sorted(counts)})")
    return dict(data)


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def n_samples(data: Dataset) -> int:
    return len(next(iter(data.values())))


def batches(data: Dataset, batch_size: int, start: int = 0, stop: int | None = None):
    """Yield feed dicts of ``batch_size`` samples (the last one may be smaller)."""
    stop = n_samples(data) if stop is None else stop
    for i in range(start, stop, batch_size):
        yield {k: np.ascontiguousarray(v[i:min(i + batch_size, stop)]) for k, v in data.items()}


def _reader_base():
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class DatasetReader(_reader_base()):
    """An onnxruntime ``CalibrationDataReader`` over a dataset, with ``set_range`` so that
    ``quantize_static`` can calibrate in strides (``CalibStridedMinMax``) and hold only one
    stride's activations in memory at a time."""

    def __init__(self, data: Dataset, batch_size: int) -> None:
        self.data, self.batch_size = data, batch_size
        self.n_batches = -(-n_samples(data) // batch_size)
        self.set_range(0, self.n_batches)

    def __len__(self) -> int:
        return self.n_batches

    def set_range(self, start_index: int, end_index: int) -> None:
        bs = self.batch_size
        self._it = batches(self.data, bs, start_index * bs, min(end_index * bs, n_samples(self.data)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, self.n_batches)

    def stride(self, target: int = 4) -> int:
        """The largest divisor of the batch count that is at most ``target`` batches."""
        return max(d for d in range(1, min(target, self.n_batches) + 1) if self.n_batches % d == 0)
