"""Preparation for third-party ONNX models: load (external data too), upgrade the opset, infer
shapes, optimise. The prepared FP32 model is the reference every candidate is compared with, and
the model every candidate is built from, so tensor names match between FP32 and QDQ.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from flows.common.errors import BackendUnavailable, BadInput
from model_build.sources import local_model

log = logging.getLogger("inferops.model_build")

TARGET_OPSET = 17
MIN_OPSET = 13  # per-channel QDQ needs DequantizeLinear with an axis
SOFTMAX_FLOOR = 50.0  # logits this far under their row's maximum weigh e^-50 (2e-22): nothing, in float
_TWO_GB = 2**31 - 2**24


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None = dynamic (symbolic or unknown)


@dataclass
class PreparedModel:
    path: Path
    inputs: list[InputSpec]
    outputs: list[str]
    source_opset: int
    opset: int
    source_sha256: str
    steps: list[str] = field(default_factory=list)  # what preparation did, for the manifest

    @property
    def batch_dynamic(self) -> bool:
        return all(s.shape and s.shape[0] is None for s in self.inputs)


def fetch(src: str, workdir: Path) -> Path:
    """A local path for ``src`` (a file path or ``s3://bucket/key``; external data files of an S3
    model must sit beside it under the same prefix)."""
    path = local_model(src)
    if path is not None:
        return path
    from botocore.exceptions import BotoCoreError

    from flows.common.s3 import parse_s3_uri
    from model_build.package import registry_client

    uri = parse_s3_uri(src)
    client = registry_client()
    local = workdir / "source" / Path(uri.prefix).name
    local.parent.mkdir(parents=True, exist_ok=True)
    parent = uri.prefix.rsplit("/", 1)[0] + "/" if "/" in uri.prefix else ""
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=parent):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(parent):]
                if "/" not in rel:  # the model and its sibling external-data files
                    client.download_file(uri.bucket, obj["Key"], str(local.parent / rel))
    except client.exceptions.ClientError as exc:
        raise BadInput(f"cannot read model {src}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, endpoint unreachable: the backend's trouble, not a bug
        raise BackendUnavailable(f"cannot read model {src}: S3 unreachable: {exc}") from exc
    if not local.is_file():
        raise BadInput(f"cannot read model {src}: no such object")
    return local


def load(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise BadInput(f"cannot read model {path}: {type(exc).__name__}: {exc}") from exc
    if not model.graph.node:
        raise BadInput(f"cannot read model {path}: not an ONNX model (empty graph)")
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Upgrade to opset 17 (or at least 13); models already at ≥13 are left alone."""
    source = default_opset(model)
    if source >= MIN_OPSET:
        return model, []
    for target in (TARGET_OPSET, MIN_OPSET):
        try:
            upgraded = version_converter.convert_version(model, target)
            onnx.checker.check_model(upgraded)
            return upgraded, [f"opset {source}->{target}"]
        except Exception as exc:
            log.warning("opset upgrade %d->%d failed: %s", source, target, exc)
    raise BadInput(f"cannot upgrade model from opset {source} to >= {MIN_OPSET} (needed for per-channel QDQ)")


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Save, with external data when the model is too large for one protobuf."""
    large = model.ByteSize() > _TWO_GB
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)
    return path


def drop_value_info(path: Path) -> None:
    """Remove a model's intermediate shape annotations (``graph.value_info``); onnxruntime infers
    shapes itself on load.

    With them, onnxruntime (1.32, CPU) sees statically equal shapes and fuses ``Add`` +
    ``LayerNormalization`` into ``SkipLayerNormalization``, whose kernel is about 4x slower than the
    two ops it replaces: MiniLM's FP32 model as exported ran 11% faster than the same model with the
    annotations shape inference adds, and its INT8 model 25% faster (at batch 32, on an AMX host).
    The prepared reference and every candidate then run as the user's own export would."""
    model = onnx.load(str(path), load_external_data=False)
    if model.graph.value_info:
        del model.graph.value_info[:]
        onnx.save_model(model, str(path))  # external data, if any, stays where it is, referenced


