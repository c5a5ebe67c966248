"""The Prometheus adapter: HTTP API queries, plus safe PromQL templating.

Never splice user text into PromQL: label values go through :func:`quote_label_value`, metric and
label names through :func:`validate_name`, durations through :func:`validate_duration`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from flows.common.errors import BackendUnavailable, BadInput
from flows.common.redact import redact

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise BadInput(f"invalid Prometheus metric/label name {name!r}")
    return name


def validate_duration(d: str) -> str:
    if not _DURATION.fullmatch(d or ""):
        raise BadInput(f"invalid Prometheus duration {d!r} (expected e.g. 30s, 5m)")
    return d


def redact_url(url: str) -> str:
    """``url`` without user:password, safe for logs, artifacts and error messages (any scheme, any port,
    valid or not: :func:`flows.common.redact.redact`)."""
    return redact(url)


def quote_label_value(value: str) -> str:
    """A PromQL string literal for ``value`` (double-quoted, escaped)."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise BadInput(f"invalid label value {value!r}: control characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Sample:
    labels: dict[str, str]
    value: float  # NaN stays NaN: callers must treat it as "no data", never as a pass


class PrometheusClient:
    def __init__(self, url: str, *, timeout_s: float = 10.0, bearer_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.safe_url = redact_url(self.url)
        import httpx  # here, not at import: 0.5 s that --help, plan and every offline command never need

        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        import httpx

        try:
            r = self._http.get(f"{self.url}{path}", params=params)
        except httpx.InvalidURL as exc:
            raise BadInput(f"Prometheus URL {self.safe_url} is not a valid URL: {exc}") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Prometheus at {self.safe_url} unreachable: {exc}") from exc
        try:
            body = r.json()
        except ValueError:
            raise BackendUnavailable(f"Prometheus at {self.safe_url}: HTTP {r.status_code}, not JSON") from None
        if body.get("status") != "success":
            if r.status_code == 400:
                raise BadInput(f"PromQL rejected: {body.get('error', r.text)}")
            raise BackendUnavailable(f"Prometheus at {self.safe_url}: {body.get('error', r.status_code)}")
        return body["data"]

    def ready(self) -> bool:
        import httpx

        try:
            return self._http.get(f"{self.url}/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str, *, at: float | None = None) -> list[Sample]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [Sample({}, _f(data["result"][1]))]
        return [Sample(r["metric"], _f(r["value"][1])) for r in data["result"]]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step})
        return [(r["metric"], [(float(t), _f(v)) for t, v in r["values"]]) for r in data["result"]]


def _f(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def client_from_settings(*, required: bool = True, timeout_s: float | None = None,
                         url: str | None = None) -> PrometheusClient | None:
    """The one way a pipeline gets its Prometheus client: ``INFEROPS_PROMETHEUS__*`` settings.

    ``url`` (a command's ``--prometheus``) replaces the configured URL; token and timeout stay the settings'.
    ``required`` and none configured: :class:`BadInput` naming the setting; otherwise None.
    """
    from flows.common.settings import get_settings

    s = get_settings().prometheus
    url = url or s.url
    if not url:
        if required:
            raise BadInput("no Prometheus configured (set INFEROPS_PROMETHEUS__URL)")
        return None
    token = s.bearer_token.get_secret_value() if s.bearer_token else None
    return PrometheusClient(url, timeout_s=s.timeout_s if timeout_s is None else timeout_s, bearer_token=token)
