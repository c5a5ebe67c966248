"""The Ansible adapter: run one playbook through ansible-runner in a fresh private data dir.

No Prefect import: the flow, the CLI, the benchmark and the tests all call :func:`run_playbook`.
The private data dir holds the extra vars (possibly a join token) and is deleted after the run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flows.common.inventory import resolve_inventory
from flows.host_bootstrap.models import BootstrapReport, ExtraVars, host_results

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def ansible_path() -> str:
    """PATH with the bin/ of this Python first: its ansible-playbook, even when the venv is not activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])


def run_playbook(inventory: str, playbook: str = "site.yml", *, limit: str | None = None,
                 tags: list[str] | None = None, check_mode: bool = False, extra_vars: ExtraVars | None = None,
                 on_event: Callable[[dict], None] | None = None) -> BootstrapReport:
    import ansible_runner

    inv = resolve_inventory(inventory).resolve()
    events: list[dict] = []

    def handler(event: dict) -> bool:
        events.append(event)
        if on_event is not None:
            on_event(event)
        return False  # nothing kept on disk: the data dir is deleted anyway

    data_dir = tempfile.mkdtemp(prefix="inferops-bootstrap-")
    t0 = time.perf_counter()
    try:
        r = ansible_runner.run(
            private_data_dir=data_dir, project_dir=str(PLAYBOOKS), playbook=playbook, inventory=str(inv),
            limit=limit, tags=",".join(tags) if tags else None, cmdline="--check --diff" if check_mode else None,
            extravars=(extra_vars or ExtraVars()).to_ansible(),
            envvars={"ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "PATH": ansible_path()},
            quiet=True, event_handler=handler,
        )
        hosts = host_results(events)
        error = None
        if not hosts and r.rc != 0:
            tail = [e.get("stdout", "") for e in events if e.get("stdout")] or [r.stdout.read()]
            error = " ".join(" ".join(tail[-3:]).split())[-300:] or f"ansible-playbook exited {r.rc}"
        return BootstrapReport(playbook=playbook, inventory=str(inv), check_mode=check_mode, limit=limit,
                               tags=list(tags or []), runner_status=r.status, rc=r.rc,
                               seconds=round(time.perf_counter() - t0, 1), hosts=hosts, error=error)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
