"""Settings, typed errors, PromQL quoting, S3 URI parsing, the offline runtime and the CLI shell."""

import math

import pytest
from pydantic import SecretStr

from flows.common.errors import BadInput, GateFailed, InferopsError
from flows.common.prom import quote_label_value, validate_duration, validate_name
from flows.common.s3 import parse_s3_uri, validate_region
from flows.common.settings import InferopsSettings


def test_settings_env_overrides_toml(tmp_path, monkeypatch):
    toml = tmp_path / "inferops.toml"
    toml.write_text('inventory = "inventories/staging/hosts.yml"\n[prometheus]\nurl = "http://p:9090"\n'
                    'bearer_token = "s3cr3t"\n[s3]\nbackup_region = "eu-central-1"\n')
    monkeypatch.setenv("INFEROPS_CONFIG", str(toml))
    monkeypatch.setenv("INFEROPS_S3__BACKUP_REGION", "ap-south-1")
    s = InferopsSettings()
    assert s.inventory == "inventories/staging/hosts.yml"
    assert s.prometheus.url == "http://p:9090"
    assert s.s3.backup_region == "ap-south-1"  # env beats the file
    assert isinstance(s.prometheus.bearer_token, SecretStr)
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.redacted())


def test_errors_are_one_line_with_codes():
    e = BadInput("bad\n  thing\there")
    assert str(e) == "bad thing here" and e.exit_code == 2
    assert GateFailed("x").exit_code == 3
    assert InferopsError("y", exit_code=7).exit_code == 7


@pytest.mark.parametrize("value,expected", [
    ("canary", '"canary"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ('x"} or vector(1) #', '"x\\"} or vector(1) #"'),
])
def test_promql_label_values_are_quoted(value, expected):
    assert quote_label_value(value) == expected


def test_promql_names_and_durations_are_validated():
    assert validate_name("nv_inference_request_success") == "nv_inference_request_success"
    for bad in ("", "a b", "x{y}", "1abc", 'up"'):
        with pytest.raises(BadInput):
            validate_name(bad)
    assert validate_duration("5m") == "5m" and validate_duration("1h30m") == "1h30m"
    with pytest.raises(BadInput):
        validate_duration("5 minutes")
    with pytest.raises(BadInput):
        quote_label_value("a\nb")


def test_s3_uri_and_region_validation():
    u = parse_s3_uri("s3://logs-backup/prod/eu/")
    assert (u.bucket, u.prefix, u.key("a/b.log")) == ("logs-backup", "prod/eu", "prod/eu/a/b.log")
    assert parse_s3_uri("s3://bucket").key("x") == "x"
    for bad in ("logs/backup", "s3://", "s3://Bad_Bucket/x", "http://b/x"):
        with pytest.raises(BadInput):
            parse_s3_uri(bad)
    assert validate_region("eu-west-1") == "eu-west-1"
    assert validate_region("us-gov-west-1") == "us-gov-west-1"
    for bad in ("mars-north-1", "eu-west", "EU-WEST-1", ""):
        with pytest.raises(BadInput):
            validate_region(bad)


def test_cli_help_and_unknown_command(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0
    for group in ("model", "canary", "idle-gpu", "backup", "drbd", "cost", "bootstrap", "doctor"):
        assert group in r.stdout
    r = run_cli("no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_nan_is_not_a_number_we_trust():
    from flows.common.prom import _f

    assert math.isnan(_f("NaN")) and math.isnan(_f("garbage")) and _f("1.5") == 1.5


def test_prometheus_errors_never_show_credentials():
    from flows.common.errors import BackendUnavailable
    from flows.common.prom import PrometheusClient, redact_url
    from flows.standins.ports import free_port

    assert redact_url("https://user:pw@prom.example:9090/x") == "https://***@prom.example:9090/x"
    assert redact_url("http://prom:9090") == "http://prom:9090"
    with PrometheusClient(f"http://admin:hunter2@127.0.0.1:{free_port()}", timeout_s=1) as c:
        with pytest.raises(BackendUnavailable) as err:
            c.query("up")
    assert "hunter2" not in str(err.value) and "***@127.0.0.1" in str(err.value)


@pytest.mark.parametrize("preset,expected", [(None, "1"), ("0", "0")])
def test_cli_turns_prefect_telemetry_off_unless_told(monkeypatch, preset, expected):
    import os

    from flows.common import cli

    if preset is None:
        monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    else:
        monkeypatch.setenv("DO_NOT_TRACK", preset)
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0 and os.environ["DO_NOT_TRACK"] == expected


@pytest.mark.parametrize("text", ["/logs/a`b.log: read failed", "``x`` <img src=x onerror=alert(1)> | y",
                                  "`starts and ends`", "line\nbreak", "plain.log", "   "])
def test_markdown_code_span_holds_any_file_name(text):
    """A failed file's name goes into a Markdown artifact as one code span: rendered by a CommonMark
    parser (markdown-it, as rich ships it), it is one <code> holding exactly that text, no HTML."""
    import html

    from markdown_it import MarkdownIt

    from flows.common.artifacts import code

    rendered = MarkdownIt("commonmark").render(f"- {code(text)}")
    assert rendered.count("<code>") == 1 and "<img" not in rendered
    inner = rendered.split("<code>", 1)[1].split("</code>", 1)[0]
    assert html.unescape(inner).strip() == " ".join(text.splitlines()).strip()


def test_demo_and_make_up_keep_the_prefect_database_in_the_one_state_folder(tmp_path, monkeypatch):
    """INFEROPS_STATE_DIR moves `make demo`'s and `make up`'s Prefect database with the rest of the state, so
    `make up` serves the demo's runs; unset, both use the checkout's .inferops/."""
    from flows.common.localstack import LocalStack, prefect_env, repo_root
    from flows.common.settings import get_settings

    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    try:
        assert prefect_env(4321)["PREFECT_HOME"] == str(tmp_path / "state" / "prefect")
        assert LocalStack(port=4321).home == tmp_path / "state"
        monkeypatch.delenv("INFEROPS_STATE_DIR")
        monkeypatch.delenv("INFEROPS_HOME", raising=False)
        get_settings.cache_clear()
        assert prefect_env(4321)["PREFECT_HOME"] == str(repo_root() / ".inferops" / "prefect")
        assert LocalStack(port=4321).home == repo_root() / ".inferops"
    finally:
        get_settings.cache_clear()
