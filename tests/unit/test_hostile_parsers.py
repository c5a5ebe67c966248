"""Property tests on the parsers behind the CLIs: every hostile input is either parsed or refused with the
parser's own one-line error (BadInput / ParseError), never anything else."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.common.documents import load_document, parse_document
from flows.common.errors import BadInput
from tests.unit.strategies_hostile import HOSTILE_SCALARS, HOSTILE_VALUES, dump, numbers_made_huge

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "60"))
QUICK = settings(max_examples=EXAMPLES, deadline=None)


def _one_line(exc: Exception) -> None:
    assert str(exc) and "\n" not in str(exc)


# ------------------------------------------------------------------ YAML / JSON documents
@QUICK
@given(st.one_of(st.text(max_size=300), st.builds(dump, HOSTILE_VALUES, st.booleans()),
                 st.sampled_from(["[" * 5000, "- " * 3000 + "x", "a: &a [*a]\n", "x: .nan\n", "[1e400]",
                                  '{"a": ' + "9" * 5000 + "}", "!!python/object:os.system {}\n",
                                  "a: !!binary AAAA\n", "\ufeff{}", "{'single': 'quotes'}"])))
def test_documents_parse_or_refuse(text):
    try:
        parse_document(text, "doc")
    except BadInput as exc:
        _one_line(exc)
        assert str(exc).startswith("doc")


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None)
@given(st.binary(max_size=300))
def test_documents_from_hostile_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("doc") / "in.yaml"
    p.write_bytes(data)
    try:
        load_document(p, "job queue")
    except BadInput as exc:
        _one_line(exc)
        assert f"job queue {p}" in str(exc)


def test_documents_refuse_directories_missing_files_and_python_tags(tmp_path):
    for path, needle in ((tmp_path, "Is a directory"), (tmp_path / "nope.yaml", "No such file")):
        with pytest.raises(BadInput, match=needle):
            load_document(path, "capacity snapshot")
    with pytest.raises(BadInput, match="not valid YAML/JSON"):  # safe_load: no code from a queue file
        parse_document("!!python/object/apply:os.system ['id']\n", "job queue q.yaml")


# ------------------------------------------------------------------ idle-gpu queue and timestamps
@QUICK
@given(st.lists(st.dictionaries(st.sampled_from(["name", "image", "command", "gpus", "estimated_hours",
                                                 "priority", "deadline", "annotations", "team", "x"]),
                                HOSTILE_VALUES, max_size=6), max_size=4), st.booleans())
def test_queue_rows_are_accepted_or_rejected_never_lost(jobs, as_json):
    from flows.idle_gpu.queue import parse_queue

    try:
        q = parse_queue(dump({"jobs": jobs}, as_json), "q")
    except BadInput as exc:
        _one_line(exc)
        return
    assert len(q.jobs) + len(q.rejected) == len(jobs)  # every row accounted for
    for r in q.rejected:
        assert r.reason and "\n" not in r.reason


@QUICK
@given(start=st.one_of(st.text(max_size=25), st.sampled_from(["01:00", "24:00", "9999-12-31T23:59:59+00:00",
                                                               "0001-01-01T00:00:00+00:00", "2026-02-30T01:00"])),
       end=st.sampled_from(["07:00", "2026-11-28T07:00:00+00:00", "9999-12-31T23:59:59-12:00"]),
       tz=st.one_of(st.sampled_from(["UTC", "local", "Europe/Paris", "Etc/GMT+14"]), st.text(max_size=15)),
       year=st.sampled_from([1, 1969, 2026, 9000, 9999]))
def test_windows_resolve_or_refuse(start, end, tz, year):
    from flows.idle_gpu.window import resolve_window

    now = datetime(year, 12, 31, 23, 0, tzinfo=UTC)
    try:
        ws, we = resolve_window(start, end, tz, now)
    except BadInput as exc:
        _one_line(exc)
        return
    assert ws < we


# ------------------------------------------------------------------ DRBD, every format, absurd numbers
@QUICK
@given(st.sampled_from(sorted((__import__("pathlib").Path(__file__).parents[1] / "data" / "drbd").iterdir())),
       st.sampled_from([19, 20, 21, 100, 4299, 4301, 10000]), st.booleans())
def test_drbd_parsers_bound_numbers(path, digits, negative):
    from flows.drbd_health.parse import ParseError, parse

    text = numbers_made_huge(path.read_text(), digits)
    if negative:
        text = text.replace(" 9", " -9").replace(":9", ":-9")
    try:
        _, resources = parse(text)
    except ParseError as exc:
        _one_line(exc)
        return
    for r in resources:  # whatever was accepted is a 64-bit number, as DRBD's own counters are
        for c in r.connections:
            for p in c.peer_devices:
                assert p.out_of_sync_kib is None or abs(p.out_of_sync_kib) < 2**64


# ------------------------------------------------------------------ Ansible extra vars
@QUICK
@given(st.one_of(HOSTILE_VALUES, st.dictionaries(
    st.sampled_from(["nvidia_driver_branch", "nvidia_driver_package_type", "bootstrap_apply_runtime",
                     "common_apt_update_cache", "mps_enabled", "ansible_become_exe", "x"]), HOSTILE_SCALARS,
    max_size=4)))
def test_extra_vars_are_typed_or_refused(data):
    from flows.host_bootstrap.models import ExtraVars, parse_extra_vars

    try:
        ev = parse_extra_vars(data, source="--extra-vars v.yml")
    except BadInput as exc:
        _one_line(exc)
        assert str(exc).startswith("--extra-vars v.yml")
        return
    assert isinstance(ev, ExtraVars)
    for v in ev.model_dump(exclude_none=True).values():  # nothing untyped reaches Ansible
        assert isinstance(v, bool | int | str | float | list)


# ------------------------------------------------------------------ settings from the environment
@QUICK
@given(name=st.sampled_from(["INFEROPS_SSH__PORT", "INFEROPS_SSH__CONNECT_TIMEOUT_S", "INFEROPS_STATE_DIR",
                             "INFEROPS_PROMETHEUS__TIMEOUT_S", "INFEROPS_PROMETHEUS", "INFEROPS_S3",
                             "INFEROPS_INVENTORY"]),
       value=st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               max_size=30).map(lambda s: "zq" + s),  # distinctive: never in our own words
                       st.sampled_from(["9" * 5000, "nan", "1e400", "{", "[]", '{"url": 5}', "-1"])))
def test_settings_load_or_name_the_setting(name, value):
    from flows.common.settings import load_settings

    old = os.environ.get(name)
    os.environ[name] = value
    try:
        load_settings()
    except BadInput as exc:
        _one_line(exc)
        assert "INFEROPS_" in str(exc)
        assert not value.startswith("zq") or value not in str(exc)  # the value is never echoed
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@settings(max_examples=max(20, EXAMPLES // 3), deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_config_file_loads_or_names_the_file(tmp_path_factory, content):
    from flows.common.settings import load_settings

    cfg = tmp_path_factory.mktemp("cfg") / "inferops.toml"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    old = os.environ.get("INFEROPS_CONFIG")
    os.environ["INFEROPS_CONFIG"] = str(cfg)
    try:
        load_settings()
    except BadInput as exc:
        _one_line(exc)
        assert str(cfg) in str(exc) or "INFEROPS_" in str(exc)
    finally:
        if old is None:
            os.environ.pop("INFEROPS_CONFIG", None)
        else:
            os.environ["INFEROPS_CONFIG"] = old


# ------------------------------------------------------------------ kubeconfig (the official client's parser)
@settings(max_examples=max(20, EXAMPLES // 3), deadline=None)
@given(st.one_of(st.binary(max_size=200), st.builds(dump, HOSTILE_VALUES, st.booleans()).map(str.encode),
                 st.sampled_from([b"{{{", b"42", b"[]", b"", b"clusters: 5", b"contexts: [1]\ncurrent-context: 1",
                                  b"\xfd\xff garbage"])))
def test_kubeconfig_garbage_is_no_kubernetes_config_never_a_bug(tmp_path_factory, data):
    """A binary or malformed KUBECONFIG was 'internal error: UnicodeDecodeError' / 'ParserError' (exit 1)."""
    from flows.common.errors import BackendUnavailable
    from flows.common.kube import api_client

    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_bytes(data)
    old = os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # no in-cluster fallback
    try:
        api_client(str(path))
    except BackendUnavailable as exc:
        _one_line(exc)
        assert str(exc).startswith(f"no Kubernetes config: kubeconfig {path}: ")
    finally:
        if old is not None:
            os.environ["KUBERNETES_SERVICE_HOST"] = old


def test_kubeconfig_a_folder_or_missing_names_the_variable(tmp_path, monkeypatch):
    from flows.common.errors import BackendUnavailable
    from flows.common.kube import api_client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for path, why in ((tmp_path, "Is a directory"), (tmp_path / "binary", "not UTF-8 text")):
        if path.name == "binary":
            path.write_bytes(bytes(range(256)))
        monkeypatch.setenv("KUBECONFIG", str(path))
        with pytest.raises(BackendUnavailable, match=f"^no Kubernetes config: kubeconfig {path} \\(KUBECONFIG\\): {why}$"):
            api_client()
