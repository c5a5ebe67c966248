"""Converge + idempotence wall time of site.yml on 3 fresh SSH test hosts (target: under 5 minutes).

Both runs go through the flow's ansible-runner path (flows.host_bootstrap.runner.run_playbook). The
peer is plain ``ansible-playbook`` doing the same idempotent run in the same session: the ratio is
what the runner path (events, private data dir) costs. Needs root (flows/standins/sshhosts).

    .venv/bin/python benchmarks/bootstrap_converge.py [--hosts 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from flows.host_bootstrap.runner import PLAYBOOKS, ansible_path, run_playbook  # noqa: E402
from flows.standins.sshhosts import HostPool, unavailable_reason  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON line last")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"bootstrap_converge: {reason}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    pool = HostPool()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bootstrap-"))
    try:
        hosts = pool(args.hosts, prefix="bench")
        start_s = time.perf_counter() - t0
        shutil.copytree(REPO / "inventories/ci/group_vars", tmp / "group_vars")
        inv = str(pool.write_inventory(tmp / "hosts.yml", {"gpu_hosts": hosts, "drbd_hosts": hosts,
                                                           "k8s_nodes": hosts, "monitoring": hosts[:1]}))
        converge = run_playbook(inv)
        again = run_playbook(inv)
        t = time.perf_counter()
        peer = subprocess.run(["ansible-playbook", "-i", inv, "site.yml"], cwd=PLAYBOOKS, capture_output=True,
                              text=True, env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
                                              "PATH": ansible_path()})
        peer_s = time.perf_counter() - t
    finally:
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ok = converge.ok and again.ok and peer.returncode == 0
    for name, rep in (("converge", converge), ("idempotent", again)):
        if not rep.ok:
            print(f"{name}: rc={rep.rc} {rep.failure_line()}", file=sys.stderr)
    if peer.returncode != 0:
        print(f"peer ansible-playbook exited {peer.returncode}: {peer.stdout[-1500:]}", file=sys.stderr)
    result = {
        "hosts": args.hosts, "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
        "hosts_start_s": round(start_s, 1),
        "converge_s": converge.seconds, "idempotent_s": again.seconds,
        "converge_plus_idempotent_s": round(converge.seconds + again.seconds, 1),
        "target_s": 300, "changed_first_run": converge.counts()["changed"],
        "changed_second_run": again.counts()["changed"],
        "peer_ansible_playbook_idempotent_s": round(peer_s, 1),
        "runner_over_ansible_playbook_ratio": round(again.seconds / peer_s, 2),
        "ok": ok,
    }
    print(f"{'measure':40} {'value':>10}")
    for k, v in result.items():
        print(f"{k:40} {v!s:>10}")
    if args.json:
        print(json.dumps(result))
    return 0 if ok and result["changed_second_run"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
