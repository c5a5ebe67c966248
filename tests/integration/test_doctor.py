"""`inferops doctor` against real backends: ok where they answer, failed (exit 1) where they don't."""

import json

from tests.services.ports import free_port


def _checks(stdout):
    return {(c["backend"], c["target"]): c for c in json.loads(stdout)["checks"]}


def test_doctor_reports_truthfully(run_cli, moto_s3, prometheus, prefect_api, tmp_path):
    env = {**moto_s3.env(), "INFEROPS_PROMETHEUS__URL": prometheus.url, "PREFECT_API_URL": prefect_api,
           "INFEROPS_INVENTORY": str(tmp_path / "none.yml"),
           "HOME": str(tmp_path)}
    r = run_cli("doctor", "--json", "--timeout", "5", env=env)
    checks = json.loads(r.stdout)["checks"]
    by = {c["backend"]: c for c in checks}
    assert by["prefect"]["status"] == "ok"
    assert by["prometheus"]["status"] == "ok"
    assert [c["status"] for c in checks if c["backend"] == "s3"] == ["ok", "ok"]
    assert by["ssh"]["status"] == "skipped"
    assert r.returncode == 0, r.stdout + r.stderr

    # Prometheus configured but nothing listening: failed, with a reason, exit 1
    env["INFEROPS_PROMETHEUS__URL"] = f"http://127.0.0.1:{free_port()}"
    r = run_cli("doctor", "--json", "--timeout", "2", env=env)
    by = {c["backend"]: c for c in json.loads(r.stdout)["checks"]}
    assert r.returncode == 1
    assert by["prometheus"]["status"] == "failed" and "unreachable" in by["prometheus"]["detail"]
    assert "Traceback" not in r.stderr
