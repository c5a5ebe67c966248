"""The Kubernetes adapter: client loading (kubeconfig/context or in-cluster) and 409 handling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from flows.common.errors import BackendUnavailable

T = TypeVar("T")


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient`` from kubeconfig (+context), else in-cluster config."""
    import os

    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    # the client reads KUBECONFIG once, at import; read it per call so a changed env is honoured
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, FileNotFoundError, TypeError) as first:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except ConfigException:
            raise BackendUnavailable(f"no Kubernetes config: {first}") from None


def from_settings() -> Any:
    from flows.common.settings import get_settings

    k = get_settings().kube
    return api_client(k.kubeconfig, k.context)


def retry_on_conflict(op: Callable[[], T], *, attempts: int = 5, backoff_s: float = 0.2) -> T:
    """Run a read-modify-write ``op``; on 409 Conflict re-run it (it must re-read the object)."""
    from kubernetes.client.exceptions import ApiException

    for i in range(attempts):
        try:
            return op()
        except ApiException as exc:
            if exc.status != 409 or i == attempts - 1:
                raise
            time.sleep(backoff_s * (2**i))
    raise AssertionError("unreachable")


def is_not_found(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == 404
