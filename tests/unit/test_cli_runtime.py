"""The runtime decides offline vs Prefect in one place: the API is detected the way Prefect detects it,
offline objects never import Prefect, offline tasks retry the way Prefect retries them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from flows.common import runtime
from flows.common.errors import BackendUnavailable, BadInput
from tests.fixtures.common import REPO


def _python(code: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    e.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=e, cwd=cwd or REPO, timeout=120)


CASES = {  # name: (environment, profiles.toml, files in the working directory, expected URL)
    "nothing": ({}, None, {}, None),
    "env": ({"PREFECT_API_URL": "http://127.0.0.1:4201/api"}, None, {}, "http://127.0.0.1:4201/api"),
    "active profile": ({}, 'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:4202/api"\n', {},
                       "http://127.0.0.1:4202/api"),
    "PREFECT_PROFILE wins": ({"PREFECT_PROFILE": "other"},
                             'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://a/api"\n'
                             '[profiles.other]\nPREFECT_API_URL = "http://127.0.0.1:4203/api"\n', {},
                             "http://127.0.0.1:4203/api"),
    "active profile missing": ({}, 'active = "gone"\n[profiles.mine]\nPREFECT_API_URL = "http://a/api"\n', {}, None),
    "profile without url": ({}, 'active = "mine"\n[profiles.mine]\nPREFECT_LOGGING_LEVEL = "INFO"\n', {}, None),
    "prefect.toml": ({}, None, {"prefect.toml": '[api]\nurl = "http://127.0.0.1:4204/api"\n'}, "http://127.0.0.1:4204/api"),
    "dotenv": ({}, None, {".env": "PREFECT_API_URL=http://127.0.0.1:4205/api\n"}, "http://127.0.0.1:4205/api"),
    "pyproject": ({}, None, {"pyproject.toml": '[tool.prefect.api]\nurl = "http://127.0.0.1:4206/api"\n'},
                  "http://127.0.0.1:4206/api"),
    "garbage profiles file": ({}, "[[[ not toml", {}, None),
}


def test_api_detection_agrees_with_prefect(tmp_path):
    """configured_api_url() reads no Prefect, and finds what Prefect's own Settings() finds, case by case."""
    code = f"""
        import json, os, sys, warnings
        from pathlib import Path
        from flows.common.runtime import configured_api_url
        home, proj = Path({str(tmp_path)!r}) / "home", Path({str(tmp_path)!r}) / "proj"
        home.mkdir(); proj.mkdir(); os.chdir(proj)
        os.environ["PREFECT_HOME"] = str(home)
        cases = json.loads({json.dumps(json.dumps(CASES))})
        mine = {{}}
        for phase in ("mine", "prefect"):
            if phase == "prefect":
                assert "prefect" not in sys.modules
                warnings.simplefilter("ignore")
                from prefect.settings import Settings
            for name, (env, profiles, files, _) in cases.items():
                for k in ("PREFECT_API_URL", "PREFECT_PROFILE"):
                    os.environ.pop(k, None)
                os.environ.update(env)
                (home / "profiles.toml").unlink(missing_ok=True)
                if profiles is not None:
                    (home / "profiles.toml").write_text(profiles)
                for f in ("prefect.toml", ".env", "pyproject.toml"):
                    (proj / f).unlink(missing_ok=True)
                for f, text in files.items():
                    (proj / f).write_text(text)
                if phase == "mine":
                    mine[name] = configured_api_url()
                else:
                    mine[name] = [mine[name], Settings().api.url]
        print(json.dumps(mine))
    """
    r = _python(code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for name, (_, _, _, expected) in CASES.items():
        assert got[name] == [expected, expected], name


def test_flow_modules_build_light_objects_without_prefect_and_run_inline(tmp_path):
    r = _python("""
        import sys
        from flows.common import runtime
        from flows.drbd_health import flow as drbd
        from flows.idle_gpu import flow as idle
        assert "prefect" not in sys.modules, "importing a flow module imported Prefect"
        assert isinstance(drbd.drbd_health, runtime.LightFlow) and isinstance(drbd.collect, runtime.LightTask)
        assert idle.load_jobs.retries == 2 and idle.load_jobs.retry_condition_fn is idle._transient
        report = runtime.run_flow(drbd.drbd_health, inputs=["flows/drbd_health/captures/storage-a.json"])
        assert report["severity"] == "ok", report
        assert "prefect" not in sys.modules, "an offline run imported Prefect"
        # a Prefect-only attribute builds the real flow on demand
        assert type(drbd.drbd_health.to_prefect()).__name__ == "Flow"
        assert drbd.drbd_health.parameters.model_dump()["properties"]["inputs"]
        print("ok")
    """, env={"INFEROPS_STATE_DIR": str(tmp_path)})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr


def _task(kind, fn, **options):
    """The task as a light offline task, or as a real Prefect task (OpsTask) that runs offline."""
    if kind == "light":
        return runtime.LightTask(fn, options)
    return runtime._ops_task_class()(fn=fn, **runtime._prefect_options(options))


@pytest.mark.parametrize("kind", ["light", "prefect"])
def test_offline_retries_honour_retry_condition_fn(kind):
    calls, seen = [], []

    def transient(task, task_run, state):
        seen.append((state.is_failed(), type(state.data).__name__, task_run.run_count))
        with pytest.raises(type(state.data)):
            state.result()
        return isinstance(state.data, BackendUnavailable)

    def flaky(errors: list[Exception]) -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "done"

    t = _task(kind, flaky, name="flaky", retries=3, retry_delay_seconds=[0, 0, 0], retry_condition_fn=transient,
              cache_policy=runtime.NO_CACHE)
    with runtime.offline():
        assert t([BackendUnavailable("s3 down"), BackendUnavailable("still down")]) == "done"
        assert len(calls) == 3 and seen == [(True, "BackendUnavailable", 1), (True, "BackendUnavailable", 2)]
        calls.clear()
        seen.clear()
        with pytest.raises(BadInput):  # bad input is not retried: the condition says no
            t([BadInput("bad queue"), BackendUnavailable("never reached")])
        assert len(calls) == 1 and seen == [(True, "BadInput", 1)]
        calls.clear()
        with pytest.raises(BackendUnavailable):  # retries run out
            t([BackendUnavailable(str(i)) for i in range(5)])
        assert len(calls) == 4


@pytest.mark.parametrize("kind", ["light", "prefect"])
def test_a_failing_retry_condition_means_no_retry(kind):
    calls = []

    def broken(task, task_run, state):
        raise RuntimeError("bug in the predicate")

    def fails() -> None:
        calls.append(1)
        raise BackendUnavailable("down")

    t = _task(kind, fails, retries=2, retry_condition_fn=broken)
    with runtime.offline(), pytest.raises(BackendUnavailable):
        t()
    assert len(calls) == 1


def test_submit_and_map_offline():
    light = runtime.LightTask(lambda x, y=1: x * y, {"name": "mul"})
    assert light.submit(3, y=2).result() == 6
    assert [f.result() for f in light.map([1, 2, 3], y=[2, 2, 2])] == [2, 4, 6]
    boom = runtime.LightTask(lambda: 1 / 0, {})
    fut = boom.submit()
    assert isinstance(fut.result(raise_on_failure=False), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        fut.result()


def test_offline_logs_are_redacted(capsys, caplog, monkeypatch):
    runtime.log_to_stderr()
    monkeypatch.setattr(runtime.log, "propagate", True)  # let caplog see the record itself
    with caplog.at_level(logging.INFO, logger="inferops"):
        runtime.get_logger().warning("pushing to %s", "https://admin:hunter2@pushgw.example:9091/metrics")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "https://***@pushgw.example:9091/metrics" in err
    assert "hunter2" not in caplog.text and "***@pushgw.example" in caplog.text  # redacted at the source
