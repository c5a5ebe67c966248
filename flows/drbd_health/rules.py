"""Health rules: a parsed resource → problems (the issue's codes) → severity; Nagios aggregation;
remediation hints (text for humans, never executed). Pure: no Prefect import."""

from __future__ import annotations

import re
from dataclasses import asdict

from flows.drbd_health.models import (
    CONGESTION_STATES,
    CONN_STATES,
    DEGRADED_DISKS,
    DISK_STATES,
    PEER_DEGRADED_DISKS,
    REPL_STATES,
    RESYNC_STATES,
    ROLES,
    UNKNOWN_CODE,
    DrbdPolicy,
    Level,
    Problem,
    Resource,
    ResourceReport,
    worst,
)


def _raw(v: str) -> str:
    return repr(v[:60])


def _unknown_states(r: Resource) -> list[Problem]:
    out = []

    def check(value: str, known: frozenset[str], what: str) -> None:
        if value not in known:
            out.append(Problem(UNKNOWN_CODE, f"unknown {what} {_raw(value)}"))

    check(r.role, ROLES, "role")
    for d in r.devices:
        check(d.disk, DISK_STATES, f"disk state on volume {d.volume}:")
    for c in r.connections:
        check(c.state, CONN_STATES, f"connection state to {c.peer}:")
        check(c.role, ROLES, f"peer role of {c.peer}:")
        for p in c.peer_devices:
            check(p.replication, REPL_STATES, f"replication state to {c.peer} volume {p.volume}:")
            check(p.peer_disk, DISK_STATES, f"peer disk state of {c.peer} volume {p.volume}:")
    return out


def find_problems(r: Resource, split_brain_volumes: frozenset[str] = frozenset()) -> list[Problem]:
    """Every problem of one resource. ``split_brain_volumes``: volumes with a split-brain handler
    marker file (``/var/run/drbd/splitbrain/drbd-split-brain-detected-RES-VOL``)."""
    probs = _unknown_states(r)
    add = probs.append
    resyncing_vols = {p.volume for c in r.connections for p in c.peer_devices if p.replication in RESYNC_STATES}

    if r.split_brain_mark or split_brain_volumes:
        where = f" (volumes {', '.join(sorted(split_brain_volumes))})" if split_brain_volumes else ""
        add(Problem("split_brain", f"split-brain handler ran{where}"))
    if r.suspended:
        add(Problem("suspended", f"I/O suspended ({', '.join(r.suspended)})"))
    for d in r.devices:
        v = f"volume {d.volume}"
        if d.disk in ("Failed", "Detaching") or (d.disk == "Diskless" and not d.client):
            add(Problem("disk_failed", f"{v}: local disk {d.disk}"))
        elif d.disk in DEGRADED_DISKS and d.volume not in resyncing_vols:
            add(Problem("disk_degraded", f"{v}: local disk {d.disk} and no resync running"))
        if d.quorum is False:
            add(Problem("quorum_lost", f"{v}: no quorum"))
    for c in r.connections:
        if r.role == "Primary" and c.role == "Primary":
            add(Problem("dual_primary", f"Primary here and on peer {c.peer}"))
        if c.congested:
            add(Problem("congested", f"connection to {c.peer} congested"))
        if c.state == "StandAlone":
            add(Problem("standalone", f"connection to {c.peer} StandAlone"))
            oos = sum(p.out_of_sync_kib or 0 for p in c.peer_devices)
            if oos > 0 and not r.split_brain_mark and not split_brain_volumes:
                add(Problem("split_brain", f"StandAlone from {c.peer} with {oos} KiB out of sync"))
            continue
        if c.state != "Connected":
            if c.state in CONN_STATES:
                add(Problem("disconnected", f"connection to {c.peer} {c.state}"))
            continue
        for p in c.peer_devices:
            v = f"{c.peer} volume {p.volume}"
            if p.replication in RESYNC_STATES:
                pct = f", {p.done:.1f}% done" if p.done is not None else ""
                add(Problem("resyncing", f"{v}: {p.replication}{pct}"))
                continue
            if p.replication in CONGESTION_STATES:
                add(Problem("congested", f"{v}: replication {p.replication} (pulled ahead on congestion)"))
            if p.replication == "Established" and (p.out_of_sync_kib or 0) > 0:
                add(Problem("out_of_sync", f"{v}: {p.out_of_sync_kib} KiB out of sync"))
            if p.peer_disk in PEER_DEGRADED_DISKS and not (p.peer_disk == "Diskless" and p.peer_client):
                add(Problem("peer_disk_degraded", f"{v}: peer disk {p.peer_disk}"))
    return probs


