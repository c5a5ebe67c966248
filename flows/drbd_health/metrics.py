"""Prometheus metrics in the spirit of drbd-reactor's (prefix ``inferops_drbd_``): textfile-collector
output and an optional Pushgateway push, both through ``prometheus_client``.

State metrics are "info" style: one series per current state with value 1 (the state is a label),
so alerts read ``inferops_drbd_connection_state{connection_state!="Connected"} == 1``.
``inferops_drbd_resource_severity`` is the Nagios code (0 ok, 1 warning, 2 critical, 3 unknown).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from flows.drbd_health.models import RESYNC_STATES, ResourceReport

P = "inferops_drbd_"
JOB = "inferops_drbd"
PROGRESS_STATES = RESYNC_STATES | {"VerifyS", "VerifyT"}


def build_registry(reports: Sequence[ResourceReport], now: float | None = None) -> CollectorRegistry:
    reg = CollectorRegistry()
    res_l = ["host", "resource"]
    g = {
        "severity": Gauge(P + "resource_severity", "Worst problem: 0 ok, 1 warning, 2 critical, 3 unknown", res_l,
                          registry=reg),
        "problem": Gauge(P + "resource_problem", "1 per problem code present", res_l + ["code"], registry=reg),
        "role": Gauge(P + "resource_role", "Local role (1 for the current one)", res_l + ["role"], registry=reg),
        "suspended": Gauge(P + "resource_suspended", "1 if I/O is suspended", res_l, registry=reg),
        "disk": Gauge(P + "device_state", "Local disk state (1 for the current one)",
                      res_l + ["volume", "disk_state"], registry=reg),
        "quorum": Gauge(P + "device_quorum", "1 if the device has quorum", res_l + ["volume"], registry=reg),
        "conn": Gauge(P + "connection_state", "Connection state (1 for the current one)",
                      res_l + ["peer", "connection_state"], registry=reg),
        "congested": Gauge(P + "connection_congested", "1 if the connection is congested", res_l + ["peer"],
                           registry=reg),
        "repl": Gauge(P + "peerdevice_replication_state", "Replication state (1 for the current one)",
                      res_l + ["peer", "volume", "replication_state"], registry=reg),
        "pdisk": Gauge(P + "peerdevice_disk_state", "Peer disk state (1 for the current one)",
                       res_l + ["peer", "volume", "peer_disk_state"], registry=reg),
        "oos": Gauge(P + "peerdevice_outofsync_bytes", "Bytes out of sync with this peer",
                     res_l + ["peer", "volume"], registry=reg),
        "done": Gauge(P + "peerdevice_resync_done_ratio", "Resync/verify progress, 0..1 (only while one runs)",
                      res_l + ["peer", "volume"], registry=reg),
    }
    hosts = Gauge(P + "host_readable", "1 if the host answered with readable DRBD status and resources", ["host"],
                  registry=reg)
    ts = Gauge(P + "last_check_timestamp_seconds", "When this check ran (Unix time)", registry=reg)
    ts.set(time.time() if now is None else now)
    host_ok: dict[str, bool] = {}
    for r in reports:
        lab = (r.host, r.name)
        g["severity"].labels(*lab).set(r.severity.nagios)
        host_ok[r.host] = host_ok.get(r.host, True) and r.name != "-"  # "-": the host as a whole was unreadable
        for code in sorted({p.code for p in r.problems}):
            g["problem"].labels(*lab, code).set(1)
        if r.name == "-":
            continue
        g["role"].labels(*lab, r.role).set(1)
        g["suspended"].labels(*lab).set(int(bool(r.suspended)))
        for v in r.volumes:
            vol = str(v["volume"])
            g["disk"].labels(*lab, vol, v["disk"]).set(1)
            if v["quorum"] is not None:
                g["quorum"].labels(*lab, vol).set(int(v["quorum"]))
        for c in r.peers:
            g["conn"].labels(*lab, c["peer"], c["state"]).set(1)
            g["congested"].labels(*lab, c["peer"]).set(int(c["congested"]))
            for pd in c["peer_devices"]:
                vol = str(pd["volume"])
                g["repl"].labels(*lab, c["peer"], vol, pd["replication"]).set(1)
                g["pdisk"].labels(*lab, c["peer"], vol, pd["peer_disk"]).set(1)
                if pd["out_of_sync_kib"] is not None:
                    g["oos"].labels(*lab, c["peer"], vol).set(pd["out_of_sync_kib"] * 1024)
                if pd["done"] is not None and pd["replication"] in PROGRESS_STATES:
                    g["done"].labels(*lab, c["peer"], vol).set(pd["done"] / 100.0)
    for h, ok in host_ok.items():
        hosts.labels(h).set(int(ok))
    return reg


def render(reg: CollectorRegistry) -> str:
    return generate_latest(reg).decode()

