"""The PyTorch export hook: ``torch.nn.Module`` → ONNX with a dynamic batch dimension.

torch is optional (the ``examples`` extra); importing this module never needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flows.common.errors import BadInput

DEFAULT_OPSET = 17


def import_torch():
    """``import torch`` plus ``torch._dynamo`` (which transformers and ``torch.onnx`` load lazily),
    with the builtin ``sys.intern`` in place while they load.

    Ansible, once imported in the same process (a worker serving several flows, the test session),
    swaps ``sys.intern`` for a callable object, and dynamo's import then fails ("substitute_in_graph
    expects a function"). Ansible's patch keeps the builtin as ``unpatched_implementation``.
    """
    import sys

    patched = sys.intern
    builtin = getattr(type(patched), "unpatched_implementation", None)
    if builtin is not None:
        sys.intern = builtin
    try:
        import torch
        import torch._dynamo  # noqa: F401
    finally:
        sys.intern = patched
    return torch


def export_torch(module, sample_inputs: Mapping[str, np.ndarray], path: str | Path, *,
                 output_names: Sequence[str] = ("output",), opset: int = DEFAULT_OPSET,
                 dynamic_axes: Mapping[str, Mapping[int, str]] | None = None) -> Path:
    """Export ``module`` called with ``sample_inputs`` (positional, in that order) to ``path``.

    Every input and output gets a dynamic batch axis 0 unless ``dynamic_axes`` says otherwise.
    Uses the TorchScript exporter (``dynamo=False``): it needs no onnxscript and handles the
    models here; the result goes through :func:`model_build.prepare.prepare` like any ONNX file.
    """
    try:
        torch = import_torch()
    except ImportError as exc:
        raise BadInput("exporting a PyTorch module needs torch (pip install torch==2.13.0)") from exc
    path = Path(path)
    names = list(sample_inputs)
    args = tuple(torch.from_numpy(np.asarray(sample_inputs[n])) for n in names)
    axes = dict(dynamic_axes) if dynamic_axes is not None else {
        n: {0: "batch"} for n in [*names, *output_names]}
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names, output_names=list(output_names),
                          opset_version=opset, dynamic_axes=axes, dynamo=False)
    return path
