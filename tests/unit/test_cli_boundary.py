"""One error boundary for every command (flows.common.cli): typed one-line errors and exit codes, the
Nagios contract of ``drbd``, JSON on stdout with ``--json``; plus the issue-16 regressions in this scope."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import typer

from flows.common import cli
from flows.common.errors import BadInput

DEMO = Path(cli.__file__).parents[1] / "idle_gpu" / "demo_data"
DATA = Path(__file__).parents[1] / "data" / "drbd"
BINARY = bytes(range(256)) * 4

# ------------------------------------------------------------------ a group that fails on purpose
app = typer.Typer(no_args_is_help=True)


@app.command("bug")
def _bug(json_out: bool = typer.Option(False, "--json")) -> None:
    raise RuntimeError("a genuine bug\nover two lines")


@app.command("validation")
def _validation() -> None:
    from pydantic import BaseModel, Field

    class Policy(BaseModel):
        retention_days: int = Field(le=36500)

    Policy(retention_days=99999999)


@app.command("notdir")
def _notdir() -> None:
    Path(__file__).joinpath("under-a-file.json").write_text("x")


@app.command("nospace")
def _nospace() -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "/var/tmp/report.json")


@app.command("partial")
def _partial(json_out: bool = typer.Option(False, "--json")) -> None:
    print(json.dumps({"ok": False, "errors": ["mine"]}))
    raise BadInput("already reported")


@app.command("interrupted")
def _interrupted(json_out: bool = typer.Option(False, "--json")) -> None:
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, mid-run
    time.sleep(5)


@app.command("aws")
def _aws(denied: bool = typer.Option(False, "--denied")) -> None:
    """An AWS call that no adapter wrapped: a real client against a closed loopback port, or S3's refusal."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    if denied:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")
    boto3.client("s3", region_name="eu-west-1", endpoint_url="http://127.0.0.1:9", aws_access_key_id="k",
                 aws_secret_access_key="s", config=Config(retries={"max_attempts": 1}, connect_timeout=2)
                 ).list_buckets()


@pytest.fixture
def boom(monkeypatch):
    monkeypatch.setitem(cli.GROUPS, "boom", (__name__, "failures on purpose"))
    return "boom"


@pytest.fixture
def run(capsys, tmp_path, monkeypatch):
    from flows.common.settings import reload_settings

    monkeypatch.setenv("INFEROPS_OFFLINE", "1")
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()

    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            cli.main(list(argv))
        out, err = capsys.readouterr()
        return done.value.code, out, err

    yield go
    monkeypatch.undo()
    reload_settings()


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("inferops:")]


# ------------------------------------------------------------------ the boundary itself
def test_usage_errors_are_bad_input_exit_2_with_json(run):
    code, out, err = run("backup", "run", "--bogus", "--json")
    assert code == 2
    assert _error_lines(err) == ["inferops: backup run: No such option: --bogus (see inferops backup run --help)"]
    assert json.loads(out) == {"error": "backup run: No such option: --bogus (see inferops backup run --help)",
                               "exit_code": 2}
    code, out, err = run("idle-gpu", "plan", "--queue", "q.yaml", "--grace-period", "soon")
    assert code == 2 and len(_error_lines(err)) == 1 and "--grace-period" in err and out == ""
    code, _, err = run("no-such-command")
    assert code == 2 and "No such command" in _error_lines(err)[0]
    code, _, err = run()
    assert code == 2 and "drbd" in err  # the help, as a usage error


@pytest.mark.parametrize("argv", [["drbd", "check", "--bogus"], ["drbd", "chek"], ["drbd"],
                                  ["drbd", "check", "--input"]])
def test_drbd_usage_errors_are_nagios_unknown(run, argv):
    code, out, err = run(*argv)
    assert code == 3
    if argv != ["drbd"]:
        (line,) = _error_lines(err)
        assert out.splitlines() == ["DRBD UNKNOWN - " + line.removeprefix("inferops: ")]
    if argv[1:2] == ["check"]:
        code, out, _ = run(*argv[:2], "--json", *argv[2:])
        assert code == 3 and json.loads(out)["severity"] == "unknown" and "--help" in json.loads(out)["error"]


def test_a_bug_is_an_internal_error_in_one_line(run, boom):
    code, out, err = run(boom, "bug", "--json")
    assert code == 1
    assert _error_lines(err) == ["inferops: internal error: RuntimeError: a genuine bug over two lines "
                                 "(INFEROPS_DEBUG=1 for a traceback)"]
    assert json.loads(out)["exit_code"] == 1


