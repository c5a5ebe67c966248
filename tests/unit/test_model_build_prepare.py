"""Preparation of models it has never seen: old opsets, external data, dynamic H/W, bad files;
and the data-set checks that give exit-2 errors, hostile data files included (issue 16)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.common.errors import BadInput
from model_build.calibrate import DatasetReader, load_dataset
from model_build.evaluate import load_labels
from model_build.prepare import InputSpec, input_specs, prepare
from tests.unit.model_build_support import conv_detector, normal, npz, old_opset_mlp


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_old_opset_is_upgraded_and_computes_the_same(tmp_path):
    src = old_opset_mlp(tmp_path / "old.onnx", opset=9)
    prepared = prepare(src, tmp_path / "work")
    assert prepared.source_opset == 9 and prepared.opset >= 13
    assert any(s.startswith("opset 9->") for s in prepared.steps)
    assert [s.name for s in prepared.inputs] == ["x"]  # weights listed as inputs are not model inputs
    x = normal(5, 64)
    np.testing.assert_allclose(_run(prepared.path, {"x": x})[0], _run(src, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_dynamic_height_and_width_survive(tmp_path):
    prepared = prepare(conv_detector(tmp_path / "det.onnx"), tmp_path / "work")
    assert prepared.inputs[0].shape == (None, 3, None, None) and prepared.batch_dynamic
    for hw in (16, 40):
        boxes, scores = _run(prepared.path, {"image": normal(2, 3, hw, hw)})
        assert boxes.shape == (2, 4, hw // 2, hw // 2) and scores.shape == (2, 3, hw // 2, hw // 2)


def test_external_data_is_loaded(tmp_path):
    src = conv_detector(tmp_path / "det.onnx")
    model = onnx.load(str(src))
    ext = tmp_path / "ext" / "det_ext.onnx"
    ext.parent.mkdir()
    onnx.save_model(model, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (ext.parent / "weights.bin").stat().st_size > 10_000
    prepared = prepare(ext, tmp_path / "work")
    x = normal(1, 3, 12, 12)
    np.testing.assert_allclose(_run(prepared.path, {"image": x})[1], _run(src, {"image": x})[1], rtol=1e-5)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all \x00\x01", None])
def test_unreadable_model_is_bad_input(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput, match="cannot read model"):
        prepare(path, tmp_path / "work")



@pytest.mark.parametrize("src", ["s3://models-bucket", "s3://models-bucket/", "s3://models-bucket/llm/"])
def test_an_s3_uri_that_names_no_object_is_bad_input_before_any_listing(tmp_path, monkeypatch, src):
    """``s3://bucket`` listed the bucket and downloaded every top-level object, then said 'no such object'."""
    import model_build.package

    monkeypatch.setattr(model_build.package, "registry_client", lambda: pytest.fail("S3 was asked"))
    with pytest.raises(BadInput, match=f"cannot read model {src}: names no object"):
        prepare(src, tmp_path / "work")