def _infer_and_optimise(src: Path, dst: Path) -> str:
    """ORT's quantisation pre-processing (symbolic shape inference + graph optimisation + ONNX
    shape inference), falling back step by step when symbolic inference cannot handle the model."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = (
        ("symbolic shape inference + optimisation", {}),
        ("onnx shape inference + optimisation (symbolic failed)", {"skip_symbolic_shape": True}),
        ("onnx shape inference only (optimisation failed)",
         {"skip_symbolic_shape": True, "skip_optimization": True}),
    )
    for what, kwargs in attempts:
        try:
            quant_pre_process(str(src), str(dst), auto_merge=True, **kwargs)
            return what
        except Exception as exc:
            log.warning("pre-processing (%s) failed: %s", what, " ".join(str(exc).split())[:300])
    onnx.save_model(onnx.shape_inference.infer_shapes(load(src)), str(dst))
    return "no pre-processing (every inference attempt failed)"


_NP_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT64: np.int64,
             onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
             onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_}


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:  # old exporters list weights as inputs
            continue
        t = vi.type.tensor_type
        if t.elem_type not in _NP_TYPES:
            raise BadInput(f"model input {vi.name!r} has an unsupported type "
                           f"{onnx.TensorProto.DataType.Name(t.elem_type)}")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in t.shape.dim)
        specs.append(InputSpec(vi.name, np.dtype(_NP_TYPES[t.elem_type]), dims))
    return specs


def floor_softmax_logits(model: onnx.ModelProto, depth: float = SOFTMAX_FLOOR) -> int:
    """Raise each last-axis ``Softmax``'s logits that lie more than ``depth`` under their row's
    maximum to that floor (``Max(x, ReduceMax(x) - depth)``); returns how many were rewritten.

    Attention masks add the dtype's lowest value (or -10000, or -inf) to the positions a row may not
    see, and onnxruntime's CPU Softmax (MLAS) computes the exponent of every such logit on a slow
    path (it underflows): with 5 of 37 positions masked, a [32, 12, 37, 37] Softmax took 2.1-2.7 ms
    against 0.5 unmasked, and 1.2 ms floored (1 thread, AMX host). The result does not move in
    float: a floored logit weighs at most e^-50 (2e-22) of the row's largest where it weighed less,
    so each probability moves by less than 2e-22, and rows that were NaN (all -inf, or a NaN)
    stay NaN. Needs the input's element type (shape inference's annotations), opset 13 or later."""
    from onnx import helper, numpy_helper

    graph = model.graph
    opset = default_opset(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    nodes, done, taken = [], 0, set()
    for i, node in enumerate(graph.node):
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        dtype = _NP_TYPES.get(types.get(node.input[0], 0)) if node.input else None
        if (node.op_type != "Softmax" or node.domain not in ("", "ai.onnx") or axis != -1 or opset < MIN_OPSET
                or dtype not in (np.float16, np.float32, np.float64)):
            nodes.append(node)
            continue
        x, name = node.input[0], f"{node.name or f'softmax{i}'}/LogitFloor"
        if name in taken:  # node names need not be unique; the new tensors' names must be
            name = f"{name}{i}"
        taken.add(name)
        graph.initializer.extend([numpy_helper.from_array(np.array(depth, dtype), f"{name}/depth"),
                                  numpy_helper.from_array(np.array([-1], np.int64), f"{name}/axes")])
        # the row maxima without their trailing 1: onnxruntime subtracts a scalar from a [..., 1]
        # tensor element by element (212 us for [32, 12, 37, 1], 9 us for [32, 12, 37])
        if opset >= 18:  # ReduceMax takes its axes as an input from opset 18
            top = helper.make_node("ReduceMax", [x, f"{name}/axes"], [f"{name}/max"], name=f"{name}/Max", keepdims=0)
        else:
            top = helper.make_node("ReduceMax", [x], [f"{name}/max"], name=f"{name}/Max", axes=[-1], keepdims=0)
        nodes += [top, helper.make_node("Sub", [f"{name}/max", f"{name}/depth"], [f"{name}/floor"], name=f"{name}/Sub"),
                  helper.make_node("Unsqueeze", [f"{name}/floor", f"{name}/axes"], [f"{name}/floor_row"],
                                   name=f"{name}/Unsqueeze"),
                  helper.make_node("Max", [x, f"{name}/floor_row"], [f"{name}/logits"], name=name)]
        node.input[0] = f"{name}/logits"
        nodes.append(node)
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def prepare(src: str | Path, workdir: Path | None = None, *, softmax_floor: bool = False) -> PreparedModel:
    """Load ``src`` and write the prepared FP32 reference model to ``workdir/fp32.onnx``.
    ``softmax_floor`` (for onnxruntime on CPU; TensorRT pattern-matches attention as exported)
    floors every last-axis Softmax's logits (:func:`floor_softmax_logits`)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="inferops-model-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from model_build.package import sha256

    local = fetch(str(src), workdir)
    model = load(local)
    source_opset = default_opset(model)
    model, steps = upgrade_opset(model)
    staged = save(model, workdir / "staged.onnx")
    del model
    out = workdir / "fp32.onnx"
    steps.append(_infer_and_optimise(staged, out))
    if softmax_floor:
        model = load(out)
        if floored := floor_softmax_logits(model):
            del model.graph.value_info[:]  # read by the floor; dropped here rather than rewritten below
            save(model, out)
            steps.append(f"softmax logits floored at the row maximum - {SOFTMAX_FLOOR:g} ({floored} Softmax)")
        del model
    drop_value_info(out)
    prepared = load(out)
    return PreparedModel(path=out, inputs=input_specs(prepared),
                         outputs=[o.name for o in prepared.graph.output],
                         source_opset=source_opset, opset=default_opset(prepared),
                         source_sha256=sha256(local), steps=steps)