def test_a_bug_in_a_nagios_group_is_unknown(run, boom, monkeypatch):
    monkeypatch.setitem(cli.CONTRACTS, boom, cli.NAGIOS)
    code, out, _ = run(boom, "bug")
    assert code == 3 and out.startswith("DRBD UNKNOWN - internal error: RuntimeError")


def test_ctrl_c_says_aborted_and_still_prints_json(run, boom, monkeypatch):
    """typer answers KeyboardInterrupt with a bare 'return 130': the exit was silent, and --json printed nothing."""
    import signal

    # what a fresh `inferops` process starts with (earlier tests in this process may have left another)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, out, err = run(boom, "interrupted", "--json")
        assert code == 130 and _error_lines(err) == ["inferops: aborted"]
        assert json.loads(out) == {"error": "aborted", "exit_code": 130}
        monkeypatch.setitem(cli.CONTRACTS, boom, cli.NAGIOS)
        code, out, err = run(boom, "interrupted", "--json")
        assert code == 130 and json.loads(out)["severity"] == "unknown"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_unwrapped_aws_error_is_the_backend_not_an_internal_error(run, boom):
    """A botocore error that no adapter wrapped was 'internal error: ClientError', which reads as our bug."""
    code, _, err = run(boom, "aws")
    assert code == 1 and _error_lines(err) == ['inferops: boom aws: AWS: Could not connect to the endpoint URL: '
                                               '"http://127.0.0.1:9/"']
    code, _, err = run(boom, "aws", "--denied")
    assert code == 1 and _error_lines(err) == ["inferops: boom aws: AWS: An error occurred (AccessDenied) when "
                                               "calling the GetObject operation: Access Denied"]


