"""`inferops doctor` against real backends: ok where they answer, failed (exit 1) where they don't."""

import json

from flows.standins.ports import free_port


def _by_backend(stdout):
    out = {}
    for c in json.loads(stdout)["checks"]:
        out.setdefault(c["backend"], []).append(c)
    return out


def test_doctor_reports_truthfully(run_cli, moto_s3, prometheus, prefect_api, kube, ssh_host_factory, ssh_hosts,
                                   tmp_path):
    inv = ssh_host_factory.write_inventory(tmp_path / "hosts.yml", {"gpu_hosts": ssh_hosts})
    env = {**moto_s3.env(), "INFEROPS_PROMETHEUS__URL": prometheus.url, "PREFECT_API_URL": prefect_api,
           "INFEROPS_INVENTORY": str(inv), "KUBECONFIG": kube.kubeconfig, "HOME": str(tmp_path)}
    r = run_cli("doctor", "--json", "--timeout", "10", env=env)
    by = _by_backend(r.stdout)
    assert [c["status"] for c in by["prefect"]] == ["ok"]
    assert [c["status"] for c in by["prometheus"]] == ["ok"]
    assert [c["status"] for c in by["s3"]] == ["ok", "ok"]
    assert [c["status"] for c in by["kubernetes"]] == ["ok"], by["kubernetes"]
    assert sorted(c["target"] for c in by["ssh"]) == sorted(h.name for h in ssh_hosts)
    assert {c["status"] for c in by["ssh"]} == {"ok"}, by["ssh"]
    assert r.returncode == 0, r.stdout + r.stderr

    # Prometheus configured but nothing listening, and one host that never answers:
    # each is failed with its reason, the rest still ok, exit 1
    dead = ssh_host_factory.unreachable("dead")
    inv = ssh_host_factory.write_inventory(tmp_path / "hosts2.yml", {"gpu_hosts": [*ssh_hosts, dead]})
    env.update({"INFEROPS_PROMETHEUS__URL": f"http://127.0.0.1:{free_port()}", "INFEROPS_INVENTORY": str(inv)})
    r = run_cli("doctor", "--json", "--timeout", "3", env=env)
    by = _by_backend(r.stdout)
    assert r.returncode == 1
    assert by["prometheus"][0]["status"] == "failed" and "unreachable" in by["prometheus"][0]["detail"]
    ssh = {c["target"]: c for c in by["ssh"]}
    assert ssh["dead"]["status"] == "failed" and ssh["dead"]["detail"]
    assert all(ssh[h.name]["status"] == "ok" for h in ssh_hosts)
    assert "Traceback" not in r.stderr
