"""``make demo`` for host-bootstrap: a check-mode run against freshly started SSH test hosts when this
machine can make them (root, network namespaces: see flows/standins/sshhosts), else a syntax check and the
task plan of every playbook. Writes ``demo-output/host-bootstrap/summary.json`` and ``hosts.md`` or
``plan.txt``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from flows.common.runtime import run_flow
from flows.host_bootstrap.flow import gpu_host_bootstrap
from flows.host_bootstrap.models import BootstrapFailed, BootstrapReport
from flows.host_bootstrap.runner import PLAYBOOKS, ansible_path

REPO = PLAYBOOKS.parent
PLAYBOOK_FILES = ("site.yml", "gpu_host.yml", "storage_host.yml")


def _test_hosts_reason() -> str | None:
    from flows.standins.sshhosts import unavailable_reason

    return unavailable_reason()


def _check_mode_run(out: Path) -> str:
    from flows.standins.sshhosts import HostPool

    pool = HostPool()
    tmp = Path(tempfile.mkdtemp(prefix="inferops-demo-inv-"))
    try:
        hosts = pool(2, prefix="demo")
        shutil.copytree(REPO / "inventories" / "ci" / "group_vars", tmp / "group_vars")
        inv = pool.write_inventory(tmp / "hosts.yml", {"gpu_hosts": hosts, "drbd_hosts": hosts,
                                                       "k8s_nodes": hosts, "monitoring": hosts[:1]})
        try:
            report = BootstrapReport(**run_flow(gpu_host_bootstrap, inventory=str(inv), check_mode=True))
        except BootstrapFailed as exc:
            report = exc.report
    finally:
        pool.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = ["| host | status | ok | changed (would change) | skipped |", "|---|---|---|---|---|"]
    rows += [f"| {h.host} | {h.status} | {h.ok} | {h.changed} | {h.skipped} |" for h in report.hosts]
    (out / "hosts.md").write_text("# site.yml in check mode on 2 fresh test hosts\n\n" + "\n".join(rows) + "\n")
    summary = {"mode": "check", "playbook": report.playbook, "ok": report.ok, "seconds": report.seconds,
               "counts": report.counts(), "hosts": [h.model_dump() for h in report.hosts]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not report.ok:
        raise RuntimeError(report.failure_line())
    return f"check mode on {len(report.hosts)} test hosts: {report.counts()['changed']} would change, ok={report.ok}"


def _plan(out: Path, reason: str) -> str:
    lines, ok = [], True
    for pb in PLAYBOOK_FILES:
        r = subprocess.run(["ansible-playbook", "-i", str(REPO / "inventories/staging/hosts.yml"), pb,
                            "--list-tasks", "--list-tags"], cwd=PLAYBOOKS,
                           capture_output=True, text=True,
                           env={**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "PATH": ansible_path()})
        ok = ok and r.returncode == 0
        lines.append(r.stdout if r.returncode == 0 else f"{pb}: syntax check failed: {r.stderr.strip()}")
    (out / "plan.txt").write_text("\n".join(lines))
    summary = {"mode": "plan", "why_not_check_mode": reason, "syntax_ok": ok, "playbooks": list(PLAYBOOK_FILES)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not ok:
        raise RuntimeError("a playbook failed its syntax check (see plan.txt)")
    return f"syntax check and task plan of {len(PLAYBOOK_FILES)} playbooks ({reason})"


def run(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    reason = _test_hosts_reason()
    return _plan(out, reason) if reason else _check_mode_run(out)
