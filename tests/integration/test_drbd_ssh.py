"""DRBD health over real SSH: namespace hosts whose stand-in ``drbdsetup``/``drbdadm`` print captures,
a DRBD-less host and an unreachable one; the real CLI, then the flow on a Prefect API (artifact, event)."""

from __future__ import annotations

import json
import time
from pathlib import Path

# Ansible's collection loader refuses to import once a second FileFinder path hook exists, and importing
# Prefect's server (the prefect_api harness) adds one; load it first so in-process load_hosts works.
import ansible.utils.collection_loader._collection_finder  # noqa: F401
import pytest

from flows.common.settings import reload_settings
from flows.common.ssh import run_many

pytestmark = [pytest.mark.netns, pytest.mark.slow]
DATA = Path(__file__).parents[1] / "data" / "drbd"
CAPTURE = "/etc/inferops-test/drbd-capture"

DRBDSETUP = f"""#!/bin/sh
# stand-in for drbdsetup: prints a saved capture, fails like drbd-utils 8.x when there is none
[ "$*" = "status --json" ] && [ -f {CAPTURE}.json ] && exec cat {CAPTURE}.json
echo "drbdsetup: unrecognized option '--json'" >&2; exit 20
"""
DRBDADM = f"""#!/bin/sh
[ "$*" = "status" ] && [ -f {CAPTURE}.txt ] && exec cat {CAPTURE}.txt
echo "drbdadm: no resources defined" >&2; exit 10
"""


def _files(kind: str) -> dict:
    tools = {"/usr/sbin/drbdsetup": (DRBDSETUP, 0o755), "/usr/sbin/drbdadm": (DRBDADM, 0o755)}
    if kind == "json":
        return {**tools, f"{CAPTURE}.json": ((DATA / "json_healthy_3node.json").read_text(), 0o644)}
    if kind == "text":
        return {**tools, f"{CAPTURE}.txt": ((DATA / "status_resync.txt").read_text(), 0o644)}
    return {}  # no DRBD at all


@pytest.fixture(scope="module")
def fleet(ssh_host_factory, tmp_path_factory):
    kinds = ["json", "text", "none"]
    hosts = ssh_host_factory(3, prefix="drbd", files=lambda i: _files(kinds[i]))
    dead = ssh_host_factory.unreachable("drbd-dead")
    inv = tmp_path_factory.mktemp("drbd") / "hosts.yml"
    ssh_host_factory.write_inventory(inv, {"drbd_hosts": [*hosts, dead], "other": hosts[:1]})
    yield {"hosts": hosts, "dead": dead, "inventory": inv, "known_hosts": hosts[0].known_hosts}
    ssh_host_factory.stop([*hosts, dead])


def test_cli_over_ssh_reports_every_host(fleet, run_cli, tmp_path):
    healthy, legacy, bare = (h.name for h in fleet["hosts"])
    r = run_cli("drbd", "check", "--inventory", str(fleet["inventory"]), "--json",
                env={"INFEROPS_SSH__KNOWN_HOSTS": fleet["known_hosts"], "INFEROPS_STATE_DIR": str(tmp_path)})
    doc = json.loads(r.stdout)
    assert r.returncode == 3, r.stderr  # UNKNOWN (unreachable, DRBD-less) outranks the WARNING
    by = {(x["host"], x["name"]): x for x in doc["resources"]}
    assert set(by) == {(healthy, "models"), (healthy, "pgdata"), (legacy, "models"), (bare, "-"), ("drbd-dead", "-")}
    assert by[(healthy, "models")]["severity"] == "ok" and len(by[(healthy, "models")]["peers"]) == 2
    assert by[(legacy, "models")]["severity"] == "warning"  # via the drbdadm status fallback
    assert [p["code"] for p in by[(legacy, "models")]["problems"]] == ["resyncing", "congested", "resyncing"]
    [nodrbd] = by[(bare, "-")]["problems"]
    assert nodrbd["code"] == "unknown" and nodrbd["detail"].startswith("no DRBD: drbdsetup-json: ")
    assert "/proc/drbd: No such file or directory" in nodrbd["detail"]
    [gone] = by[("drbd-dead", "-")]["problems"]
    assert gone["detail"].startswith("unreachable: ")
    assert doc["severity"] == "unknown"


