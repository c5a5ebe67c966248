"""``inferops doctor``: check every configured backend, truthfully.

A backend that is not configured is reported as ``skipped`` (not a failure). Anything configured
that does not answer is ``failed`` with the reason, and makes the exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from flows.common.settings import get_settings


@dataclass
class Check:
    backend: str
    target: str
    status: str  # ok | failed | skipped
    detail: str


def _try(backend: str, target: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(backend, target, "ok", fn())
    except Exception as exc:  # report, never crash
        return Check(backend, target, "failed", " ".join(f"{type(exc).__name__}: {exc}".split())[:300])


def check_prefect(timeout: float) -> Check:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return Check("prefect", "-", "skipped", "PREFECT_API_URL not set (CLI runs inline)")

    def probe() -> str:
        import httpx

        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        r.raise_for_status()
        return "healthy"

    return _try("prefect", url, probe)


def check_s3(timeout: float) -> list[Check]:
    from botocore.config import Config  # noqa: F401  (import check: boto3 installed)

    from flows.common.s3 import parse_s3_uri, s3_client

    s = get_settings().s3
    endpoint = s.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
    out = []
    targets = [(s.primary_region, endpoint), (s.backup_region, s.backup_endpoint_url or endpoint)]
    registry = s.model_registry
    for region, ep in targets:
        def probe(region: str = region, ep: str | None = ep) -> str:
            c = s3_client(region, endpoint_url=ep, profile=s.profile, max_attempts=1)
            c.meta.config.connect_timeout = timeout
            if registry.startswith("s3://"):
                b = parse_s3_uri(registry).bucket
                c.head_bucket(Bucket=b)
                return f"bucket {b} reachable"
            n = len(c.list_buckets().get("Buckets", []))
            return f"{n} buckets visible"

        out.append(_try("s3", f"{region} {ep or 'aws'}", probe))
    return out


def check_prometheus(timeout: float) -> Check:
    from flows.common.prom import PrometheusClient

    p = get_settings().prometheus
    if not p.url:
        return Check("prometheus", "-", "skipped", "INFEROPS_PROMETHEUS__URL not set")

    def probe() -> str:
        with PrometheusClient(p.url, timeout_s=timeout,
                              bearer_token=p.bearer_token.get_secret_value() if p.bearer_token else None) as c:
            c.query("vector(1)")
        return "query ok"

    from flows.common.prom import redact_url

    return _try("prometheus", redact_url(p.url), probe)


def check_kubernetes(timeout: float) -> Check:
    k = get_settings().kube
    kubeconfig = k.kubeconfig or os.environ.get("KUBECONFIG")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not kubeconfig and not in_cluster and not os.path.exists(os.path.expanduser("~/.kube/config")):
        return Check("kubernetes", "-", "skipped", "no kubeconfig and not in a cluster")

    def probe() -> str:
        from kubernetes import client

        from flows.common.kube import api_client

        api = api_client(kubeconfig, k.context)
        v = client.VersionApi(api).get_code(_request_timeout=timeout)
        client.CoreV1Api(api).list_namespaced_pod(k.namespace, limit=1, _request_timeout=timeout)
        return f"server {v.git_version}, namespace {k.namespace} readable"

    return _try("kubernetes", k.context or kubeconfig or "in-cluster", probe)


def check_ssh(timeout: float) -> list[Check]:
    from flows.common.inventory import load_hosts
    from flows.common.ssh import run_many

    st = get_settings()
    try:
        hosts = load_hosts(st.inventory)
    except Exception as exc:
        return [Check("ssh", st.inventory, "skipped" if "not found" in str(exc) else "failed",
                      " ".join(str(exc).split()))]
    if not hosts:
        return [Check("ssh", st.inventory, "skipped", "inventory has no hosts")]
    results = run_many(hosts, ["true"], user=st.ssh.user, key_file=st.ssh.key_file, timeout_s=timeout,
                       connect_timeout_s=timeout, known_hosts=st.ssh.known_hosts)
    return [Check("ssh", f"{r.host}", "ok" if r.error is None and r.exit_status == 0 else "failed",
                  r.error or f"exit {r.exit_status}" if (r.error or r.exit_status) else f"{r.seconds*1000:.0f} ms")
            for r in results]


def run_checks(timeout: float = 5.0) -> list[Check]:
    checks = [check_prefect(timeout)]
    checks += check_s3(timeout)
    checks.append(check_prometheus(timeout))
    checks.append(check_kubernetes(timeout))
    checks += check_ssh(timeout)
    return checks


def main(json_out: bool = False, timeout: float = 5.0) -> int:
    checks = run_checks(timeout)
    failed = [c for c in checks if c.status == "failed"]
    if json_out:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="inferops doctor")
        for col in ("backend", "target", "status", "detail"):
            t.add_column(col)
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}
        for c in checks:
            t.add_row(c.backend, c.target, f"[{colour[c.status]}]{c.status}[/]", c.detail)
        Console(file=sys.stdout).print(t)
    return 1 if failed else 0
