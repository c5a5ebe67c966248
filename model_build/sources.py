"""Where a model comes from: a local path or ``s3://bucket/key``. Light on imports, so that the CLI
reports a missing model file before onnx and onnxruntime load (about a second)."""

from __future__ import annotations

from pathlib import Path

from flows.common.errors import BadInput


def local_model(src: str) -> Path | None:
    """The path of a local model source (``None`` for ``s3://``); a missing file is bad input."""
    if src.startswith("s3://"):
        return None
    path = Path(src)
    if not path.is_file():
        raise BadInput(f"cannot read model {src}: no such file")
    return path
