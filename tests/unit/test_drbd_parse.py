"""Parsers and rules on hand-written captures of every format, and on every DRBD state name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.drbd_health.collect import judge, read_capture
from flows.drbd_health.models import (
    CONN_STATES_9,
    CONN_STATES_84,
    DISK_STATES,
    LINK_STATES_84,
    REPL_STATES_9,
    ROLES,
    DrbdPolicy,
)
from flows.drbd_health.parse import ParseError, detect, parse
from flows.drbd_health.rules import find_problems

DATA = Path(__file__).parents[1] / "data" / "drbd"

# capture -> {resource: (severity, sorted problem codes)}
EXPECTED = {
    "json_healthy_3node.json": {"models": ("ok", []), "pgdata": ("ok", [])},
    "json_split_brain.json": {"models": ("critical", ["split_brain", "standalone"])},
    "json_admin_standalone.json": {"scratch": ("critical", ["standalone"])},
    "json_resync.json": {"models": ("warning", ["resyncing"])},
    "json_disconnected.json": {"models": ("critical", ["disconnected", "disconnected"])},
    "json_quorum_suspended.json": {"pgdata": ("critical", ["disconnected", "disconnected", "quorum_lost", "suspended"])},
    "json_dual_primary.json": {"models": ("critical", ["dual_primary"])},
    "json_disk_failed.json": {"models": ("critical", ["disk_failed", "disk_failed"]), "scratch": ("ok", [])},
    "json_degraded.json": {"models": ("critical", ["congested", "disk_degraded", "peer_disk_degraded"])},
    "json_out_of_sync.json": {"models": ("warning", ["congested", "out_of_sync", "peer_disk_degraded"])},
    "json_unknown_state.json": {"models": ("unknown", ["unknown"])},
    "json_no_resources.json": {"-": ("unknown", ["unknown"])},
    "json_truncated.json": {"-": ("unknown", ["unknown"])},
    "status_healthy.txt": {"models": ("ok", []), "pgdata": ("ok", [])},
    "status_split_brain.txt": {"models": ("critical", ["standalone"])},
    "status_resync.txt": {"models": ("warning", ["congested", "resyncing", "resyncing"])},
    "status_disconnected_quorum.txt": {"pgdata": ("critical", ["disconnected", "disconnected", "quorum_lost", "suspended"]),
                                       "scratch": ("critical", ["disconnected"])},
    "status_statistics.txt": {"models": ("critical", ["dual_primary", "out_of_sync"])},
    "proc84_healthy.txt": {"0": ("ok", []), "1": ("ok", []), "3": ("ok", [])},
    "proc84_sync.txt": {"0": ("warning", ["resyncing"]), "1": ("warning", ["resyncing"])},
    "proc84_wfconnection.txt": {"0": ("critical", ["disconnected"]), "1": ("critical", ["disconnected"])},
    "proc84_split_brain.txt": {"0": ("critical", ["split_brain", "standalone"])},
    "proc84_dual_primary.txt": {"0": ("critical", ["congested", "dual_primary", "suspended"]),
                                "1": ("critical", ["disk_failed"])},
    "proc9_no_resources.txt": {"-": ("unknown", ["unknown"])},
    "events2_healthy.txt": {"models": ("ok", [])},
    "events2_split_brain.txt": {"models": ("critical", ["split_brain", "standalone"])},
    "events2_resync.txt": {"pgdata": ("warning", ["resyncing"])},
}


def test_every_capture_is_covered():
    assert sorted(EXPECTED) == sorted(p.name for p in DATA.iterdir())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_verdicts(name):
    reports = judge(read_capture(DATA / name), DrbdPolicy())
    got = {r.name: (r.severity.value, sorted(p.code for p in r.problems)) for r in reports}
    assert got == EXPECTED[name]
    assert all(r.host == name.rsplit(".", 1)[0] for r in reports)


@pytest.mark.parametrize("name,fmt", [("json_healthy_3node.json", "json"), ("status_healthy.txt", "drbdadm"),
                                      ("status_statistics.txt", "drbdadm"), ("proc84_healthy.txt", "proc"),
                                      ("proc9_no_resources.txt", "proc"), ("events2_healthy.txt", "events2"),
                                      ("events2_split_brain.txt", "events2")])
def test_detect(name, fmt):
    assert detect((DATA / name).read_text()) == fmt


def test_multi_volume_multi_peer_json():
    _, (models, pgdata) = parse((DATA / "json_healthy_3node.json").read_text())
    assert [(d.volume, d.minor, d.disk) for d in models.devices] == [(0, 10, "UpToDate"), (1, 11, "UpToDate")]
    assert [(c.peer, c.node_id, len(c.peer_devices)) for c in models.connections] == [("storage-b", 1, 2), ("storage-c", 2, 2)]
    tiebreaker = pgdata.connections[1]
    assert tiebreaker.peer_devices[0].peer_disk == "Diskless" and tiebreaker.peer_devices[0].peer_client


def test_same_state_from_json_text_and_events2():
    """The three DRBD 9 formats of one healthy cluster parse to the same state."""
    def shape(resources):
        return [(r.name, r.role, [(d.volume, d.disk) for d in r.devices],
                 [(c.peer, c.state, c.role, [(p.volume, p.replication, p.peer_disk) for p in c.peer_devices])
                  for c in r.connections]) for r in resources if r.name == "models"]

    js = shape(parse((DATA / "json_healthy_3node.json").read_text())[1])
    assert js == shape(parse((DATA / "status_healthy.txt").read_text())[1])
    assert js == shape(parse((DATA / "events2_healthy.txt").read_text())[1])


def test_resync_progress_and_out_of_sync():
    _, [r] = parse((DATA / "json_resync.json").read_text())
    pd = r.connections[0].peer_devices[0]
    assert (pd.replication, pd.done, pd.out_of_sync_kib) == ("SyncTarget", 45.3, 2097152)
    _, [r0, _] = parse((DATA / "proc84_sync.txt").read_text())
    assert r0.connections[0].peer_devices[0].done == 20.5
    assert r0.connections[0].peer_devices[0].out_of_sync_kib == 8303644
    _, [r] = parse((DATA / "events2_resync.txt").read_text())  # 'scratch' was destroyed again
    assert r.name == "pgdata" and r.connections[0].peer_devices[0].done == 61.25
    details = [p.detail for p in find_problems(r)]
    assert details == ["storage-a volume 0: SyncTarget, 61.2% done"]


def test_proc_names_resources_by_minor_and_skips_unconfigured():
    _, res = parse((DATA / "proc84_healthy.txt").read_text())
    assert [r.name for r in res] == ["0", "1", "3"]
    assert res[2].connections[0].peer_devices[0].replication == "VerifyS"


# ---------------------------------------------------------------- every state name of DRBD 9 and 8.4
def _json(role="Primary", disk="UpToDate", conn="Connected", peer_role="Secondary", repl="Established",
          peer_disk="UpToDate") -> str:
    return json.dumps([{"name": "r0", "role": role, "devices": [{"volume": 0, "disk-state": disk}],
                        "connections": [{"name": "b", "connection-state": conn, "peer-role": peer_role,
                                         "peer_devices": [{"volume": 0, "replication-state": repl,
                                                           "peer-disk-state": peer_disk}]}]}])


def _text(role="Primary", disk="UpToDate", conn="Connected", peer_role="Secondary", repl="Established",
          peer_disk="UpToDate") -> str:
    return (f"r0 role:{role}\n  disk:{disk}\n  b connection:{conn} role:{peer_role}\n"
            f"    replication:{repl} peer-disk:{peer_disk}\n")


def _events2(role="Primary", disk="UpToDate", conn="Connected", peer_role="Secondary", repl="Established",
             peer_disk="UpToDate") -> str:
    return (f"exists resource name:r0 role:{role} suspended:no\n"
            f"exists connection name:r0 peer-node-id:1 conn-name:b connection:{conn} role:{peer_role}\n"
            f"exists device name:r0 volume:0 minor:0 disk:{disk} client:no\n"
            f"exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:{repl} peer-disk:{peer_disk}\n"
            "exists -\n")


FORMAT_BUILDERS = pytest.mark.parametrize("build", [_json, _text, _events2], ids=["json", "drbdadm", "events2"])


def _codes(text: str) -> list[str]:
    _, [r] = parse(text)
    return sorted(p.code for p in find_problems(r))


@pytest.mark.parametrize("state", sorted(CONN_STATES_9 | LINK_STATES_84))
@FORMAT_BUILDERS
def test_every_connection_state(state, build):
    want = {"Connected": [], "StandAlone": ["standalone"]}.get(state, ["disconnected"])
    assert _codes(build(conn=state)) == want


@pytest.mark.parametrize("state", sorted(REPL_STATES_9))
@FORMAT_BUILDERS
def test_every_replication_state(state, build):
    want = {"Ahead": ["congested"], "Behind": ["congested"], "Off": [], "Established": [],
            "VerifyS": [], "VerifyT": []}.get(state, ["resyncing"])
    assert _codes(build(repl=state)) == want


@pytest.mark.parametrize("state", sorted(DISK_STATES))
@FORMAT_BUILDERS
def test_every_local_disk_state(state, build):
    want = {"Failed": ["disk_failed"], "Detaching": ["disk_failed"], "Diskless": ["disk_failed"],
            "Outdated": ["disk_degraded"], "Inconsistent": ["disk_degraded"]}.get(state, [])
    assert _codes(build(disk=state)) == want


@pytest.mark.parametrize("state", sorted(DISK_STATES))
@FORMAT_BUILDERS
def test_every_peer_disk_state(state, build):
    want = ["peer_disk_degraded"] if state in ("Outdated", "Inconsistent", "Failed", "Diskless") else []
    assert _codes(build(peer_disk=state)) == want


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("peer_role", sorted(ROLES))
@FORMAT_BUILDERS
def test_every_role_pair(role, peer_role, build):
    want = ["dual_primary"] if role == peer_role == "Primary" else []
    assert _codes(build(role=role, peer_role=peer_role)) == want


@pytest.mark.parametrize("cs", CONN_STATES_84)
def test_every_84_proc_connection_state(cs):
    text = f"version: 8.4.11-1 (api:1/proto:86-101)\n 0: cs:{cs} ro:Secondary/Unknown ds:UpToDate/DUnknown C r-----\n"
    _, [r] = parse(text)
    c = r.connections[0]
    if cs in LINK_STATES_84:
        assert (c.state, c.peer_devices[0].replication) == (cs, "Off")
    else:
        assert c.state == "Connected"
        assert c.peer_devices[0].replication == ("Established" if cs == "Connected" else cs)
    assert "unknown" not in _codes(text)


@pytest.mark.parametrize("field,kw", [("role", {"role": "Leader"}), ("disk", {"disk": "Shiny"}),
                                      ("connection", {"conn": "Rendezvous"}), ("peer role", {"peer_role": "Boss"}),
                                      ("replication", {"repl": "Teleporting"}), ("peer disk", {"peer_disk": "Wobbly"})])
def test_unknown_state_values_are_unknown_with_raw_value(field, kw):
    _, [r] = parse(_json(**kw))
    problems = [p for p in find_problems(r) if p.code == "unknown"]
    raw = next(iter(kw.values()))
    assert len(problems) == 1 and field in problems[0].detail and repr(raw) in problems[0].detail


@pytest.mark.parametrize("text,msg", [("", "empty input"), ("   \n\n", "empty input"),
                                      ("hello world", "unrecognised"), ("[1, 2]", "not an object"),
                                      ('{"name": "r0", "devices": 5}', "not a list"),
                                      ('[{"role": "Primary"}]', "has no name"),
                                      ("r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    peer-disk:UpToDate done:x",
                                       "percentage"),
                                      ("version: 8.4.11\n 0: cs:Connected\n", "without ro:/ds:"),
                                      ("exists resource role:Primary", "without name")])
def test_malformed_input_raises_parse_error(text, msg):
    with pytest.raises(ParseError, match=msg):
        parse(text)