def evaluate(host: str, r: Resource, policy: DrbdPolicy, *, source: str = "",
             split_brain_volumes: frozenset[str] = frozenset()) -> ResourceReport:
    problems = find_problems(r, split_brain_volumes)
    severity = worst([policy.level(p.code) for p in problems])
    return ResourceReport(host=host, name=r.name, severity=severity, problems=problems,
                          volumes=[asdict(d) for d in r.devices],
                          peers=[asdict(c) for c in r.connections], source=source,
                          role=r.role, suspended=list(r.suspended))


def unknown_report(host: str, reason: str, source: str = "") -> ResourceReport:
    """A host (or input) we could not read: one UNKNOWN entry named ``-`` with the reason, never dropped."""
    return ResourceReport(host=host, name="-", severity=Level.unknown,
                          problems=[Problem(UNKNOWN_CODE, " ".join(reason.split())[:300])],
                          volumes=[], peers=[], source=source)


def overall(reports: list[ResourceReport]) -> Level:
    return worst([r.severity for r in reports]) if reports else Level.unknown


def status_line(reports: list[ResourceReport]) -> str:
    """The Nagios plugin's first output line: worst resources first (at most 5), then perfdata."""
    def what(r: ResourceReport) -> str:
        return ", ".join(dict.fromkeys(p.detail if p.code == UNKNOWN_CODE else p.code for p in r.problems))

    bad = sorted((r for r in reports if r.severity is not Level.ok), key=lambda r: -r.severity.rank)
    summary = "; ".join(f"{r.host}/{r.name} {r.severity.value}: {what(r)}" for r in bad[:5])
    summary += f"; +{len(bad) - 5} more" if len(bad) > 5 else ""
    if not bad:
        summary = f"{len(reports)} resources ok" if reports else "nothing checked"
    summary = summary.replace("|", "/")  # '|' starts the perfdata
    perf = " ".join(f"{lv.value}={sum(r.severity is lv for r in reports)}" for lv in Level)
    return f"DRBD {overall(reports).value.upper()} - {summary} | {perf}"


HINTS: dict[str, str] = {
    "split_brain": (
        "Split-brain on {res}: pick the victim whose changes since the split are discarded. "
        "On the victim: `drbdadm disconnect {res}`, `drbdadm secondary {res}`, "
        "`drbdadm connect --discard-my-data {res}`. On the survivor, if StandAlone: `drbdadm connect {res}`. "
        "Resync starts by itself; watch `drbdadm status {res}`, then remove "
        "/var/run/drbd/splitbrain/drbd-split-brain-detected-{res}-* markers."),
    "standalone": ("{res} is StandAlone: check `journalctl -k | grep drbd` for 'Split-Brain detected'; "
                   "if none, reconnect with `drbdadm connect {res}` on both nodes."),
    "disconnected": ("{res} cannot reach a peer: check the replication network and firewall (port from "
                     "`drbdadm dump {res}`), and that the peer has the resource up (`drbdadm status {res}`)."),
    "disk_failed": ("{res}: the backing disk failed. Check `dmesg` and SMART; replace it, then "
                    "`drbdadm attach {res}` (a full resync follows)."),
    "disk_degraded": ("{res}: local data is Outdated/Inconsistent with no resync: connect it to an UpToDate "
                      "peer (`drbdadm connect {res}`); do not promote this node."),
    "quorum_lost": "{res}: quorum lost; restore connectivity to a majority of nodes before any failover.",
    "suspended": ("{res}: I/O suspended (fencing, quorum or no-data): resolve the cause, then "
                  "`drbdadm resume-io {res}`."),
    "dual_primary": ("{res}: Primary on two nodes. Unless allow-two-primaries with a cluster filesystem is "
                     "intended, demote one (`drbdadm secondary {res}`) after stopping its users."),
    "out_of_sync": "{res}: blocks out of sync while Established: run `drbdadm verify {res}` then reconnect.",
    "peer_disk_degraded": "{res}: a peer's disk is degraded: check that node's `drbdadm status {res}`.",
    "resyncing": "{res}: resync running; no action unless `done` stops increasing.",
    "congested": "{res}: replication link congested: check bandwidth and the resync rate.",
}


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def hints(report: ResourceReport) -> list[str]:
    """Remediation steps for a resource's problems, most urgent first. For humans; never executed.

    The resource name comes from the host's output; one that is not a plain DRBD name is shown as
    ``<resource>`` so that no copy-pasted command carries shell syntax from a remote host."""
    codes = {p.code for p in report.problems}
    name = report.name if _SAFE_NAME.fullmatch(report.name) else "<resource>"
    return [text.format(res=name) for code, text in HINTS.items() if code in codes]