def test_s3_unreachable_for_the_model_is_a_backend_error_not_a_bug(tmp_path, monkeypatch):
    """No credentials (or no endpoint) was ``internal error: NoCredentialsError``, exit 1."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    import model_build.package
    from flows.common.errors import BackendUnavailable

    for exc in (NoCredentialsError(), EndpointConnectionError(endpoint_url="http://127.0.0.1:9")):
        class Client:
            class exceptions:
                from botocore.exceptions import ClientError

            def get_paginator(self, name, exc=exc):
                raise exc

        monkeypatch.setattr(model_build.package, "registry_client", Client)
        with pytest.raises(BackendUnavailable, match="cannot read model s3://models-bucket/llm.onnx: S3 unreachable"):
            prepare("s3://models-bucket/llm.onnx", tmp_path / "work")

def test_dataset_checks_name_the_problem(tmp_path):
    inputs = input_specs(onnx.load(str(conv_detector(tmp_path / "det.onnx"))))
    ok = load_dataset(npz(tmp_path / "ok.npz", image=normal(4, 3, 8, 8)), inputs)
    assert ok["image"].shape == (4, 3, 8, 8)
    cases = {
        "keys": (npz(tmp_path / "k.npz", pixels=normal(4, 3, 8, 8)), r"keys \['pixels'\] do not match .*\['image'\]"),
        "dtype": (npz(tmp_path / "d.npz", image=normal(4, 3, 8, 8).astype(np.float64)), "dtype float64.*float32"),
        "rank": (npz(tmp_path / "r.npz", image=normal(3, 8, 8)), "expects rank 4"),
        "dims": (npz(tmp_path / "s.npz", image=normal(4, 1, 8, 8)), r"expects \[\?,3,\?,\?\]"),
    }
    for path, message in cases.values():
        with pytest.raises(BadInput, match=message):
            load_dataset(path, inputs)
    with pytest.raises(BadInput, match="no such file"):
        load_dataset(str(tmp_path / "missing.npz"), inputs)


def test_npy_directory_and_entrypoint_sources(tmp_path):
    inputs = input_specs(onnx.load(str(old_opset_mlp(tmp_path / "old.onnx"))))
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib" / "x.npy", normal(10, 64))
    data = load_dataset(tmp_path / "calib", inputs)
    assert isinstance(data["x"], np.memmap) and data["x"].shape == (10, 64)
    from_loader = load_dataset("tests.unit.test_model_build_prepare:loader", inputs)
    assert from_loader["x"].shape == (6, 64)


def loader():
    return {"x": normal(6, 64, seed=3)}


def test_strided_reader_covers_every_sample_once():
    data = {"x": np.arange(40, dtype=np.float32).reshape(20, 2)}
    reader = DatasetReader(data, batch_size=3)  # 7 batches, the last one of 2 samples
    assert len(reader) == 7 and reader.stride(4) == 1  # 7 is prime: stride 1 keeps every batch
    reader = DatasetReader(data, batch_size=2)  # 10 batches
    stride = reader.stride(4)
    assert stride == 2
    seen = []
    for start in range(0, len(reader), stride):
        reader.set_range(start, start + stride)
        while (feed := reader.get_next()) is not None:
            seen.append(feed["x"])
    np.testing.assert_array_equal(np.concatenate(seen), data["x"])


def broken_loader():
    raise KeyError("features")


def test_hostile_data_files_are_bad_input(tmp_path):
    """Issue 16: whatever is wrong inside a data file, the error is BadInput naming the file."""
    inputs = input_specs(onnx.load(str(conv_detector(tmp_path / "det.onnx"))))
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, image=np.random.default_rng(0).random((64, 3, 8, 8), np.float32))
    raw = bytearray(corrupt.read_bytes())
    raw[300:340] = b"\xff" * 40
    corrupt.write_bytes(bytes(raw))
    np.save(tmp_path / "plain.npy", normal(4, 3, 8, 8))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "image.npy").write_bytes(b"\x93NUMPY garbage")
    cases = {
        corrupt: r"member 'image' is unreadable \(zlib.error: Error -3",
        tmp_path / "plain.npy": "a single .npy array, not an NPZ archive",
        tmp_path / "empty.npz": r"unreadable NPZ \(EOFError",
        tmp_path / "dir": r"unreadable .npy file image.npy",
        npz(tmp_path / "nan.npz", image=np.full((4, 3, 8, 8), np.nan, np.float32)): "holds NaN or Inf",
        "tests.unit.test_model_build_prepare:broken_loader": r"the loader failed \(KeyError",
    }
    for source, message in cases.items():
        with pytest.raises(BadInput, match=message) as err:
            load_dataset(str(source), inputs)
        assert str(source) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BadInput, match=r"labels .*empty.npz: unreadable \(EOFError"):
        load_labels(tmp_path / "empty.npz")
    with pytest.raises(BadInput, match="expected a .npy array of integer class ids"):
        load_labels(tmp_path / "plain.npy")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".npz", ".npy"]))
def test_any_bytes_as_a_data_file_are_bad_input_or_a_dataset(tmp_path, data, suffix):
    inputs = [InputSpec("image", np.dtype(np.float32), (None, 3, None, None))]
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_dataset(str(path), inputs)
    except BadInput as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert set(loaded) == {"image"}


def _masked_attention(path, opset: int, dtype=np.float32, axis: int = -1):
    """scores [N, 4, 6] + an additive mask [N, 1, 6] (0 or a very negative value) -> Softmax."""
    from onnx import helper

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Add", ["scores", "mask"], ["logits"], name="add"),
             helper.make_node("Softmax", ["logits"], ["p"], name="softmax", axis=axis)]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("scores", elem, ["N", 4, 6]),
                                              helper.make_tensor_value_info("mask", elem, ["N", 1, 6])],
                              [helper.make_tensor_value_info("p", elem, ["N", 4, 6])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), str(path))
    return path


@pytest.mark.parametrize("opset,dtype", [(17, np.float32), (18, np.float32), (17, np.float64)])
def test_softmax_logits_are_floored_and_the_probabilities_do_not_move(tmp_path, opset, dtype):
    """For onnxruntime the logits of each last-axis Softmax are floored 50 under their row's maximum
    (masked positions were on onnxruntime's slow exponent path): the probabilities move by less than
    2e-22 whatever the mask holds (the dtype's lowest value, -10000, -inf), and rows that were NaN
    (all masked with -inf) stay NaN."""
    src = _masked_attention(tmp_path / "attn.onnx", opset, dtype)
    prepared = prepare(src, tmp_path / "work", softmax_floor=True)
    assert any("softmax logits floored" in s and "(1 Softmax)" in s for s in prepared.steps)
    model = onnx.load(str(prepared.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops[ops.index("Softmax") - 4:ops.index("Softmax")] == ["ReduceMax", "Sub", "Unsqueeze", "Max"]
    assert not model.graph.value_info
    rng = np.random.default_rng(0)
    scores = (rng.normal(0, 8, (5, 4, 6))).astype(dtype)
    mask = np.zeros((5, 1, 6), dtype)
    mask[0, 0, 4:] = np.finfo(dtype).min  # padding, as transformers exports it
    mask[1, 0, 1:] = -10000.0
    mask[2, 0, :] = -np.inf  # nothing to attend to: NaN, before and after
    mask[3, 0, ::2] = -np.inf
    feed = {"scores": scores, "mask": mask}
    want, got = _run(src, feed)[0], _run(prepared.path, feed)[0]
    assert np.isnan(want[2]).all() and np.isnan(got[2]).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-22)
    assert (got[[0, 1, 3, 4]] >= 0).all()


def test_softmax_floor_only_where_asked_and_on_the_last_axis(tmp_path):
    plain = prepare(_masked_attention(tmp_path / "a.onnx", 17), tmp_path / "plain")
    across = prepare(_masked_attention(tmp_path / "b.onnx", 17, axis=1), tmp_path / "across", softmax_floor=True)
    for prepared in (plain, across):
        assert "ReduceMax" not in {n.op_type for n in onnx.load(str(prepared.path)).graph.node}
        assert not any("softmax" in s for s in prepared.steps)


def test_softmax_floor_names_stay_unique_when_node_names_repeat():
    """Two Softmax nodes with one name (the ONNX checker allows it; onnxruntime does not load it):
    each floor still gets tensors of its own."""
    from onnx import helper

    from model_build.prepare import floor_softmax_logits

    nodes = [helper.make_node("Softmax", ["a"], ["pa"], name="softmax", axis=-1),
             helper.make_node("Softmax", ["b"], ["pb"], name="softmax", axis=-1)]
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, f, [2, 5]) for n in "ab"],
                              [helper.make_tensor_value_info(n, f, [2, 5]) for n in ("pa", "pb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert floor_softmax_logits(model) == 2
    onnx.checker.check_model(model, full_check=True)
    names = [o for n in model.graph.node for o in n.output] + [i.name for i in model.graph.initializer]
    assert len(names) == len(set(names)) == 2 + 2 * 4 + 2 * 2


@pytest.fixture
def no_aws_credentials(tmp_path, monkeypatch):
    """No AWS credentials anywhere, and an S3 endpoint on loopback that refuses connections."""
    import socket

    from flows.common.settings import get_settings

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "INFEROPS_S3__ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with socket.socket() as s:  # a free loopback port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_missing_credentials_are_not_retried_as_transient(tmp_path, no_aws_credentials, monkeypatch):
    """With no credentials, the prepare-model task retried NoCredentialsError for 2 + 10 + 30 s."""
    import time

    import flows.common.runtime
    from flows.common.errors import BackendUnavailable
    from flows.model_build.flow import prepare_model
    from model_build.build import Target

    slept: list[float] = []
    monkeypatch.setattr(flows.common.runtime.time, "sleep", slept.append)
    start = time.monotonic()
    # inline, as the CLI runs it (its retries are runtime's; without offline(), once Prefect is imported by an
    # earlier test, the task would start Prefect's ephemeral server)
    with flows.common.runtime.offline(), \
            pytest.raises(BackendUnavailable, match="cannot read model s3://models-bucket/llm.onnx: .*credentials"):
        prepare_model("s3://models-bucket/llm.onnx", tmp_path / "work", Target.onnxruntime)
    assert slept == [] and time.monotonic() - start < 10


def test_io_retry_rule_refuses_credential_errors_and_keeps_transient_ones():
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    from flows.common.errors import BackendUnavailable, BadInput
    from flows.common.runtime import offline_retry_ok
    from flows.model_build.flow import prepare_model, publish

    def client_error(code: str, status: int = 403) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    def wrapped(exc: Exception) -> BackendUnavailable:  # as package.publish and prepare.fetch raise them
        try:
            raise BackendUnavailable(f"cannot publish to s3://models/m/1: {exc}") from exc
        except BackendUnavailable as err:
            return err

    permanent = [NoCredentialsError(), PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
                 *(client_error(c) for c in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                             "ExpiredToken"))]
    transient = [EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), client_error("SlowDown", 503),
                 client_error("InternalError", 500), ConnectionRefusedError(111, "refused")]
    for task in (prepare_model, publish):
        for exc in permanent:
            assert not offline_retry_ok(task, exc), exc
            assert not offline_retry_ok(task, wrapped(exc)), exc
        for exc in transient:
            assert offline_retry_ok(task, exc), exc
            assert offline_retry_ok(task, wrapped(exc)), exc
        assert not offline_retry_ok(task, BadInput("cannot read model x: names no object"))