def test_cli_group_option_and_unknown_group(fleet, run_cli, tmp_path):
    env = {"INFEROPS_SSH__KNOWN_HOSTS": fleet["known_hosts"], "INFEROPS_STATE_DIR": str(tmp_path)}
    r = run_cli("drbd", "check", "--inventory", str(fleet["inventory"]), "--group", "other", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("DRBD OK - 2 resources ok")
    r = run_cli("drbd", "check", "--inventory", str(fleet["inventory"]), "--group", "nope", env=env)
    assert r.returncode == 3 and r.stderr.strip().startswith("inferops: group 'nope' not in inventory") \
        and r.stdout.startswith("DRBD UNKNOWN - group 'nope' not in inventory")


@pytest.fixture
def ssh_env(fleet, tmp_path, monkeypatch):
    monkeypatch.setenv("INFEROPS_SSH__KNOWN_HOSTS", fleet["known_hosts"])
    monkeypatch.setenv("INFEROPS_STATE_DIR", str(tmp_path / "state"))
    reload_settings()
    yield tmp_path
    monkeypatch.undo()
    reload_settings()


def _events(client, since):
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    page = client.read_events(EventFilter(event=EventNameFilter(name=["inferops.drbd.critical"]),
                                          occurred=EventOccurredFilter(since=since)), limit=50)  # server max
    return page.events


def test_flow_turning_critical_emits_one_event(fleet, ssh_env, prefect_client):
    from datetime import UTC, datetime

    from flows.drbd_health.flow import DrbdNotOk, drbd_health

    def check(**kw):  # a recorded run ends Failed on CRITICAL; its result carries the report
        try:
            return drbd_health(**kw)
        except DrbdNotOk as exc:
            return exc.report

    host = fleet["hosts"][0]
    since = datetime.now(UTC)
    kw = {"inventory": str(fleet["inventory"]), "group": "other", "timeout_s": 10.0,
          "textfile": str(ssh_env / "drbd.prom")}
    first = check(**kw)
    assert first["severity"] == "ok" and first["events"] == []

    # the peer link breaks into split-brain; DRBD's split-brain handler leaves its marker file
    (host.root / CAPTURE.lstrip("/")).with_suffix(".json").write_text((DATA / "json_split_brain.json").read_text())
    [mk] = run_many([host], "mkdir -p /var/run/drbd/splitbrain && "
                    "touch /var/run/drbd/splitbrain/drbd-split-brain-detected-models-0", known_hosts=host.known_hosts)
    assert mk.exit_status == 0, mk
    second = check(**kw)
    assert second["severity"] == "critical" and second["events"] == [f"{host.name}/models"]
    [models] = [r for r in second["resources"] if r["name"] == "models"]
    assert {p["code"] for p in models["problems"]} == {"standalone", "split_brain"}
    assert "volumes 0" in next(p["detail"] for p in models["problems"] if p["code"] == "split_brain")
    assert any("--discard-my-data models" in h for h in second["hints"][f"{host.name}/models"])
    assert check(**kw)["events"] == []  # still critical: no new event

    deadline = time.monotonic() + 30
    while not (events := _events(prefect_client, since)) and time.monotonic() < deadline:
        time.sleep(0.5)
    [ev] = events
    assert ev.resource.id == f"inferops.drbd.{host.name}.models"
    assert ev.payload["previous"] == "ok"
    assert {p["code"] for p in ev.payload["problems"]} == {"standalone", "split_brain"}

    arts = [a for a in prefect_client.read_artifacts() if a.key == "drbd-health"]
    assert arts and any(f"{host.name}" in json.dumps(a.data) for a in arts)
    prom = (ssh_env / "drbd.prom").read_text()
    assert f'inferops_drbd_resource_severity{{host="{host.name}",resource="models"}} 2.0' in prom

