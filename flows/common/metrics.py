"""Batch-job metrics: a node_exporter textfile, a Prometheus Pushgateway, or both.

Flows on the process (``ops``) pool can write a textfile next to node_exporter. Flows in k8s-pool
pods cannot: the pod's filesystem goes with the pod, so they push to the Pushgateway named by
``INFEROPS_PROMETHEUS__PUSHGATEWAY`` (or a flow parameter) instead. A metric that cannot be
published is reported and logged; it never fails the job that produced it: the staleness alerts
fire when the metric stops moving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from flows.common.errors import BadInput
from flows.common.redact import redact

log = logging.getLogger("inferops.metrics")


def check_pushgateway(url: str | None) -> str | None:
    """The Pushgateway URL, validated: http(s) only (it goes into an HTTP request, nothing else)."""
    if url and not url.startswith(("http://", "https://")):
        raise BadInput(f"pushgateway {redact(url)!r} must be an http(s) URL")
    return url or None


def pushgateway_url(explicit: str | None = None) -> str | None:
    """The explicit URL, else the configured one (``prometheus.pushgateway``), else None."""
    from flows.common.settings import get_settings

    return check_pushgateway(explicit or get_settings().prometheus.pushgateway)


def write_textfile(registry: CollectorRegistry, path: str | Path) -> Path:
    """Atomic write (temp file + rename), as node_exporter's textfile collector expects."""
    from prometheus_client import write_to_textfile

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(p), registry)
    return p


def publish(registry: CollectorRegistry, *, job: str, textfile: str | Path | None = None,
            pushgateway: str | None = None, grouping: Mapping[str, str] | None = None,
            timeout_s: float = 10.0) -> dict[str, str | None]:
    """Write and/or push ``registry``; returns {"textfile": path|None|"failed: …", "pushgateway":
    "pushed"|"failed: …"|None}. Pushes replace the group (``job`` plus ``grouping``) as a whole."""
    from prometheus_client import push_to_gateway

    out: dict[str, str | None] = {"textfile": None, "pushgateway": None}
    if textfile:
        try:
            out["textfile"] = str(write_textfile(registry, textfile))
        except OSError as exc:
            out["textfile"] = f"failed: {exc.strerror or exc}"
            log.warning("metrics textfile %s not written: %s", textfile, out["textfile"])
    if pushgateway:
        try:
            url, handler = _target(check_pushgateway(pushgateway))
            push_to_gateway(url, job=job, registry=registry, grouping_key=dict(grouping or {}),
                            timeout=timeout_s, handler=handler)
            out["pushgateway"] = "pushed"
        except OSError as exc:  # urllib errors are OSErrors
            out["pushgateway"] = f"failed: {' '.join(str(exc).split())[:200]}"
            log.warning("pushgateway %s: %s", redact(pushgateway), out["pushgateway"])
    return out


def _target(url: str):
    """(URL without userinfo, handler): ``http://user:pass@host`` pushes with HTTP basic auth (urllib
    would take ``user:pass@host`` for the host name), and the credentials stay out of the URL."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    from prometheus_client.exposition import basic_auth_handler, default_handler

    parts = urlsplit(url)
    if parts.username is None:
        return url, default_handler
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    user, password = unquote(parts.username), unquote(parts.password or "")

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), handler
