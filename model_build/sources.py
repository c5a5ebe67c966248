"""Where a model comes from (a local path or ``s3://bucket/key``) and where its artifact folder goes.
Light on imports, so that the CLI reports a missing model file or an unusable ``--out`` before onnx and
onnxruntime load (about a second)."""

from __future__ import annotations

import shutil
from pathlib import Path

from flows.common.errors import BadInput

# what a build writes into its artifact folder (model_build.package.write_folder, the TensorRT engine):
# a re-run replaces these, and only these
BUILD_FILES = frozenset({"manifest.json", "manifest.json.tmp", "config.pbtxt", "1", "model.plan"})


def local_model(src: str) -> Path | None:
    """The path of a local model source (``None`` for ``s3://``); a missing file, or an S3 URI that
    names no object (``s3://bucket``, ``s3://bucket/dir/``: the fetch listed and downloaded every
    object beside it), is bad input."""
    if src.startswith("s3://"):
        from flows.common.s3 import parse_s3_uri

        if not parse_s3_uri(src).prefix or src.endswith("/"):
            raise BadInput(f"cannot read model {src}: names no object (expected s3://BUCKET/KEY.onnx)")
        return None
    path = Path(src)
    if not path.is_file():
        raise BadInput(f"cannot read model {src}: no such file")
    return path


def artifact_folder(out: str | Path) -> Path:
    """``--out`` as a folder a build may write: absent, empty, or an earlier build's (nothing in it but
    :data:`BUILD_FILES`). Anything else is bad input: a re-run replaces the build's files, and must never
    take a user's files with them (``--out ~`` deleted the home folder)."""
    path = Path(out)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "" if blocker == path else f" ({blocker} is a file)"
        raise BadInput(f"--out {out}: not a folder{where}")
    if not path.exists():
        return path
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot read the folder ({exc.strerror or type(exc).__name__})") from None
    foreign = [n for n in names if n not in BUILD_FILES]
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise BadInput(f"--out {out}: the folder holds files a model build did not write ({shown}); "
                       "give a new or empty folder, or an earlier build's")
    return path


def clear_build(out: Path) -> None:
    """Remove an earlier build's files from ``out`` (checked by :func:`artifact_folder`), nothing else."""
    artifact_folder(out)
    for name in sorted(BUILD_FILES):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
