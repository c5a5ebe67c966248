"""The artifact folder, its manifest and Triton entry, and publication to the model registry.

Folder layout (also a Triton model-repository entry)::

    DIR/manifest.json     what was built, how, and how well (MANIFEST_FIELDS)
    DIR/config.pbtxt      Triton config: dynamic batching, max batch 32, 50 ms queue delay
    DIR/1/model.onnx      the deployable model (manifest "artifact")

The registry (``get_settings().s3.model_registry``) is ``s3://bucket/prefix`` or ``file://DIR``.
A build is published under ``<registry>/<name>/<version>/`` where the version is the first 12
hex digits of the artifact's sha256, so re-publishing the same build is idempotent. The manifest
is written last: a folder with a manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import onnx

from flows.common.errors import BackendUnavailable, BadInput

MANIFEST_FIELDS = ("artifact", "precision", "sha256", "source_sha256", "deployable", "calibration",
                   "excluded_nodes", "metrics", "tolerance", "tools")
ARTIFACT = "1/model.onnx"
MAX_BATCH = 32
QUEUE_DELAY_US = 50_000

_TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                 onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
                 onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.UINT8: "TYPE_UINT8",
                 onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.DOUBLE: "TYPE_FP64"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_name(source: str) -> str:
    """A Triton/registry-safe name from the source file name."""
    stem = Path(source.rstrip("/")).name.removesuffix(".onnx")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "model"


def tool_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    tools = {"python": platform.python_version()}
    for pkg in ("inferops", "onnx", "onnxruntime", "onnxconverter-common", "numpy", "tensorrt"):
        try:
            tools[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return tools


def triton_config(name: str, model_path: Path) -> str:
    """``config.pbtxt`` for the onnxruntime backend; dynamic batching when the batch is dynamic."""
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    ios = [vi for vi in model.graph.input if vi.name not in inits]
    batched = all(vi.type.tensor_type.shape.dim[:1] and not vi.type.tensor_type.shape.dim[0].dim_value
                  for vi in ios)

    def tensors(values) -> str:
        out = []
        for vi in values:
            t = vi.type.tensor_type
            dims = [d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim][1 if batched else 0:]
            out.append(f'  {{ name: "{vi.name}" data_type: {_TRITON_TYPES.get(t.elem_type, "TYPE_FP32")} '
                       f'dims: [ {", ".join(map(str, dims))} ] }}')
        return ",\n".join(out)

    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {MAX_BATCH if batched else 0}",
             f"input [\n{tensors(ios)}\n]", f"output [\n{tensors(model.graph.output)}\n]"]
    if batched:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}")
    return "\n".join(lines) + "\n"


def write_folder(out: Path, model_path: Path | None, name: str, manifest: dict[str, Any]) -> Path:
    """Write the artifact folder; without a model (nothing deployable) only the manifest."""
    missing = [f for f in MANIFEST_FIELDS if f not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}")
    out.mkdir(parents=True, exist_ok=True)
    if model_path is not None:
        target = out / ARTIFACT
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, target)
        (out / "config.pbtxt").write_text(triton_config(name, target))
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(out / "manifest.json")
    return out / "manifest.json"


def registry_client():
    from flows.common.s3 import s3_client
    from flows.common.settings import get_settings

    s3 = get_settings().s3
    return s3_client(s3.primary_region, endpoint_url=s3.endpoint_url, profile=s3.profile)


def _file_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def read_bytes(uri: str) -> bytes | None:
    """The object at ``uri`` (s3:// or file://), None when it does not exist."""
    if uri.startswith("s3://"):
        from flows.common.s3 import parse_s3_uri

        u = parse_s3_uri(uri)
        client = registry_client()
        try:
            return client.get_object(Bucket=u.bucket, Key=u.prefix)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    path = _file_path(uri)
    return path.read_bytes() if path.is_file() else None


def write_bytes(uri: str, data: bytes) -> None:
    if uri.startswith("s3://"):
        from flows.common.s3 import parse_s3_uri

        u = parse_s3_uri(uri)
        registry_client().put_object(Bucket=u.bucket, Key=u.prefix, Body=data)
        return
    path = _file_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def publish(folder: Path, registry: str, name: str, version: str) -> str:
    """Copy the artifact folder to ``<registry>/<name>/<version>/``; returns the manifest URI."""
    if not registry.startswith(("s3://", "file://")):
        raise BadInput(f"model registry {registry!r}: expected s3://BUCKET/PREFIX or file://DIR")
    base = f"{registry.rstrip('/')}/{name}/{version}"
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"),
                   key=lambda p: p.relative_to(folder).as_posix())
    if registry.startswith("file://"):
        dest = _file_path(base)
        for f in [*files, folder / "manifest.json"]:
            target = dest / f.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        return f"file://{dest.resolve() / 'manifest.json'}"
    from botocore.exceptions import BotoCoreError, ClientError

    from flows.common.s3 import parse_s3_uri

    u = parse_s3_uri(base)
    client = registry_client()
    try:
        for f in [*files, folder / "manifest.json"]:
            client.upload_file(str(f), u.bucket, u.key(f.relative_to(folder).as_posix()))
    except (BotoCoreError, ClientError) as exc:
        raise BackendUnavailable(f"cannot publish to {base}: {exc}") from exc
    return f"{base}/manifest.json"
