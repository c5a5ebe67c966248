"""DRBD health fan-out: the ``drbd_health`` flow against N SSH hosts, and an OpenSSH peer doing the same.

N network-namespace Debian hosts with sshd (flows/standins/sshhosts, one shared read-only root) run stand-in
``drbdsetup`` printing DRBD 9 captures (one host in ten is resyncing). Measured, alternating, best of
``--repeat`` runs each (the machine is shared):

* ``inferops``: the whole flow inline (inventory → asyncssh probe on every host → parse → rules →
  textfile metrics), concurrency ``--concurrency``;
* ``openssh``: the OpenSSH client, one ``ssh`` process per host with the same probe script,
  ``--concurrency`` at a time (what pssh/xargs -P do), same key exchange (curve25519), output only
  checked for the probe's marker, not parsed (its floor).

Per-host time: p50/p99 of one more probe of every host, one host at a time through the flow's own SSH
adapter (connect, authenticate, run the probe, close; no contention). Also reported: the fan-out's
wall time divided by N. Target: N=200 in <= 10 s on 2 cores.

    .venv/bin/python benchmarks/drbd_fanout.py [--hosts 200] [--concurrency 64] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DATA = REPO / "tests" / "data" / "drbd"
STAND_IN = """#!/bin/sh
# stand-in drbdsetup: one host in ten is resyncing
case "$(hostname)" in *0) exec cat /etc/inferops-bench/resync.json ;; esac
exec cat /etc/inferops-bench/healthy.json
"""


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_inferops(inventory: Path, concurrency: int, textfile: Path) -> tuple[float, dict]:
    from flows.common.runtime import run_flow
    from flows.drbd_health.flow import drbd_health

    t, cpu = time.perf_counter(), time.process_time()
    report = run_flow(drbd_health, inventory=str(inventory), group="drbd_hosts", concurrency=concurrency,
                      timeout_s=30.0, textfile=str(textfile))
    report["client_cpu_s"] = time.process_time() - cpu  # this process only (sshd's side is not counted)
    return time.perf_counter() - t, report


def run_openssh(hosts, key_file: str, known_hosts: str, concurrency: int) -> tuple[float, int]:
    from flows.drbd_health.collect import PROBE

    def one(h) -> bool:
        p = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
                            "-o", "KexAlgorithms=curve25519-sha256",  # what asyncssh negotiates here
                            "-i", key_file, f"root@{h.address}", PROBE], capture_output=True, text=True, timeout=60)
        return p.returncode == 0 and "@@inferops-source drbdsetup-json" in p.stdout

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        ok = sum(ex.map(one, hosts))
    return time.perf_counter() - t, ok


def per_host_seconds(hosts, known_hosts: str) -> list[float]:
    """Each host probed alone, one after another: its SSH round trip without contention or slot waits."""
    from flows.common.ssh import run_many
    from flows.drbd_health.collect import PROBE

    out, bad = [], []
    for h in hosts:
        [r] = run_many([h], PROBE, known_hosts=known_hosts, timeout_s=30.0, connect_timeout_s=30.0)
        if r.error or r.exit_status:
            bad.append(f"{r.host}: {r.error or r.exit_status}")
        out.append(r.seconds)
    if bad:
        raise SystemExit(f"drbd_fanout: {len(bad)} hosts failed the probe, e.g. {bad[:3]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from flows.standins.sshhosts import HostPool, unavailable_reason

    if reason := unavailable_reason():
        print(f"drbd_fanout: {reason}", file=sys.stderr)
        return 2
    os.environ["INFEROPS_OFFLINE"] = "1"  # inline flow, as cron runs it; no Prefect API
    pool = HostPool()
    try:
        t = time.perf_counter()
        hosts = pool.start(a.hosts, prefix="bench", shared_root=True, timeout_s=120)
        start_s = time.perf_counter() - t
        root = hosts[0].root  # the shared root: write the stand-ins once for every host
        (root / "etc/inferops-bench").mkdir(parents=True, exist_ok=True)
        (root / "etc/inferops-bench/healthy.json").write_text((DATA / "json_healthy_3node.json").read_text())
        (root / "etc/inferops-bench/resync.json").write_text((DATA / "json_resync.json").read_text())
        (root / "usr/sbin/drbdsetup").write_text(STAND_IN)
        (root / "usr/sbin/drbdsetup").chmod(0o755)
        tmp = Path(tempfile.mkdtemp(prefix="drbd-bench-"))
        inventory = tmp / "hosts.yml"
        pool.write_inventory(inventory, {"drbd_hosts": hosts})
        os.environ["INFEROPS_SSH__KNOWN_HOSTS"] = pool.known_hosts
        os.environ["INFEROPS_STATE_DIR"] = str(tmp / "state")
        from flows.common.settings import reload_settings

        reload_settings()
        run_inferops(inventory, a.concurrency, tmp / "warm.prom")  # warm imports and caches once

        ours, peer, cpu, report = [], [], [], {}
        print(f"{len(hosts)} hosts up in {start_s:.1f} s", file=sys.stderr)
        for _ in range(a.repeat):
            s, report = run_inferops(inventory, a.concurrency, tmp / "drbd.prom")
            ours.append(s)
            cpu.append(report["client_cpu_s"])
            s, ok = run_openssh(hosts, pool.key_file, pool.known_hosts, a.concurrency)
            if ok != len(hosts):
                raise SystemExit(f"drbd_fanout: openssh peer reached {ok}/{len(hosts)} hosts")
            peer.append(s)
        sev = [r["severity"] for r in report["resources"]]
        if len({r["host"] for r in report["resources"]}) != len(hosts) or "unknown" in sev:
            raise SystemExit(f"drbd_fanout: flow did not read every host: {report['status']}")
        per_host = per_host_seconds(hosts, pool.known_hosts)
    finally:
        pool.close()

    best, best_peer = min(ours), min(peer)
    result = {
        "hosts": a.hosts, "concurrency": a.concurrency, "repeat": a.repeat, "cpus": os.cpu_count(),
        "hosts_start_s": round(start_s, 2),
        "inferops_s": round(best, 3), "openssh_s": round(best_peer, 3),
        "ratio_inferops_over_openssh": round(best / best_peer, 3),
        "per_host_p50_ms": round(1000 * statistics.median(per_host), 1),
        "per_host_p99_ms": round(1000 * _pct(per_host, 0.99), 1),
        "fanout_ms_per_host": round(1000 * best / a.hosts, 1),
        "inferops_client_cpu_s": round(min(cpu), 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "resources": len(sev), "warning": sev.count("warning"), "ok": sev.count("ok"),
        "target_s": 10.0, "meets_target": best <= 10.0,
    }
    print(f"{'side':<10} {'best s':>8}  runs")
    print(f"{'inferops':<10} {best:>8.2f}  {', '.join(f'{x:.2f}' for x in ours)}  (client CPU {min(cpu):.2f} s)")
    print(f"{'openssh':<10} {best_peer:>8.2f}  {', '.join(f'{x:.2f}' for x in peer)}")
    print(f"{a.hosts} hosts, {len(sev)} resources ({sev.count('warning')} warning); per host p50 "
          f"{result['per_host_p50_ms']} ms, p99 {result['per_host_p99_ms']} ms; ratio {result['ratio_inferops_over_openssh']}")
    if a.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
