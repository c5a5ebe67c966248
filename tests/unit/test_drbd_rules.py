"""Severity policy, Nagios aggregation, hints, metrics, the event transition and the automation file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from flows.common.metrics import write_textfile
from flows.common.ssh import CommandResult
from flows.drbd_health.collect import judge, read_capture, split_probe_output, volumes_marked
from flows.drbd_health.flow import turned_critical
from flows.drbd_health.metrics import build_registry
from flows.drbd_health.models import CODES, DrbdPolicy, Level, worst
from flows.drbd_health.parse import parse
from flows.drbd_health.rules import evaluate, hints, overall, status_line, unknown_report

DATA = Path(__file__).parents[1] / "data" / "drbd"
ROOM = Path(__file__).parents[2] / "flows" / "drbd_health"


def reports_of(*names, policy=None):
    return [r for n in names for r in judge(read_capture(DATA / n), policy or DrbdPolicy())]


def test_policy_defaults_match_the_issue_table():
    assert DrbdPolicy().model_dump() == {
        "standalone": "critical", "split_brain": "critical", "disconnected": "critical", "resyncing": "warning",
        "out_of_sync": "warning", "disk_failed": "critical", "disk_degraded": "critical",
        "peer_disk_degraded": "warning", "quorum_lost": "critical", "suspended": "critical",
        "dual_primary": "critical", "congested": "warning"}
    assert len(CODES) == 12


def test_policy_overrides_and_validation():
    [r] = reports_of("json_dual_primary.json", policy=DrbdPolicy(dual_primary="warning"))
    assert r.severity is Level.warning
    [r] = reports_of("json_resync.json", policy=DrbdPolicy(resyncing="ok"))
    assert r.severity is Level.ok and [p.code for p in r.problems] == ["resyncing"]  # muted, still listed
    with pytest.raises(ValidationError):
        DrbdPolicy(standalone="fatal")
    with pytest.raises(ValidationError):
        DrbdPolicy(no_such_code="warning")


def test_worst_and_nagios_codes():
    assert [lv.nagios for lv in Level] == [0, 1, 2, 3]
    assert worst([Level.ok, Level.warning]) is Level.warning
    assert worst([Level.warning, Level.unknown]) is Level.unknown
    assert worst([Level.unknown, Level.critical]) is Level.critical
    assert worst([]) is Level.ok
    assert overall([]) is Level.unknown  # nothing checked is not OK


def test_status_line_is_one_nagios_line_with_perfdata():
    rs = reports_of("json_split_brain.json", "json_resync.json", "json_healthy_3node.json")
    line = status_line(rs)
    assert line.startswith("DRBD CRITICAL - json_split_brain/models critical: ")
    assert line.endswith("| ok=2 warning=1 critical=1 unknown=0") and "\n" not in line
    assert status_line(reports_of("json_healthy_3node.json")) == \
        "DRBD OK - 2 resources ok | ok=2 warning=0 critical=0 unknown=0"
    many = [unknown_report(f"h{i}", "x | y") for i in range(7)]
    assert status_line(many) == ("DRBD UNKNOWN - " + "; ".join(f"h{i}/- unknown: x / y" for i in range(5))
                                 + "; +2 more | ok=0 warning=0 critical=0 unknown=7")


def test_split_brain_hints_come_first_and_name_the_resource():
    [r] = reports_of("json_split_brain.json")
    hs = hints(r)
    assert hs[0].startswith("Split-brain on models") and "drbdadm connect --discard-my-data models" in hs[0]
    assert len(hs) == 2


def test_hints_never_carry_shell_syntax_from_a_host():
    _, [r] = parse('[{"name": "r0;reboot", "role": "Primary", "connections": '
                   '[{"name": "b", "connection-state": "StandAlone"}]}]')
    [hint] = hints(evaluate("h", r, DrbdPolicy()))
    assert "reboot" not in hint and "drbdadm connect <resource>" in hint


def test_split_brain_marker_files():
    out = split_probe_output(CommandResult(
        "h1", 0, "@@inferops-mark drbd-split-brain-detected-pg-data-0\n@@inferops-source drbdsetup-json\n"
        + (DATA / "json_healthy_3node.json").read_text().replace('"pgdata"', '"pg-data"'), "", None, 0.1))
    assert [src for src, _ in out.sections] == ["drbdsetup-json"] and volumes_marked(out.marks, "pg-data") == {"0"}
    by_name = {r.name: r for r in judge(out, DrbdPolicy())}
    assert [p.code for p in by_name["pg-data"].problems] == ["split_brain"]
    assert by_name["models"].severity is Level.ok


@pytest.mark.parametrize("result,reason", [
    (CommandResult("h", None, "", "", "timed out after 5s", 5.0), "unreachable: timed out after 5s"),
    (CommandResult("h", 3, "@@inferops-failed drbdsetup-json: sh: 1: drbdsetup: not found\n"
                   "@@inferops-failed drbdadm-status: sh: 1: drbdadm: not found\n"
                   "@@inferops-failed proc-drbd: cat: /proc/drbd: No such file or directory\n", "", None, 0.1),
     "no DRBD: drbdsetup-json: sh: 1: drbdsetup: not found; drbdadm-status: sh: 1: drbdadm: not found; "
     "proc-drbd: cat: /proc/drbd: No such file or directory"),
])
def test_unreachable_and_drbd_less_hosts_are_unknown_with_reason(result, reason):
    [r] = judge(split_probe_output(result), DrbdPolicy())
    assert (r.host, r.name, r.severity) == ("h", "-", Level.unknown)
    assert r.problems[0].detail == reason


def test_fallback_source_is_parsed_with_its_format():
    text = (DATA / "proc84_sync.txt").read_text()
    out = split_probe_output(CommandResult("h", 0, "@@inferops-failed drbdsetup-json: x\n@@inferops-failed "
                                           "drbdadm-status: y\n@@inferops-source proc-drbd\n" + text, "", None, 0.1))
    rs = judge(out, DrbdPolicy())
    assert [(r.name, r.source) for r in rs] == [("0", "proc-drbd"), ("1", "proc-drbd")]


def test_unreadable_tool_output_falls_back_to_proc_drbd():
    """drbd-utils of the 8.4 era print XML for `drbdadm status`: the 8.4 kernel's /proc/drbd is read instead."""
    xml = '<drbd-status version="8.4.11" api="1">\n<resources config_file="/etc/drbd.conf">\n'
    out = split_probe_output(CommandResult("h", 0, "@@inferops-failed drbdsetup-json: unrecognized option\n"
                                           "@@inferops-source drbdadm-status\n" + xml + "@@inferops-source proc-drbd\n"
                                           + (DATA / "proc84_wfconnection.txt").read_text(), "", None, 0.1))
    rs = judge(out, DrbdPolicy())
    assert [(r.name, r.source, r.severity.value) for r in rs] == [("0", "proc-drbd", "critical"),
                                                                 ("1", "proc-drbd", "critical")]
    out.sections.pop()  # without /proc/drbd: UNKNOWN, saying why
    [r] = judge(out, DrbdPolicy())
    assert r.severity is Level.unknown
    assert r.problems[0].detail.startswith("unparseable drbdadm-status output: drbdadm status line 1: unexpected")


