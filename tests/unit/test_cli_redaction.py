"""Redaction everywhere: one helper masks the userinfo of any URL of any scheme, and a secret planted
in every URL-bearing input of a set of commands appears in none of their outputs (stdout, stderr,
--json, logs, files written)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.common import cli
from flows.common.redact import redact, redact_obj

SECRET = "hunter2SECRET"
REPO = Path(cli.__file__).parents[2]
CAPTURE = REPO / "flows" / "drbd_health" / "captures" / "storage-a.json"
DEMO = REPO / "flows" / "idle_gpu" / "demo_data"


@pytest.mark.parametrize("text, expected", [
    ("https://user:pw@prom.example:9090/x", "https://***@prom.example:9090/x"),
    ("http://admin:hunter2@127.0.0.1:99999/bad-port", "http://***@127.0.0.1:99999/bad-port"),
    ("s3://AKIAEXAMPLE:wJalr/K7MDENG+bPxRfi@bucket/key", "s3://***@bucket/key"),
    ("ftp://user:password@files.example/pub", "ftp://***@files.example/pub"),
    ("postgres://app:p@ss@db.example:5432/ops", "postgres://***@db.example:5432/ops"),
    ("mongodb+srv://u:p@cluster0.example/db?x=1", "mongodb+srv://***@cluster0.example/db?x=1"),
    ("redis://:onlypassword@cache:6379/0", "redis://***@cache:6379/0"),
    ("http://token@[2001:db8::1]:80/", "http://***@[2001:db8::1]:80/"),
    ("error: 'https://u:p@h/x' and \"ftp://a:b@c\"", "error: 'https://***@h/x' and \"ftp://***@c\""),
    ("https://prom:9090/api/v1/query?query=up%20@%201609746000", None),  # no userinfo: untouched
    ("mail ops@example.com, see https://example.com/@team", None),
    ("http://host:8080/a@b", "http://***@b"),  # over-redacted, by design: it could be name:1234/pass@b
    ("s3://AKIAEXAMPLE:1234/wJalrXUtnFEMI@bucket/k", "s3://***@bucket/k"),
])
def test_redact(text, expected):
    assert redact(text) == (text if expected is None else expected)


def test_prom_redact_url_delegates_and_survives_bad_ports():
    from flows.common.prom import redact_url

    assert redact_url("http://u:pw@prom:99999999") == "http://***@prom:99999999"  # urlsplit's .port would raise
    assert redact_obj({"u": ["x https://a:b@h", 1], "https://c:d@k": None}) == {"u": ["x https://***@h", 1],
                                                                              "https://***@k": None}


_SAFE = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="\"'<>`@"),
                max_size=12)


@settings(max_examples=100, deadline=None)
@given(scheme=st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True),
       user=_SAFE.filter(lambda s: not any(c in s for c in ":/?#")),  # a user name: no delimiters
       before=_SAFE, after=_SAFE, host=st.from_regex(r"[a-z0-9.\-]{1,20}(:[0-9]{1,6})?", fullmatch=True),
       path=_SAFE, prefix=st.text(max_size=10), suffix=st.text(max_size=10))
def test_no_password_survives(scheme, user, before, after, host, path, prefix, suffix):
    """Any scheme; passwords with / : and unicode (and ? or # unless it looks like host:port/path?query);
    text around the URL: the password never survives."""
    pw = before + "ZQXJSECRET" + after
    if "ZQXJ" in before + after or (re.match(r"\d{1,5}(?:[/?#]|$)", pw) and any(c in pw for c in "?#")):
        return  # 'name:1234/...?...@': read as host:port/path?query (PromQL's @), documented in redact.py
    text = f"{prefix} {scheme}://{user}:{pw}@{host}/{path} {suffix}"
    assert "ZQXJSECRET" not in redact(text)


# ------------------------------------------------------------------ the grep over every output
@pytest.fixture
def offline(tmp_path, monkeypatch):
    from flows.common.settings import reload_settings

    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    reload_settings()
    yield tmp_path
    monkeypatch.undo()
    reload_settings()


def _commands(tmp: Path) -> list[tuple[list[str], dict[str, str]]]:
    s = SECRET
    return [
        (["idle-gpu", "plan", "--queue", f"s3://AKIAEXAMPLE:{s}@bucket/queue.yaml", "--capacity",
          str(DEMO / "capacity.json"), "--json"], {}),
        (["canary", "plan", "-n", "inference", "-d", "llm", "--image", "registry.example/llm:2",
          "--model-manifest-uri", f"https://deploy:{s}@registry.example/models/llm/manifest.json"], {}),
        (["drbd", "check", "--input", str(CAPTURE), "--json"],
         {"INFEROPS_PROMETHEUS__PUSHGATEWAY": f"ftp://pusher:{s}@127.0.0.1:99999/"}),
        (["drbd", "check", "--input", str(CAPTURE)],
         {"INFEROPS_PROMETHEUS__PUSHGATEWAY": f"http://pusher:{s}@127.0.0.1:9/"}),
        (["backup", "run", "--source", str(tmp), "--dest", f"s3://key:{s}@backups/logs", "--dest-region",
          "eu-west-1", "--json"], {}),
        (["backup", "restore", "--from", f"s3://key:{s}@backups/logs", "--to", str(tmp / "restore"), "--json"], {}),
        (["model", "build", f"https://dl:{s}@models.example/m.onnx", "--calib", "c.npz", "--eval", "e.npz",
          "--precision", "int8", "--out", str(tmp / "model")], {}),
        (["bootstrap", "run", "--inventory", f"https://git:{s}@git.example/inventory/hosts.yml"], {}),
        (["cost", "report", "--cur", str(REPO / "tests/data/cur/legacy.csv.gz"), "--out", str(tmp / "cost"),
          "--prometheus", f"ftp://user:{s}@127.0.0.1:99999"], {}),
        (["idle-gpu", "plan", "--queue", str(DEMO / "queue.yaml"), "--capacity", str(DEMO / "capacity.json"),
          "--timezone", "UTC", "--out", str(tmp / "plan" / "plan.json"), "--json"],
         {"INFEROPS_PROMETHEUS__URL": f"https://reader:{s}@127.0.0.1:9"}),
    ]


def test_a_planted_secret_appears_in_no_output(offline, capsys, monkeypatch, caplog):
    from flows.common.settings import get_settings

    tmp = offline
    (tmp / "app.log").write_text("x\n")
    caplog.set_level(logging.DEBUG)
    ran = 0
    for argv, env in _commands(tmp):
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            get_settings.cache_clear()  # loaded by the command: a bad setting is its one-line error
            with pytest.raises(SystemExit) as done:
                cli.main(argv)
            out, err = capsys.readouterr()
        assert done.value.code in (0, 1, 2, 3), (argv, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        assert SECRET not in out and SECRET not in err, (argv, out, err)
        if "--json" in argv:
            json.loads(out.strip().splitlines()[-1])  # JSON on stdout, error or not
        ran += 1
    assert SECRET not in caplog.text
    written = [p for p in tmp.rglob("*") if p.is_file()]
    assert written, "the commands wrote no reports to check"
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
    assert ran == len(_commands(tmp))


def test_a_planted_secret_in_a_real_process(run_cli, tmp_path):
    """The console script, its log handler and its --json, in real processes."""
    r = run_cli("drbd", "check", "--input", str(CAPTURE),
                env={"INFEROPS_PROMETHEUS__PUSHGATEWAY": f"http://pusher:{SECRET}@127.0.0.1:9/",
                     "INFEROPS_STATE_DIR": str(tmp_path / "state")})
    assert r.returncode == 0 and "pushgateway http://***@127.0.0.1:9/" in r.stderr  # logged, redacted
    r2 = run_cli("canary", "plan", "-n", "inference", "-d", "llm", "--image", "registry.example/llm:2",
                 "--model-manifest-uri", f"https://deploy:{SECRET}@registry.example/m.json")
    assert r2.returncode == 0 and "https://***@registry.example/m.json" in r2.stdout
    for res in (r, r2):
        assert SECRET not in res.stdout + res.stderr


def test_offline_artifacts_and_events_are_redacted(capsys):
    from flows.common import artifacts, runtime

    runtime.log_to_stderr()
    runtime.log.setLevel(logging.DEBUG)
    try:
        with runtime.offline():
            artifacts.markdown("k", f"see http://u:{SECRET}@h/x", description=f"ftp://a:{SECRET}@b")
            artifacts.table("t", [{"url": f"s3://k:{SECRET}@b/p", "n": 1, "nested": {"u": f"https://x:{SECRET}@y"}}])
            artifacts.emit("inferops.test", f"inferops.test.https://a:{SECRET}@h", {"u": f"https://a:{SECRET}@h"})
        assert artifacts._cell({"u": f"https://x:{SECRET}@y"}) == '{"u": "https://***@y"}'
    finally:
        runtime.log.setLevel(logging.INFO)
    assert SECRET not in capsys.readouterr().err