def test_debug_shows_the_traceback(run, boom, monkeypatch):
    monkeypatch.setenv("INFEROPS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="genuine bug"):
        cli.run([boom, "bug"])


def test_stray_validation_and_path_errors_are_bad_input(run, boom):
    code, _, err = run(boom, "validation")
    assert code == 2
    assert _error_lines(err) == ["inferops: boom validation: retention_days: Input should be less than or equal "
                                 "to 36500"]
    code, _, err = run(boom, "notdir")
    assert code == 2 and _error_lines(err)[0].endswith("under-a-file.json: Not a directory")
    code, _, err = run(boom, "nospace")  # the machine's trouble, not the user's input, and not a bug
    assert code == 1 and _error_lines(err) == ["inferops: /var/tmp/report.json: No space left on device"]


def test_a_command_that_printed_its_json_keeps_it(run, boom):
    code, out, err = run(boom, "partial", "--json")
    assert code == 2 and out.splitlines() == ['{"ok": false, "errors": ["mine"]}']
    assert _error_lines(err) == ["inferops: already reported"]


def test_bad_settings_name_the_setting(run, monkeypatch, tmp_path):
    from flows.common.settings import get_settings, load_settings

    monkeypatch.setenv("INFEROPS_SSH__PORT", "twenty-two")
    with pytest.raises(BadInput, match=r"INFEROPS_SSH__PORT \(or ssh.port in inferops.toml\): Input should be"):
        load_settings()
    get_settings.cache_clear()
    code, out, err = run("drbd", "check", "--input", str(DATA / "json_resync.json"))
    assert code == 3 and "INFEROPS_SSH__PORT" in _error_lines(err)[0] and "twenty-two" not in err
    monkeypatch.delenv("INFEROPS_SSH__PORT")
    for name, value in (("INFEROPS_PROMETHEUS__TIMEOUT_S", "inf"), ("INFEROPS_PROMETHEUS__TIMEOUT_S", "nan"),
                        ("INFEROPS_SSH__PORT", "70000"), ("INFEROPS_SSH__CONNECT_TIMEOUT_S", "-1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(BadInput, match=name):
            load_settings()
        monkeypatch.delenv(name)
    # URL settings, malformed: 'internal error: ValueError: Invalid IPv6 URL' (exit 1) deep in a run, or
    # an unusable registry found only after the model was built; the value (a password) is never echoed
    for name, value in (("INFEROPS_S3__ENDPOINT_URL", "http://u:hunter2@[::1"),
                        ("INFEROPS_S3__BACKUP_ENDPOINT_URL", "ftp://u:hunter2@127.0.0.1:9"),
                        ("INFEROPS_PROMETHEUS__PUSHGATEWAY", "http://u:hunter2@[::1"),
                        ("INFEROPS_PROMETHEUS__URL", "http://u:hunter2@127.0.0.1:99999"),
                        ("INFEROPS_PROMETHEUS__URL", "127.0.0.1:9090"),
                        ("INFEROPS_S3__MODEL_REGISTRY", "registry"),
                        ("INFEROPS_S3__MODEL_REGISTRY", "s3://u:hunter2@bucket/models")):
        monkeypatch.setenv(name, value)
        with pytest.raises(BadInput, match=rf"^bad setting {name} \(or .*\): (not a valid URL|expected) ") as bad:
            load_settings()
        assert "hunter2" not in str(bad.value) and "Value error" not in str(bad.value)
        monkeypatch.delenv(name)
    monkeypatch.setenv("INFEROPS_S3__ENDPOINT_URL", "http://u:hunter2@[::1")
    get_settings.cache_clear()
    code, out, err = run("backup", "run", "--source", str(tmp_path), "--dest", "s3://backups/logs",
                         "--dest-region", "eu-west-1", "--json")
    (line,) = _error_lines(err)
    assert code == 2 and "INFEROPS_S3__ENDPOINT_URL" in line and "hunter2" not in err + out
    monkeypatch.delenv("INFEROPS_S3__ENDPOINT_URL")
    for fine in ("http://127.0.0.1:9", "https://user:pw@[::1]:9091/path", ""):
        monkeypatch.setenv("INFEROPS_PROMETHEUS__PUSHGATEWAY", fine)
        load_settings()
    monkeypatch.delenv("INFEROPS_PROMETHEUS__PUSHGATEWAY")
    for garbage in (b"[[[ not toml", BINARY):
        cfg = tmp_path / "inferops.toml"
        cfg.write_bytes(garbage)
        monkeypatch.setenv("INFEROPS_CONFIG", str(cfg))
        with pytest.raises(BadInput, match=f"config file {cfg} \\(INFEROPS_CONFIG\\): "):
            load_settings()
    # a config file the user named, missing or a folder: it was ignored, with every setting in it
    for named, why in ((tmp_path / "missing.toml", "no such file"), (tmp_path, "a folder, not a file")):
        monkeypatch.setenv("INFEROPS_CONFIG", str(named))
        with pytest.raises(BadInput, match=f"^config file {named} \\(INFEROPS_CONFIG\\): {why}$"):
            load_settings()
    get_settings.cache_clear()
    code, out, _ = run("drbd", "check", "--input", str(DATA / "json_resync.json"))
    assert code == 3 and out == f"DRBD UNKNOWN - config file {tmp_path} (INFEROPS_CONFIG): a folder, not a file\n"
    monkeypatch.setenv("INFEROPS_CONFIG", "")  # empty is unset: ./inferops.toml if there is one
    load_settings()


# ------------------------------------------------------------------ issue 16, the cases in this scope
def test_drbd_proc_numbers_beyond_the_int_string_limit_are_unknown(run, tmp_path):
    proc = tmp_path / "proc_drbd.txt"
    proc.write_text("version: 8.4.11\n 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n"
                    f"    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:{'9' * 5000}\n")
    big_json = tmp_path / "status.json"
    big_json.write_text('[{"name": "r0", "role": "Primary", "devices": [{"volume": ' + "7" * 5000 + "}]}]")
    for f in (proc, big_json):
        code, out, err = run("drbd", "check", "--input", str(f))
        assert code == 3 and out.startswith("DRBD UNKNOWN - ") and "unparseable" in out
        assert not _error_lines(err)  # a check that ran and said UNKNOWN, not a crash


@pytest.mark.parametrize("flag", ["--queue", "--capacity"])
def test_idle_gpu_binary_files_are_bad_input(run, tmp_path, flag):
    bad = tmp_path / "binary.yaml"
    bad.write_bytes(BINARY)
    files = {"--queue": str(DEMO / "queue.yaml"), "--capacity": str(DEMO / "capacity.json"), flag: str(bad)}
    code, out, err = run("idle-gpu", "plan", *[x for kv in files.items() for x in kv], "--timezone", "UTC", "--json")
    (line,) = _error_lines(err)
    assert code == 2 and str(bad) in line and "not UTF-8" in line
    assert json.loads(out)["error"] == line.removeprefix("inferops: ")


def test_idle_gpu_capacities_of_ten_to_the_thirty(run, tmp_path):
    snap = json.loads((DEMO / "capacity.json").read_text())
    snap["nodes"][0].update(allocatable=10**30, idle=10**30)
    cap = tmp_path / "capacity.json"
    cap.write_text(json.dumps(snap))
    code, _, err = run("idle-gpu", "plan", "--queue", str(DEMO / "queue.yaml"), "--capacity", str(cap),
                       "--timezone", "UTC")
    assert code == 2 and "nodes.0.allocatable: Input should be less than or equal to 1024" in _error_lines(err)[0]


def test_out_under_a_regular_file_is_bad_input(run, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run("idle-gpu", "plan", "--queue", str(DEMO / "queue.yaml"), "--capacity",
                       str(DEMO / "capacity.json"), "--timezone", "UTC", "--out", str(tmp_path / "file" / "plan.json"))
    assert code == 2
    assert _error_lines(err) == [f"inferops: --out {tmp_path / 'file' / 'plan.json'}: cannot write: "
                                 f"{tmp_path / 'file'} is a file, not a directory"]


@pytest.mark.parametrize("doc, needle", [
    (BINARY, "not UTF-8 text"),
    (b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: llm}\nspec: null\n", "'spec' must be a mapping, got null"),
    (b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: llm}\nspec: hello\n", "'spec' must be a mapping, got str"),
    (b"- just\n- a list\n", "expected a mapping, got list"),
])
def test_canary_manifests_of_the_wrong_shape(run, tmp_path, doc, needle):
    m = tmp_path / "stable.yaml"
    m.write_bytes(doc)
    code, out, err = run("canary", "plan", "-n", "inference", "-d", "llm", "--image", "r.example/llm:2",
                         "--stable-manifest", str(m))
    (line,) = _error_lines(err)
    assert code == 2 and str(m) in line and needle in line and out == ""


@pytest.mark.parametrize("doc, needle", [
    (BINARY, "not UTF-8 text"),
    (b'{"nvidia_driver_branch": ' + b"9" * 5000 + b"}", "is not valid YAML/JSON"),
    (b"[" * 50000, "nested too deeply"),
    (b"nvidia_driver_branch: .nan\n", "not a finite number"),
])
def test_bootstrap_extra_vars_hostile_files(run, tmp_path, doc, needle):
    ev = tmp_path / "vars.yml"
    ev.write_bytes(doc)
    code, _, err = run("bootstrap", "run", "--inventory", "staging", "--extra-vars", str(ev))
    (line,) = _error_lines(err)
    assert code == 2 and f"--extra-vars {ev}" in line and needle in line


HOSTILE_TEXT = ["/logs/[/app]/x.log: read failed", "/logs/[app]/y.log: gone", "[bold]host[/bold]"]


def test_human_output_prints_users_text_as_text_never_as_markup(capsys):
    """Paths, host, task and resource names are the user's: rich markup in them must print as it is.
    Parsed, ``[app]`` vanished from a failed file's path and ``[/app]`` raised MarkupError (exit 1,
    and the other errors never printed)."""
    from flows.common.demo import Outcome, _table
    from flows.drbd_health.cli import _print_human
    from flows.host_bootstrap.cli import _show as show_bootstrap
    from flows.host_bootstrap.models import BootstrapReport, HostResult
    from flows.log_backup.cli import _show as show_backup

    show_backup("backup", {"uploaded_files": 1}, HOSTILE_TEXT)
    _print_human({"status": "DRBD CRITICAL - 1 critical", "hints": {HOSTILE_TEXT[0]: [HOSTILE_TEXT[1]]},
                  "resources": [{"host": HOSTILE_TEXT[2], "name": "[/r0]", "severity": "critical",
                                 "problems": [{"code": "[disk]", "detail": HOSTILE_TEXT[1]}]}]})
    show_bootstrap(BootstrapReport(playbook="[/p].yml", inventory="inv", check_mode=False,
                                   hosts=[HostResult(host=HOSTILE_TEXT[2], status="failed", task=HOSTILE_TEXT[0])]))
    _table([Outcome("[/x]", "failed", HOSTILE_TEXT[1], 1.0, HOSTILE_TEXT[0])])
    out = capsys.readouterr().out
    for text in [*HOSTILE_TEXT, "[/r0]", "[disk]", "[/p].yml", "[/x]"]:
        assert text in out, text
