"""``inferops doctor``: check every configured backend, truthfully, each on its own.

A backend that is not configured is ``skipped`` with "not configured" (not a failure), and nothing is
contacted for it: on an unconfigured checkout doctor opens no connection beyond loopback. Anything
configured that does not answer is ``failed`` with the reason, and makes the exit code 1. Every check
is independent: a bad setting (an ``INFEROPS_*`` value, a field of ``inferops.toml``) fails the row it
belongs to, naming the setting, a crash in one check fails only that row, and the table is always printed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.common.settings import InferopsSettings, settings_with_problems

# setting section -> the backend row it configures
SECTION_BACKEND = {"s3": "s3", "prometheus": "prometheus", "kube": "kubernetes", "ssh": "ssh", "inventory": "ssh"}
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@")


@dataclass
class Check:
    backend: str
    target: str
    status: str  # ok | failed | skipped
    detail: str


def redact(text: str) -> str:
    """One line, at most 300 characters, with the user:password of any URL masked."""
    return _USERINFO.sub(r"\1***@", " ".join(str(text).split()))[:300]


def _failed(backend: str, target: str, exc: BaseException) -> Check:
    return Check(backend, redact(target), "failed", redact(f"{type(exc).__name__}: {exc}"))


def _try(backend: str, target: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(backend, target, "ok", redact(fn()))
    except Exception as exc:  # report, never crash
        return _failed(backend, target, exc)


def not_configured(backend: str, how: str) -> Check:
    return Check(backend, "-", "skipped", f"not configured ({how})")


def check_prefect(st: InferopsSettings, timeout: float) -> list[Check]:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return [not_configured("prefect", "PREFECT_API_URL not set: CLI runs inline")]

    def probe() -> str:
        import httpx

        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        r.raise_for_status()
        return "healthy"

    return [_try("prefect", redact(url), probe)]


AWS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
           "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
           "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def s3_configured(st: InferopsSettings) -> bool:
    """Any S3 endpoint, AWS credentials or profile, or an s3:// model registry. Without one, probing
    would make boto3 look for credentials on the network (the EC2 metadata service) and call AWS."""
    s = st.s3
    if s.endpoint_url or s.backup_endpoint_url or s.profile or s.model_registry.startswith("s3://"):
        return True
    if any(os.environ.get(k) for k in AWS_ENV):
        return True
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    return any(Path(f).expanduser().is_file() for f in files)


def check_s3(st: InferopsSettings, timeout: float) -> list[Check]:
    if not s3_configured(st):
        return [not_configured("s3", "no S3 endpoint, AWS credentials or profile")]
    from flows.common.s3 import parse_s3_uri, s3_client

    s = st.s3
    endpoint = s.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
    out = []
    for region, ep in ((s.primary_region, endpoint), (s.backup_region, s.backup_endpoint_url or endpoint)):
        def probe(region: str = region, ep: str | None = ep) -> str:
            c = s3_client(region, endpoint_url=ep, profile=s.profile, max_attempts=1)
            c.meta.config.connect_timeout = timeout
            if s.model_registry.startswith("s3://"):
                b = parse_s3_uri(s.model_registry).bucket
                c.head_bucket(Bucket=b)
                return f"bucket {b} reachable"
            n = len(c.list_buckets().get("Buckets", []))
            return f"{n} buckets visible"

        out.append(_try("s3", redact(f"{region} {ep or 'aws'}"), probe))
    return out


def check_prometheus(st: InferopsSettings, timeout: float) -> list[Check]:
    p = st.prometheus
    if not p.url:
        return [not_configured("prometheus", "INFEROPS_PROMETHEUS__URL not set")]

    def probe() -> str:
        from flows.common.prom import PrometheusClient

        with PrometheusClient(p.url, timeout_s=timeout,
                              bearer_token=p.bearer_token.get_secret_value() if p.bearer_token else None) as c:
            c.query("vector(1)")
        return "query ok"

    return [_try("prometheus", redact(p.url), probe)]


def check_kubernetes(st: InferopsSettings, timeout: float) -> list[Check]:
    k = st.kube
    kubeconfig = k.kubeconfig or os.environ.get("KUBECONFIG")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not kubeconfig and not in_cluster and not os.path.exists(os.path.expanduser("~/.kube/config")):
        return [not_configured("kubernetes", "no kubeconfig and not in a cluster")]

    def probe() -> str:
        from kubernetes import client

        from flows.common.kube import api_client

        api = api_client(kubeconfig, k.context)
        v = client.VersionApi(api).get_code(_request_timeout=timeout)
        client.CoreV1Api(api).list_namespaced_pod(k.namespace, limit=1, _request_timeout=timeout)
        return f"server {v.git_version}, namespace {k.namespace} readable"

    return [_try("kubernetes", k.context or kubeconfig or "in-cluster", probe)]


def check_ssh(st: InferopsSettings, timeout: float) -> list[Check]:
    if not st.inventory:
        return [not_configured("ssh", "no inventory: set INFEROPS_INVENTORY")]
    from flows.common.inventory import load_hosts
    from flows.common.ssh import run_many

    try:
        hosts = load_hosts(st.inventory)
    except Exception as exc:
        return [_failed("ssh", st.inventory, exc)]
    if not hosts:
        return [Check("ssh", st.inventory, "skipped", "inventory has no hosts")]
    results = run_many(hosts, ["true"], user=st.ssh.user, key_file=st.ssh.key_file, timeout_s=timeout,
                       connect_timeout_s=timeout, known_hosts=st.ssh.known_hosts)
    return [Check("ssh", r.host, "ok" if r.error is None and r.exit_status == 0 else "failed",
                  redact(r.error or f"exit {r.exit_status}") if (r.error or r.exit_status)
                  else f"{r.seconds * 1000:.0f} ms")
            for r in results]


CHECKS: list[tuple[str, Callable[[InferopsSettings, float], list[Check]]]] = [
    ("prefect", check_prefect), ("s3", check_s3), ("prometheus", check_prometheus),
    ("kubernetes", check_kubernetes), ("ssh", check_ssh),
]


def run_checks(timeout: float = 5.0) -> list[Check]:
    settings, problems = settings_with_problems()
    checks: list[Check] = []
    if "config" in problems:
        checks.append(Check("config", os.environ.get("INFEROPS_CONFIG") or "inferops.toml", "failed",
                            redact("; ".join(problems["config"]) + " (ignored; environment and defaults used)")))
    by_backend: dict[str, list[str]] = {}
    for section, msgs in problems.items():
        if section != "config":
            by_backend.setdefault(SECTION_BACKEND.get(section, "settings"), []).extend(msgs)
    for backend, check in CHECKS:
        if backend in by_backend:
            checks.append(Check(backend, "settings", "failed", redact("; ".join(by_backend[backend]))))
            continue
        try:
            checks += check(settings, timeout)
        except Exception as exc:  # one check's crash is its own row
            checks.append(_failed(backend, "-", exc))
    if "settings" in by_backend:
        checks.append(Check("settings", "-", "failed", redact("; ".join(by_backend["settings"]))))
    return checks


def main(json_out: bool = False, timeout: float = 5.0) -> int:
    checks = run_checks(timeout)
    failed = [c for c in checks if c.status == "failed"]
    if json_out:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        t = Table(title="inferops doctor")
        for col in ("backend", "target", "status", "detail"):
            t.add_column(col)
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}
        for c in checks:
            t.add_row(escape(c.backend), escape(c.target), f"[{colour[c.status]}]{c.status}[/]", escape(c.detail))
        Console(file=sys.stdout).print(t)
    return 1 if failed else 0
