"""gpu-host-bootstrap: typed inputs (the extra-vars allow-list, tags, limit) and per-host results.

Pure: no Prefect, no Ansible import. ``host_results`` turns ansible-runner events into one row per host.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from flows.common.errors import BadInput, InferopsError

Playbook = Literal["site.yml", "gpu_host.yml", "storage_host.yml"]
Tag = Literal["common", "nvidia_driver", "nvidia_container_toolkit", "dcgm_exporter", "node_exporter",
              "drbd", "k8s_node", "mps"]
TAGS: tuple[str, ...] = Tag.__args__
# Ansible host patterns: names, groups, wildcards, ranges, ':' '&' '!' ',' combinations. No spaces,
# quotes or shell metacharacters; a leading '@' (read the limit from a file) is refused.
_LIMIT = re.compile(r"^[A-Za-z0-9_.*?\[\]:&!,\-]+$")
_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


class ExtraVars(BaseModel):
    """The only variables a run may override; anything else is refused. Unset fields keep the inventory's value."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_apply_runtime: bool | None = Field(
        None, description="false: configure only (no service starts, sysctl apply, module loads, reboots)")
    common_apt_update_cache: bool | None = Field(None, description="refresh the apt cache first")
    nvidia_driver_branch: str | None = Field(None, pattern=r"^\d{3}$", description="driver branch, e.g. 550")
    nvidia_driver_package_type: Literal["precompiled", "dkms"] | None = None
    nvidia_driver_skip_reboot: bool | None = Field(None, description="never reboot, even after a driver change")
    nvidia_container_toolkit_version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+(-\d+)?$")
    mps_enabled: bool | None = Field(None, description="run the NVIDIA MPS daemon on GPU hosts")
    node_exporter_listen_address: str | None = Field(None, pattern=r"^[0-9.]*:\d{1,5}$")
    k8s_node_version: str | None = Field(None, pattern=r"^1\.\d{2}$", description="Kubernetes minor, e.g. 1.31")
    k8s_node_join_endpoint: str | None = Field(None, pattern=r"^[A-Za-z0-9.\-]+:\d{1,5}$",
                                               description="control-plane HOST:PORT to join")
    k8s_node_join_token: SecretStr | None = Field(None, description="kubeadm bootstrap token (never logged)")
    k8s_node_join_ca_cert_hash: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")

    @field_validator("k8s_node_join_token")
    @classmethod
    def _token_format(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _TOKEN.fullmatch(v.get_secret_value()):
            raise ValueError("not a kubeadm token ([a-z0-9]{6}.[a-z0-9]{16})")
        return v

    def to_ansible(self) -> dict[str, Any]:
        """The set fields as Ansible extra vars (secrets revealed: only for the runner's private dir)."""
        return {k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
                for k, v in self if v is not None}


def parse_extra_vars(data: Any, source: str = "extra vars") -> ExtraVars:
    if data is None:
        return ExtraVars()
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping of variable: value")
    try:
        return ExtraVars.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "?"
        why = "not allowed (allowed: " + ", ".join(ExtraVars.model_fields) + ")" \
            if err["type"] == "extra_forbidden" else err["msg"]
        raise BadInput(f"{source}: {name}: {why}") from None


def validate_limit(limit: str | None) -> str | None:
    if limit is None or limit == "":
        return None
    if not _LIMIT.fullmatch(limit):
        raise BadInput(f"--limit {limit!r} is not an Ansible host pattern")
    return limit


def parse_tags(tags: str | list[str] | None) -> list[str]:
    items = tags.split(",") if isinstance(tags, str) else list(tags or [])
    items = [t.strip() for t in items if t.strip()]
    unknown = [t for t in items if t not in TAGS]
    if unknown:
        raise BadInput(f"unknown tag(s) {', '.join(unknown)} (known: {', '.join(TAGS)})")
    return items


class HostResult(BaseModel):
    host: str
    status: Literal["ok", "changed", "failed", "unreachable"]
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    task: str | None = Field(None, description="the first task that failed or could not reach the host")
    message: str | None = None


class BootstrapReport(BaseModel):
    playbook: str
    inventory: str
    check_mode: bool
    limit: str | None = None
    tags: list[str] = []
    runner_status: str = ""  # ansible-runner: successful | failed | timeout | canceled
    rc: int | None = None
    seconds: float = 0.0
    hosts: list[HostResult] = []
    error: str | None = None  # Ansible stopped before any host result (bad inventory, syntax error)

    @property
    def problems(self) -> list[HostResult]:
        return [h for h in self.hosts if h.status in ("failed", "unreachable")]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems and self.rc == 0

    def counts(self) -> dict[str, int]:
        return {k: sum(getattr(h, k) for h in self.hosts)
                for k in ("ok", "changed", "failed", "unreachable", "skipped")}

    def failure_line(self) -> str:
        if self.error:
            return f"ansible failed before reaching hosts: {self.error}"
        parts = [f"{h.host} {h.status} at task {h.task!r}" + (f": {h.message}" if h.message else "")
                 for h in self.problems]
        return f"{len(self.problems)} of {len(self.hosts)} host(s) failed: " + "; ".join(parts)


class BootstrapFailed(InferopsError):
    """A host failed or was unreachable (the others finished), or Ansible did not run (exit 1)."""

    exit_code = 1

    def __init__(self, report: BootstrapReport) -> None:
        super().__init__(report.failure_line())
        self.report = report


def _one_line(text: Any, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _message(res: dict) -> str:
    if res.get("censored"):
        return str(res["censored"])
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        if res.get(key):
            return _one_line(res[key])
    return ""


def host_results(events: list[dict]) -> list[HostResult]:
    """Per-host rows from ansible-runner events: counts from ``playbook_on_stats``, the first failing
    (or unreachable) task and its message from ``runner_on_failed`` / ``runner_on_unreachable``."""
    first_problem: dict[str, tuple[str, str]] = {}
    stats: dict[str, dict[str, int]] = {}
    for ev in events:
        kind, data = ev.get("event"), ev.get("event_data") or {}
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            host = data.get("host")
            if host and host not in first_problem:
                first_problem[host] = (str(data.get("task", "")), _message(data.get("res") or {}))
        elif kind == "playbook_on_stats":
            for field, key in (("ok", "ok"), ("changed", "changed"), ("failed", "failures"),
                               ("unreachable", "dark"), ("skipped", "skipped"), ("rescued", "rescued"),
                               ("ignored", "ignored")):
                for host, n in (data.get(key) or {}).items():
                    stats.setdefault(host, {})[field] = int(n)
            for host in data.get("processed") or {}:
                stats.setdefault(host, {})
    rows = []
    for host in sorted(stats):
        s = stats[host]
        status = ("unreachable" if s.get("unreachable") else "failed" if s.get("failed")
                  else "changed" if s.get("changed") else "ok")
        task, message = first_problem.get(host, (None, None)) if status in ("failed", "unreachable") else (None, None)
        rows.append(HostResult(host=host, status=status, task=task, message=message, **s))
    return rows