def test_metrics_textfile(tmp_path):
    rs = reports_of("json_resync.json", "json_split_brain.json") + [unknown_report("dead", "unreachable: refused")]
    path = write_textfile(build_registry(rs, now=1700000000.0), tmp_path / "sub" / "drbd.prom")
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    sev = {(s.labels["host"], s.labels["resource"]): s.value for s in fams["inferops_drbd_resource_severity"].samples}
    assert sev == {("json_resync", "models"): 1, ("json_split_brain", "models"): 2, ("dead", "-"): 3}
    oos = {(s.labels["host"], s.labels["volume"]): s.value
           for s in fams["inferops_drbd_peerdevice_outofsync_bytes"].samples}
    assert oos[("json_resync", "0")] == 2097152 * 1024 and oos[("json_split_brain", "0")] == 18432 * 1024
    [done] = fams["inferops_drbd_peerdevice_resync_done_ratio"].samples
    assert done.value == pytest.approx(0.453)
    conn = {(s.labels["host"], s.labels["connection_state"]) for s in fams["inferops_drbd_connection_state"].samples}
    assert conn == {("json_resync", "Connected"), ("json_split_brain", "StandAlone")}
    up = {s.labels["host"]: s.value for s in fams["inferops_drbd_host_readable"].samples}
    assert up == {"json_resync": 1, "json_split_brain": 1, "dead": 0}
    assert fams["inferops_drbd_last_check_timestamp_seconds"].samples[0].value == 1700000000.0
    assert not list(tmp_path.glob("sub/*.tmp*"))  # atomic rename left no temp file


def test_turned_critical_needs_a_transition():
    rs = reports_of("json_split_brain.json", "json_resync.json")
    assert [r.host for r in turned_critical({}, rs)] == ["json_split_brain"]
    assert turned_critical({"json_split_brain/models": "critical"}, rs) == []
    assert [r.host for r in turned_critical({"json_split_brain/models": "warning"}, rs)] == ["json_split_brain"]


def test_example_automation_is_a_valid_prefect_automation():
    from prefect.events.schemas.automations import AutomationCore

    doc = yaml.safe_load((ROOM / "automations" / "drbd-critical.yaml").read_text())
    [auto] = [AutomationCore.model_validate(a) for a in doc["automations"]]
    assert auto.trigger.expect == {"inferops.drbd.critical"}
    assert auto.actions[0].type == "send-notification"


def test_report_json_round_trip():
    [r] = reports_of("json_resync.json")
    doc = json.loads(json.dumps(r.as_json()))
    assert set(doc) == {"host", "name", "severity", "problems", "volumes", "peers"}
    assert doc["problems"] == [{"code": "resyncing", "detail": "storage-a volume 0: SyncTarget, 45.3% done"}]
