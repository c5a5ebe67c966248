"""gpu-host-bootstrap: converge GPU/storage hosts with the playbooks, through ansible-runner.

Streams Ansible's output to the run logs, ends with a per-host table artifact, and fails naming
each failed or unreachable host and its task once every other host has finished.
"""

from __future__ import annotations

from flows.common.artifacts import table
from flows.common.runtime import flow, get_logger, ops_task
from flows.common.settings import get_settings
from flows.host_bootstrap.models import (
    BootstrapFailed,
    BootstrapReport,
    ExtraVars,
    Playbook,
    Tag,
    parse_tags,
    validate_limit,
)
from flows.host_bootstrap.runner import run_playbook


@ops_task(name="ansible-playbook")
def converge(inventory: str, playbook: str, limit: str | None, tags: list[str], check_mode: bool,
             extra_vars: ExtraVars) -> BootstrapReport:
    logger = get_logger()

    def stream(event: dict) -> None:
        for line in (event.get("stdout") or "").splitlines():
            if line.strip():
                logger.info(line)

    return run_playbook(inventory, playbook, limit=limit, tags=tags, check_mode=check_mode,
                        extra_vars=extra_vars, on_event=stream)


@flow(name="gpu-host-bootstrap")
def gpu_host_bootstrap(
    inventory: str | None = None,
    playbook: Playbook = "site.yml",
    limit: str | None = None,
    tags: list[Tag] | None = None,
    check_mode: bool = False,
    extra_vars: ExtraVars | None = None,
) -> dict:
    """Run ``playbooks/<playbook>`` against an inventory (path, or a name under inventories/).

    ``limit`` is an Ansible host pattern, ``tags`` a subset of the component tags, ``check_mode``
    runs with --check --diff, ``extra_vars`` only the allow-listed typed variables.
    """
    inventory = inventory or get_settings().inventory
    report = converge(inventory, playbook, validate_limit(limit), parse_tags(tags), check_mode,
                      extra_vars or ExtraVars())
    mode = "check mode" if check_mode else "converge"
    table("gpu-host-bootstrap", [h.model_dump() for h in report.hosts],
          description=f"{playbook} on {inventory} ({mode}): {report.counts()}"
                      + (f" — {report.failure_line()}" if not report.ok else ""))
    if not report.ok:
        raise BootstrapFailed(report)
    return report.model_dump()
