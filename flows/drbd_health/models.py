"""DRBD domain model: state vocabularies, parsed resources, problems, the severity policy.

State names are DRBD's own, from ``drbd_strings.c`` (DRBD 9 and the 8.4 kernel module, whose
``/proc/drbd`` connection states also carry the replication states). Pure: no Prefect import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# --- DRBD 9 (drbd_strings.c: __conn_state_names, __repl_state_names, __role_state_names, __disk_state_names)
CONN_STATES_9 = frozenset({"StandAlone", "Disconnecting", "Unconnected", "Timeout", "BrokenPipe",
                           "NetworkFailure", "ProtocolError", "TearDown", "Connecting", "Connected"})
REPL_STATES_9 = frozenset({"Off", "Established", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT",
                           "WFSyncUUID", "SyncSource", "SyncTarget", "VerifyS", "VerifyT", "PausedSyncS",
                           "PausedSyncT", "Ahead", "Behind"})
ROLES = frozenset({"Unknown", "Primary", "Secondary"})
DISK_STATES_9 = frozenset({"Diskless", "Attaching", "Detaching", "Failed", "Negotiating", "Inconsistent",
                           "Outdated", "DUnknown", "Consistent", "UpToDate"})
# --- DRBD 8.4 (drbd_conn_s_names: connection and replication states in one list; drbd_disk_s_names)
CONN_STATES_84 = ("StandAlone", "Disconnecting", "Unconnected", "Timeout", "BrokenPipe", "NetworkFailure",
                  "ProtocolError", "WFConnection", "WFReportParams", "TearDown", "Connected", "StartingSyncS",
                  "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID", "SyncSource", "SyncTarget",
                  "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT", "Ahead", "Behind")
DISK_STATES_84 = frozenset({"Diskless", "Attaching", "Failed", "Negotiating", "Inconsistent", "Outdated",
                            "DUnknown", "Consistent", "UpToDate"})
# 8.4's cs: values that are link states (the rest are replication states of a Connected link)
LINK_STATES_84 = frozenset(CONN_STATES_84[:10])

CONN_STATES = CONN_STATES_9 | LINK_STATES_84
REPL_STATES = REPL_STATES_9
DISK_STATES = DISK_STATES_9 | DISK_STATES_84

RESYNC_STATES = frozenset({"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "StartingSyncS",
                           "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID"})
CONGESTION_STATES = frozenset({"Ahead", "Behind"})  # on-congestion pull-ahead mode
DEGRADED_DISKS = frozenset({"Outdated", "Inconsistent"})
PEER_DEGRADED_DISKS = frozenset({"Outdated", "Inconsistent", "Failed", "Diskless"})


class Level(StrEnum):
    """A check result. Nagios codes: ok 0, warning 1, critical 2, unknown 3."""

    ok = "ok"
    warning = "warning"
    critical = "critical"
    unknown = "unknown"

    @property
    def nagios(self) -> int:
        return {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[self.value]

    @property
    def rank(self) -> int:
        # worst-of ordering: an unknown may hide a critical, so it outranks a known warning
        return {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}[self.value]


def worst(levels: list[Level] | tuple[Level, ...]) -> Level:
    return max(levels, key=lambda lv: lv.rank, default=Level.ok)


Severity = Literal["ok", "warning", "critical"]


class DrbdPolicy(BaseModel):
    """Severity of each problem code (the issue's table are the defaults). ``ok`` mutes a code:
    it is still listed in the report but does not raise the resource's severity."""

    model_config = ConfigDict(extra="forbid")

    standalone: Severity = Field("critical", description="Connection StandAlone (split-brain or admin disconnect)")
    split_brain: Severity = Field("critical", description="StandAlone with out-of-sync data, or a split-brain handler mark")
    disconnected: Severity = Field("critical", description="Connection neither Connected nor StandAlone")
    resyncing: Severity = Field("warning", description="Resync running, paused or starting")
    out_of_sync: Severity = Field("warning", description="Established but with out-of-sync data")
    disk_failed: Severity = Field("critical", description="Local disk Failed/Detaching, or Diskless on a non-client")
    disk_degraded: Severity = Field("critical", description="Local disk Outdated/Inconsistent outside a resync")
    peer_disk_degraded: Severity = Field("warning", description="Peer disk degraded while connected, not resyncing")
    quorum_lost: Severity = Field("critical", description="The device reports no quorum")
    suspended: Severity = Field("critical", description="I/O suspended")
    dual_primary: Severity = Field("critical", description="Primary locally and on a peer")
    congested: Severity = Field("warning", description="The connection is congested (or Ahead/Behind)")

    def level(self, code: str) -> Level:
        return Level.unknown if code == UNKNOWN_CODE else Level(getattr(self, code))


CODES = tuple(DrbdPolicy.model_fields)
UNKNOWN_CODE = "unknown"  # an unreadable host, unparseable output or a state value DRBD does not define


@dataclass
class Device:
    volume: int
    minor: int | None = None
    disk: str = "DUnknown"
    client: bool = False  # intentionally diskless
    quorum: bool | None = None  # None: not reported


@dataclass
class PeerDevice:
    volume: int
    replication: str = "Established"
    peer_disk: str = "DUnknown"
    peer_client: bool = False
    out_of_sync_kib: int | None = None
    done: float | None = None  # resync/verify percent done


@dataclass
class Connection:
    peer: str
    state: str = "Connected"
    role: str = "Unknown"  # the peer's role
    node_id: int | None = None
    congested: bool = False
    peer_devices: list[PeerDevice] = field(default_factory=list)


@dataclass
class Resource:
    name: str
    role: str = "Unknown"
    suspended: list[str] = field(default_factory=list)  # reasons (user, no-data, fencing, quorum); empty: running
    devices: list[Device] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    split_brain_mark: bool = False  # a split-brain handler ran (events2 helper call or marker file)


@dataclass
class Problem:
    code: str
    detail: str


@dataclass
class ResourceReport:
    host: str
    name: str
    severity: Level
    problems: list[Problem]
    volumes: list[dict]
    peers: list[dict]
    source: str = ""  # which format/command it came from
    role: str = "Unknown"
    suspended: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"host": self.host, "name": self.name, "severity": self.severity.value,
                "problems": [{"code": p.code, "detail": p.detail} for p in self.problems],
                "volumes": self.volumes, "peers": self.peers}
