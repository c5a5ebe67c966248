"""Artifact folder, Triton entry and registry publication; the TensorRT step's skip and its
optimisation profiles (the engine build itself runs only where TensorRT and a GPU exist)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from flows.common.errors import BadInput
from model_build import package, tensorrt
from model_build.prepare import InputSpec
from tests.unit.model_build_support import conv_detector


def _manifest(**over):
    doc = {f: None for f in package.MANIFEST_FIELDS} | {"deployable": True, "artifact": package.ARTIFACT}
    return doc | over


def test_folder_publish_is_idempotent_and_manifest_last(tmp_path):
    model = conv_detector(tmp_path / "det.onnx")
    folder = tmp_path / "out"
    package.write_folder(folder, model, "det", _manifest(sha256=package.sha256(model)))
    pbtxt = (folder / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in pbtxt and "max_batch_size: 32" in pbtxt
    assert 'name: "image" data_type: TYPE_FP32 dims: [ 3, -1, -1 ]' in pbtxt
    assert "max_queue_delay_microseconds: 50000" in pbtxt
    registry = f"file://{tmp_path / 'reg'}"
    first = package.publish(folder, registry, "det", "abc123")
    second = package.publish(folder, registry, "det", "abc123")
    assert first == second and first.endswith("/det/abc123/manifest.json")
    published = Path(first.removeprefix("file://"))
    assert json.loads(published.read_text())["deployable"] is True
    assert package.sha256(published.parent / "1" / "model.onnx") == package.sha256(model)
    with pytest.raises(BadInput, match="expected s3://"):
        package.publish(folder, "ftp://nowhere", "det", "abc123")
    with pytest.raises(ValueError, match="manifest lacks"):
        package.write_folder(tmp_path / "x", model, "det", {"artifact": "1/model.onnx"})



def test_out_is_never_a_folder_of_the_users_files(tmp_path):
    """``--out`` was emptied with rmtree on every build: ``--out ~`` deleted the home folder. Only an
    absent, empty or earlier build's folder is written, and a re-run removes only the build's files."""
    from model_build.sources import artifact_folder, clear_build

    model = conv_detector(tmp_path / "det.onnx")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.txt").write_text("important")
    with pytest.raises(BadInput, match=r"--out .*/mine: the folder holds files a model build did not write "
                                       r"\('sub', 'thesis.txt'\); give a new or empty folder"):
        artifact_folder(mine)
    with pytest.raises(BadInput):
        clear_build(mine)
    assert (mine / "thesis.txt").read_text() == "important" and (mine / "sub").is_dir()
    with pytest.raises(BadInput, match=r"--out .*/det.onnx: not a folder$"):
        artifact_folder(model)
    with pytest.raises(BadInput, match=r"--out .*/det.onnx/sub: not a folder \(.*/det.onnx is a file\)"):
        artifact_folder(model / "sub")
    build = tmp_path / "build"
    assert artifact_folder(build) == build and artifact_folder(tmp_path / "empty") == tmp_path / "empty"
    package.write_folder(build, model, "det", _manifest())
    (build / "model.plan").write_bytes(b"engine")
    assert artifact_folder(build) == build  # an earlier build's folder is replaced
    clear_build(build)
    assert build.is_dir() and not list(build.iterdir())


def test_the_flow_refuses_a_folder_of_the_users_files_before_building(tmp_path):
    from flows.common.runtime import run_flow
    from flows.model_build.flow import model_build
    from model_build.build import BuildSpec

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("important")
    spec = BuildSpec(source=str(tmp_path / "never-read.onnx"), calib="c.npz", eval="e.npz", precision="fp16",
                     out=str(mine))
    with pytest.raises(BadInput, match="holds files a model build did not write"):
        run_flow(model_build, spec=spec)
    assert (mine / "thesis.txt").read_text() == "important"


def test_the_flow_reports_a_bad_registry_setting_before_building(tmp_path, monkeypatch):
    """An unusable INFEROPS_S3__MODEL_REGISTRY was found only at publication, after the whole build."""
    from flows.common.runtime import run_flow
    from flows.common.settings import get_settings
    from flows.model_build.flow import model_build
    from model_build.build import BuildSpec

    monkeypatch.setenv("INFEROPS_S3__MODEL_REGISTRY", "registry")
    get_settings.cache_clear()
    spec = BuildSpec(source=str(tmp_path / "never-read.onnx"), calib="c.npz", eval="e.npz", precision="fp16",
                     out=str(tmp_path / "out"))
    try:
        with pytest.raises(BadInput, match="bad setting INFEROPS_S3__MODEL_REGISTRY"):
            run_flow(model_build, spec=spec)
    finally:
        monkeypatch.delenv("INFEROPS_S3__MODEL_REGISTRY")
        get_settings.cache_clear()

def test_fixed_batch_model_gets_no_dynamic_batching(tmp_path):
    model = onnx.load(str(conv_detector(tmp_path / "det.onnx")))
    for vi in [*model.graph.input, *model.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    pbtxt = package.triton_config("fixed", tmp_path / "fixed.onnx")
    assert "max_batch_size: 0" in pbtxt and "dynamic_batching" not in pbtxt
    assert 'dims: [ 1, 3, -1, -1 ]' in pbtxt


def test_model_names_are_registry_safe():
    assert package.model_name("s3://b/models/My Model v2.onnx") == "My-Model-v2"
    assert package.model_name("/x/../digits_cnn.onnx") == "digits_cnn"


def test_tensorrt_profiles_cover_dynamic_dims():
    spec = InputSpec("input_ids", None, (None, None))
    assert tensorrt.profile_shapes(spec, (64, 128), 32) == ((1, 1), (8, 128), (32, 128))
    image = InputSpec("image", None, (None, 3, 224, 224))
    assert tensorrt.profile_shapes(image, (4, 3, 224, 224), 32) == ((1, 3, 224, 224), (8, 3, 224, 224),
                                                                     (32, 3, 224, 224))


def test_tensorrt_step_says_why_it_is_skipped():
    ok, why = tensorrt.available()
    if ok:
        pytest.skip(f"TensorRT {why} is available here")
    assert "tensorrt is not installed" in why or "no NVIDIA GPU" in why


@pytest.mark.gpu
def test_tensorrt_engine_from_fp16_model(tmp_path):
    ok, why = tensorrt.available()
    if not ok:
        pytest.skip(why)
    from model_build import quantize
    from model_build.prepare import prepare

    prepared = prepare(conv_detector(tmp_path / "det.onnx"), tmp_path / "work")
    quantize.fp16(prepared.path, tmp_path / "fp16.onnx", block_overflow_ops=True)
    info = tensorrt.build_engine(tmp_path / "fp16.onnx", tmp_path / "model.plan", prepared.inputs,
                                 {"image": (4, 3, 32, 32)}, timing_cache_uri=f"file://{tmp_path}/timing.cache")
    assert info.path.stat().st_size > 0 and (tmp_path / "timing.cache").stat().st_size > 0
    assert info.tensorrt_version and info.gpu_name and info.compute_capability
