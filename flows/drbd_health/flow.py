"""The ``drbd-health`` flow: collect over SSH (or read captures), judge, publish metrics, artifacts,
and an ``inferops.drbd.critical`` event when a resource turns critical.

The run's state tells the truth, with the Nagios status line as its message: ``Completed`` on OK,
``Completed`` named ``Warning`` on WARNING, ``Failed`` on CRITICAL or UNKNOWN (so a CI job running the
deployment sees a failure). Offline (a CLI run without a Prefect API) the flow returns the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from flows.common.artifacts import emit, markdown, table
from flows.common.errors import BadInput, InferopsError
from flows.common.inventory import load_hosts, require_inventory
from flows.common.metrics import publish, pushgateway_url
from flows.common.runtime import NO_CACHE, flow, get_logger, is_offline, ops_task
from flows.common.settings import get_settings
from flows.drbd_health.collect import HostOutput, judge, probe_hosts, read_capture
from flows.drbd_health.metrics import JOB, build_registry
from flows.drbd_health.models import DrbdPolicy, Level, ResourceReport
from flows.drbd_health.rules import hints, overall, status_line

EVENT = "inferops.drbd.critical"
DEFAULT_POLICY = DrbdPolicy()


class DrbdNotOk(InferopsError):
    """A check that found CRITICAL or UNKNOWN: the Failed run's result. ``report`` is the full report
    and ``exit_code`` the Nagios code, so a caller (``inferops drbd check`` with a Prefect API) still
    prints it and exits as Nagios expects."""

    def __init__(self, report: dict) -> None:
        super().__init__(report["status"], exit_code=report["nagios_code"])
        self.report = report

    def __reduce__(self):  # picklable (Prefect may persist the result)
        return (type(self), (self.report,))


def final_state(report: dict):
    """The run's final state for ``report``: the Nagios status line is its message."""
    from prefect.states import Completed, Failed

    severity = Level(report["severity"])
    if severity is Level.ok:
        return Completed(message=report["status"], data=report)
    if severity is Level.warning:
        return Completed(name="Warning", message=report["status"], data=report)
    return Failed(message=report["status"], data=DrbdNotOk(report))


@ops_task(name="drbd-collect", cache_policy=NO_CACHE)  # live state and side effects: never cached
def collect(inventory: str, group: str, timeout_s: float, concurrency: int) -> list[HostOutput]:
    st = get_settings()
    hosts = load_hosts(inventory, group)
    if not hosts:
        raise BadInput(f"group {group!r} in inventory {inventory!r} has no hosts")
    get_logger().info("probing %d hosts of group %s (concurrency %d, timeout %gs)", len(hosts), group,
                      concurrency, timeout_s)
    return probe_hosts(hosts, user=st.ssh.user, key_file=st.ssh.key_file, known_hosts=st.ssh.known_hosts,
                       timeout_s=timeout_s, connect_timeout_s=st.ssh.connect_timeout_s, concurrency=concurrency)


@ops_task(name="drbd-publish-metrics", cache_policy=NO_CACHE)  # live state and side effects: never cached
def publish_metrics(reports: list[ResourceReport], textfile: str | None, pushgateway: str | None) -> dict:
    # a failed push is reported, and the check itself still stands
    return publish(build_registry(reports), job=JOB, textfile=textfile, pushgateway=pushgateway)


def _state_file() -> Path:
    return Path(get_settings().state_dir) / "drbd" / "last_severity.json"


def turned_critical(previous: dict[str, str], reports: list[ResourceReport]) -> list[ResourceReport]:
    """Resources critical now that were not critical (or not seen) in the previous run."""
    return [r for r in reports
            if r.severity is Level.critical and previous.get(f"{r.host}/{r.name}") != Level.critical.value]


@ops_task(name="drbd-notify", cache_policy=NO_CACHE)  # live state and side effects: never cached
def notify(reports: list[ResourceReport]) -> list[str]:
    path = _state_file()
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}  # first run, or a damaged file: every critical resource is new
    sent = []
    for r in turned_critical(previous, reports):
        emit(EVENT, f"inferops.drbd.{r.host}.{r.name}",
             {"host": r.host, "resource": r.name, "severity": r.severity.value,
              "previous": previous.get(f"{r.host}/{r.name}", "unseen"),
              "problems": [{"code": p.code, "detail": p.detail} for p in r.problems], "hints": hints(r)},
             **{"inferops.drbd.host": r.host, "inferops.drbd.resource": r.name})
        sent.append(f"{r.host}/{r.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump({f"{r.host}/{r.name}": r.severity.value for r in reports}, fh, sort_keys=True)
    os.replace(fh.name, path)
    return sent


MAX_TIMEOUT_S = 3600  # per host; the deployment runs every 5 minutes


@flow(name="drbd-health")
def drbd_health(inventory: str | None = None, group: str = "drbd_hosts", inputs: list[str] | None = None,
                policy: DrbdPolicy = DEFAULT_POLICY, textfile: str | None = None, pushgateway: str | None = None,
                timeout_s: float = 10.0, concurrency: int = 64) -> dict:
    """Check DRBD on every host of an inventory group, or on saved captures.

    Returns the report: ``severity`` (worst of all), ``resources`` (one per host and resource; an
    unreachable or DRBD-less host is one UNKNOWN entry with the reason), ``status`` (the Nagios
    line), ``hints`` (remediation steps per resource, never executed), ``metrics`` and ``events``.
    The run ends Completed (OK), Completed named Warning (WARNING) or Failed (CRITICAL, UNKNOWN).

    Args:
        inventory: Ansible inventory, a path or a name under inventories/. Empty: INFEROPS_INVENTORY on the worker.
        group: Inventory group of the DRBD hosts.
        inputs: Saved captures to check instead of SSH (drbdsetup status --json, events2, status text, /proc/drbd).
        policy: Severity policy: which DRBD states are warnings and which are critical.
        textfile: node_exporter textfile (.prom) to write the metrics to. Empty: no textfile.
        pushgateway: Pushgateway URL for the metrics. Empty: INFEROPS_PROMETHEUS__PUSHGATEWAY, else none.
        timeout_s: Seconds per host for the SSH command.
        concurrency: Hosts probed at once.
    """
    report = check(inventory, group, inputs, policy, textfile, pushgateway, timeout_s, concurrency)
    return report if is_offline() else final_state(report)


def check(inventory: str | None, group: str, inputs: list[str] | None, policy: DrbdPolicy, textfile: str | None,
          pushgateway: str | None, timeout_s: float, concurrency: int) -> dict:
    """The check itself: the report (what the offline CLI gets)."""
    if not 0 < timeout_s <= MAX_TIMEOUT_S:  # NaN included: asyncio.timeout(nan) never fires
        raise BadInput(f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S} seconds")
    if concurrency < 1:
        raise BadInput("concurrency must be >= 1")
    pushgateway = pushgateway_url(pushgateway)
    if inputs:
        outputs = [read_capture(p) for p in inputs]
    else:
        outputs = collect(require_inventory(inventory), group, timeout_s, concurrency)
    reports = [rep for out in outputs for rep in judge(out, policy)]
    severity = overall(reports)
    metrics = publish_metrics(reports, textfile, pushgateway)
    events = notify(reports)
    status = status_line(reports)
    get_logger().info(status)

    table("drbd-health", [{"host": r.host, "resource": r.name, "severity": r.severity.value,
                           "problems": ", ".join(p.code for p in r.problems) or "-",
                           "detail": "; ".join(p.detail for p in r.problems) or "-", "source": r.source}
                          for r in reports], description=status)
    hint_map = {f"{r.host}/{r.name}": hints(r) for r in reports if hints(r)}
    if hint_map:
        body = "\n".join(f"### {k}\n" + "\n".join(f"- {h}" for h in v) for k, v in hint_map.items())
        markdown("drbd-health-remediation", f"**{status}**\n\nRemediation (never run automatically):\n\n{body}",
                 description="DRBD remediation hints")
    return {"severity": severity.value, "resources": [r.as_json() for r in reports], "status": status,
            "nagios_code": severity.nagios, "hints": hint_map, "metrics": metrics, "events": events}
