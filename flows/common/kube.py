"""The Kubernetes adapter: the one place that talks to a Kubernetes API server.

It owns three things, and every room uses them rather than a client of its own:

* **Client creation**: kubeconfig (+ context), else in-cluster config (:func:`api_client`,
  :func:`client_from_settings`).
* **One error mapping** from HTTP status to our typed errors (:func:`status_error`):
  400/422 → :class:`~flows.common.errors.BadInput` with the server's message; 401/403 →
  :class:`Forbidden`, naming the verb and the resource; 404 → :class:`NotFound`; 409 →
  :class:`Conflict` (``modify`` re-reads and retries it); 429, 5xx and connection errors →
  retried with exponential backoff, then :class:`~flows.common.errors.BackendUnavailable`.
* **The write helpers**: create-or-adopt, JSON merge patch (optionally guarded by
  ``resourceVersion``), server-side apply with ``fieldManager: inferops``, replace of a dict the
  server returned, modify (read, edit, merge-patch what changed; 409 re-reads), idempotent delete,
  list.

Objects are plain dicts in the API's JSON shape, read and written as JSON. Nothing goes through the
client's typed models: a model only knows the fields of the client's release, so a read-modify-PUT
of a typed object drops every field the cluster has and the client does not (a newer API version's
field, or one set by an admission webhook), and on a Deployment that can change the Pod template,
bump ``generation`` and roll every replica. The typed API methods even refuse dict bodies with
such fields. So requests go through ``ApiClient.param_serialize``/``call_api`` (auth, TLS and
proxies as configured) with JSON bodies, and responses are parsed with :func:`json.loads`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from flows.common.errors import BackendUnavailable, BadInput, InferopsError

T = TypeVar("T")
Obj = dict[str, Any]

FIELD_MANAGER = "inferops"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_JSON = "application/json"
_METHODS = {"get": "GET", "list": "GET", "create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}
_TRANSIENT = {429, 500, 502, 503, 504}
log = logging.getLogger("inferops")


# ---- errors ---------------------------------------------------------------------------------------

class Forbidden(InferopsError):
    """401/403: the credentials in use may not do this (exit 1). The message names verb and resource."""


class NotFound(BadInput):
    """404: the object, or its namespace, does not exist (exit 2: the name came from the user)."""


class Expired(InferopsError):
    """410 Gone: the resourceVersion a watch asked for is older than the server keeps; list again."""


class Conflict(InferopsError):
    """409: ``AlreadyExists`` on create, or a stale ``resourceVersion``/apply conflict on a write."""

    def __init__(self, message: str, *, reason: str = "Conflict") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Kind:
    """A resource type: where it lives in the API and what RBAC calls it."""

    kind: str
    plural: str
    group: str = ""  # "" is the core group
    version: str = "v1"
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``deployments.apps``: the name ``kubectl auth can-i`` and RBAC rules use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        p = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            p += f"/namespaces/{quote(namespace, safe='')}"
        p += f"/{self.plural}"
        return p + (f"/{quote(name, safe='')}" if name else "")


DEPLOYMENTS = Kind("Deployment", "deployments", "apps")
SERVICES = Kind("Service", "services")
PODS = Kind("Pod", "pods")
NODES = Kind("Node", "nodes", namespaced=False)
JOBS = Kind("Job", "jobs", "batch")
HTTPROUTES = Kind("HTTPRoute", "httproutes", "gateway.networking.k8s.io")
HORIZONTAL_POD_AUTOSCALERS = Kind("HorizontalPodAutoscaler", "horizontalpodautoscalers", "autoscaling", "v2")
NETWORK_POLICIES = Kind("NetworkPolicy", "networkpolicies", "networking.k8s.io")
POD_MONITORS = Kind("PodMonitor", "podmonitors", "monitoring.coreos.com")
EVENTS = Kind("Event", "events")
PRIORITY_CLASSES = Kind("PriorityClass", "priorityclasses", "scheduling.k8s.io", namespaced=False)


def _where(kind: Kind, namespace: str | None, name: str | None) -> str:
    if name:
        return f"{kind.kind.lower()} {namespace}/{name}" if namespace else f"{kind.kind.lower()} {name}"
    return f"{kind.resource} in namespace {namespace}" if namespace else f"{kind.resource}"


def _message(body: bytes | str | None, fallback: str) -> str:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = None
    msg = doc.get("message") if isinstance(doc, dict) else None
    return " ".join(str(msg or fallback or "").split())


def status_error(status: int, body: bytes | str | None, *, verb: str, kind: Kind, namespace: str | None,
                 name: str | None = None, reason: str = "") -> InferopsError:
    """THE mapping from a Kubernetes API error response to our errors (one line, named object)."""
    where = _where(kind, namespace, name)
    msg = _message(body, reason)
    if status in (400, 422):
        return BadInput(f"Kubernetes rejected {verb} {where}: {msg}")
    if status in (401, 403):
        scope = f" in namespace {namespace}" if namespace and kind.namespaced else ""
        who = "credentials were rejected" if status == 401 else "access denied"
        return Forbidden(f"Kubernetes {who} (HTTP {status}): cannot {verb} {kind.resource}{scope}"
                         f"{f' ({name})' if name else ''}; grant the verb to the identity in use "
                         f"(deploy/k8s/base/rbac.yaml) or check the kubeconfig context: {msg}")
    if status == 404:
        return NotFound(f"{where} not found" + (f" ({msg})" if msg and "not found" not in msg else ""))
    if status == 409:
        try:
            why = json.loads(body or b"{}").get("reason") or "Conflict"
        except (ValueError, AttributeError):
            why = "Conflict"
        return Conflict(f"{verb} {where}: {msg or why}", reason=why)
    if status in _TRANSIENT or status >= 500 or status == 0:
        return BackendUnavailable(f"Kubernetes API failed to {verb} {where}: HTTP {status}: {msg}")
    return InferopsError(f"Kubernetes refused to {verb} {where}: HTTP {status}: {msg}")


def from_api_exception(exc: BaseException, *, verb: str, kind: Kind, namespace: str | None,
                       name: str | None = None) -> InferopsError:
    """An ``ApiException`` (raised by the official client's own calls) through the same mapping."""
    status = int(getattr(exc, "status", 0) or 0)
    return status_error(status, getattr(exc, "body", None), verb=verb, kind=kind, namespace=namespace, name=name,
                        reason=str(getattr(exc, "reason", "") or exc))


# ---- client ---------------------------------------------------------------------------------------

def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An official-client ``ApiClient`` from kubeconfig (+context), else in-cluster config."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    # the client reads KUBECONFIG once, at import; read it per call so a changed env is honoured
    named = kubeconfig or os.environ.get("KUBECONFIG") or None
    where = f"kubeconfig {named}{'' if kubeconfig else ' (KUBECONFIG)'}: " if named else ""
    try:
        return config.new_client_from_config(config_file=named, context=context)
    except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError,
            IndexError) as first:  # garbage in the file: the client's parser raises whatever it meets
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except ConfigException:
            raise BackendUnavailable(f"no Kubernetes config: {where}{_kubeconfig_problem(first)}") from None


def _kubeconfig_problem(exc: BaseException) -> str:
    """One line on what is wrong with a kubeconfig, from whatever its parser raised."""
    import yaml
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, yaml.YAMLError):
        return "not valid YAML" + (f" ({exc.problem})" if getattr(exc, "problem", None) else "")
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, ConfigException):
        return " ".join(str(exc).split())
    return f"not a kubeconfig ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def client_from_settings() -> Kube:
    """The one way a pipeline gets its Kubernetes client: ``INFEROPS_KUBE__*`` settings."""
    from flows.common.settings import get_settings

    k = get_settings().kube
    return Kube(api_client(k.kubeconfig, k.context))


class WatchCancel:
    """Ends a :meth:`Kube.watch` from another thread: :meth:`cancel` shuts the open response down, so a
    read blocked on a quiet watch returns at once (not at the server's timeout), and a watch opened
    afterwards ends as soon as it is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resp: Any = None
        self.cancelled = False

    def attach(self, resp: Any) -> None:
        """The watch's open response (None: it is closed, nothing to shut down)."""
        with self._lock:
            self._resp = resp
            if self.cancelled:
                self._shutdown()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._resp is not None:
            try:
                self._resp.shutdown()  # the blocked read returns; the watch's own finally closes it
            except (ValueError, RuntimeError, OSError):  # already closed or released: nothing to end
                pass


class Kube:
    """Dict-in, dict-out access to one API server, with the error mapping and retries above."""

    def __init__(self, api: Any, *, attempts: int = 4, backoff_s: float = 0.5, timeout_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api  # kubernetes.client.ApiClient
        self.attempts, self.backoff_s, self.timeout_s, self.sleep = max(1, attempts), backoff_s, timeout_s, sleep

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one request path --------------------------------------------------------------------
    def _send(self, method: str, path: str, query: list[tuple[str, str]], body: Any,
              content_type: str) -> tuple[int, bytes, Any]:
        headers = {"Accept": _JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        req = self.api.param_serialize(method=method, resource_path=path, query_params=query,
                                       header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = self.api.call_api(*req, _request_timeout=self.timeout_s)
        return resp.status, resp.read() or b"", resp.getheaders()

    def request(self, verb: str, kind: Kind, namespace: str | None, name: str | None = None, *,
                body: Any = None, query: dict[str, str | None] | None = None, content_type: str = _JSON) -> Obj:
        """One API call: transient failures are retried with backoff; the rest map to our errors."""
        path = kind.path(namespace, None if verb == "create" else name)
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        err: InferopsError = BackendUnavailable("unreachable")
        for attempt in range(self.attempts):
            retry_after = None
            try:
                status, data, headers = self._send(_METHODS[verb], path, params, body, content_type)
            except (HTTPError, OSError) as exc:
                err = BackendUnavailable(f"Kubernetes API unreachable ({verb} {_where(kind, namespace, name)}): "
                                         f"{type(exc).__name__}: {exc}")
            except ApiException as exc:  # raised by the client itself, e.g. TLS failures (status 0)
                err = from_api_exception(exc, verb=verb, kind=kind, namespace=namespace, name=name)
                if not isinstance(err, BackendUnavailable):
                    raise err from None
            else:
                for warning in _warnings(headers):
                    log.warning("Kubernetes warning (%s %s): %s", verb, _where(kind, namespace, name), warning)
                if 200 <= status < 300:
                    return json.loads(data) if data else {}
                err = status_error(status, data, verb=verb, kind=kind, namespace=namespace, name=name)
                if not isinstance(err, BackendUnavailable):
                    raise err
                retry_after = _retry_after(headers)
            if attempt < self.attempts - 1:
                delay = self.backoff_s * 2 ** attempt
                self.sleep(min(10.0, max(delay, retry_after or 0.0)))
        raise err

    # -- reads -----------------------------------------------------------------------------------
    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        """The object as the server has it; :class:`NotFound` if it does not exist."""
        return self.request("get", kind, namespace, name)

    def find(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        """The object, or None if it does not exist."""
        try:
            return self.get(kind, namespace, name)
        except NotFound:
            return None

    def list(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None) -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` (None: all namespaces), each with kind/apiVersion set."""
        out: list[Obj] = []
        token: str | None = None
        while True:
            page = self.request("list", kind, namespace, query={
                "labelSelector": labels, "fieldSelector": fields, "limit": "500", "continue": token})
            out += [{"apiVersion": kind.api_version, "kind": kind.kind, **o} for o in page.get("items") or []]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return out

    def list_at(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None,
                fields: str | None = None) -> tuple[list[Obj], str]:
        """Like :meth:`list`, unpaged, with the list's ``resourceVersion`` to :meth:`watch` from."""
        page = self.request("list", kind, namespace, query={"labelSelector": labels, "fieldSelector": fields})
        items = [{"apiVersion": kind.api_version, "kind": kind.kind, **o} for o in page.get("items") or []]
        return items, str((page.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, kind: Kind, namespace: str | None, resource_version: str, *, labels: str | None = None,
              fields: str | None = None, timeout_s: int = 300,
              cancel: WatchCancel | None = None) -> Iterator[tuple[str, Obj]]:
        """The changes after ``resource_version`` as ``(type, object)``: ADDED, MODIFIED, DELETED (the
        object's last state). Ends when the server closes the watch (``timeout_s``) or ``cancel`` is
        cancelled; raises :class:`Expired` when the version is too old (list again), other errors as
        :meth:`request`."""
        from urllib3.exceptions import HTTPError

        query = [(k, v) for k, v in {"watch": "true", "resourceVersion": resource_version, "labelSelector": labels,
                                      "fieldSelector": fields, "timeoutSeconds": str(int(timeout_s)),
                                      "allowWatchBookmarks": "true"}.items() if v]
        req = self.api.param_serialize(method="GET", resource_path=kind.path(namespace), query_params=query,
                                       header_params={"Accept": _JSON}, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(*req, _request_timeout=(self.timeout_s, timeout_s + self.timeout_s))
        except (HTTPError, OSError) as exc:
            raise BackendUnavailable(f"Kubernetes API unreachable (watch {_where(kind, namespace, None)}): "
                                     f"{type(exc).__name__}: {exc}") from None
        raw = resp.response
        try:
            if cancel is not None:
                cancel.attach(raw)
            if resp.status == 410:
                raise Expired(f"watch {_where(kind, namespace, None)}: resourceVersion {resource_version} expired")
            if not 200 <= resp.status < 300:
                raise status_error(resp.status, raw.data, verb="watch", kind=kind, namespace=namespace)
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            raise Expired(f"watch {_where(kind, namespace, None)}: {obj.get('message', 'expired')}")
                        raise status_error(int(obj.get("code") or 500), json.dumps(obj), verb="watch", kind=kind,
                                           namespace=namespace)
                    if ev.get("type") == "BOOKMARK":
                        continue
                    yield ev["type"], {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        except (HTTPError, OSError) as exc:
            if cancel is not None and cancel.cancelled:
                return
            raise BackendUnavailable(f"watch {_where(kind, namespace, None)} broke: {type(exc).__name__}: {exc}") \
                from None
        finally:
            if cancel is not None:
                cancel.attach(None)
            raw.close()  # a watch left before its end must not go back to the pool half read

    # -- writes ----------------------------------------------------------------------------------
    def create(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        ns = namespace or _ns(obj)
        return self.request("create", kind, ns, obj["metadata"].get("name"), body=obj,
                            query={"fieldManager": FIELD_MANAGER})

    def create_or_adopt(self, kind: Kind, obj: Obj, namespace: str | None = None) -> tuple[Obj, bool]:
        """Create ``obj``; if it already exists, return the existing one. ``(object, created)``.

        A re-run (or a retried create whose first answer was lost) adopts what it made earlier; the
        caller decides whether the existing object is really its own.
        """
        ns = namespace or _ns(obj)
        try:
            return self.create(kind, obj, ns), True
        except Conflict as exc:
            if exc.reason != "AlreadyExists":
                raise
        return self.get(kind, ns, obj["metadata"]["name"]), False

    def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: Obj, *,
                    resource_version: str | None = None) -> Obj:
        """A JSON merge patch (RFC 7386). With ``resource_version`` it only applies to that version
        of the object (409 :class:`Conflict` otherwise): a compare-and-swap."""
        if resource_version is not None:
            patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
        return self.request("patch", kind, namespace, name, body=patch, content_type=MERGE_PATCH,
                            query={"fieldManager": FIELD_MANAGER})

    def apply(self, kind: Kind, obj: Obj, namespace: str | None = None, *, force: bool = False) -> Obj:
        """Server-side apply of ``obj`` (a full intent: fields we stop sending are removed) as
        ``fieldManager: inferops``; ``force`` takes over fields another manager owns."""
        ns = namespace or _ns(obj)
        body = {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
        return self.request("patch", kind, ns, obj["metadata"]["name"], body=body, content_type=APPLY_PATCH,
                            query={"fieldManager": FIELD_MANAGER, "force": "true" if force else None})

    def replace(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj:
        """PUT ``obj``, which must be a dict the server returned (edited): it carries every field the
        server has, and its ``resourceVersion`` makes a concurrent change a 409 :class:`Conflict`."""
        if not (obj.get("metadata") or {}).get("resourceVersion"):
            raise ValueError("replace() needs an object read from the server (metadata.resourceVersion)")
        ns = namespace or _ns(obj)
        body = {k: v for k, v in obj.items() if k != "status"}
        return self.request("update", kind, ns, obj["metadata"]["name"], body=body,
                            query={"fieldManager": FIELD_MANAGER})

    def modify(self, kind: Kind, namespace: str | None, name: str, change: Callable[[Obj], Obj | None], *,
               attempts: int = 8) -> Obj:
        """Read, ``change`` (edit the dict in place and return it, or None for "nothing to do"), write.

        The write is a JSON merge patch of exactly what ``change`` changed (:func:`merge_diff`),
        guarded by the ``resourceVersion`` that was read: fields nobody changed are never sent, so
        none can be lost. A 409 (someone wrote in between) re-reads and runs ``change`` again.
        """
        for attempt in range(attempts):
            obj = self.get(kind, namespace, name)
            new = change(copy.deepcopy(obj))
            patch = merge_diff({k: v for k, v in obj.items() if k != "status"},
                               {k: v for k, v in (new or obj).items() if k != "status"})
            if new is None or not patch:
                return obj
            try:
                return self.merge_patch(kind, namespace, name, patch, resource_version=obj["metadata"]["resourceVersion"])
            except Conflict:
                if attempt == attempts - 1:
                    raise
                self.sleep(min(1.0, 0.05 * 2 ** attempt))
        raise AssertionError("unreachable")

    def delete(self, kind: Kind, namespace: str | None, name: str, *, grace_period_s: int | None = None,
               propagation: str = "Background") -> bool:
        """Delete; False if it was already gone (idempotent). Dependents go by ``propagation``."""
        try:
            self.request("delete", kind, namespace, name, query={
                "propagationPolicy": propagation,
                "gracePeriodSeconds": None if grace_period_s is None else str(int(grace_period_s))})
            return True
        except NotFound:
            return False


def merge_diff(old: Obj, new: Obj) -> Obj:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``: changed keys, removed ones as
    null, nested maps as nested patches, lists whole (merge patches replace lists)."""
    patch: Obj = {k: None for k in old.keys() - new.keys()}
    for k, v in new.items():
        if k not in old:
            patch[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict):
            sub = merge_diff(old[k], v)
            if sub:
                patch[k] = sub
        elif v != old[k]:
            patch[k] = v
    return patch


def _ns(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def _header_values(headers: Any, name: str) -> list[str]:
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name) if hasattr(headers, "get") else None
    return [value] if value else []


def _warnings(headers: Any) -> list[str]:
    """RFC 7234 Warning headers (``299 - "unknown field ..."``): the text of each."""
    out = []
    for raw in _header_values(headers, "Warning"):
        for part in str(raw).split(", 299 "):
            text = part.removeprefix("299 ").removeprefix("- ").strip().strip('"')
            if text:
                out.append(text)
    return out


def _retry_after(headers: Any) -> float | None:
    for raw in _header_values(headers, "Retry-After"):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


# ---- compatibility helpers for code holding raw client exceptions ---------------------------------

def retry_on_conflict(op: Callable[[], T], *, attempts: int = 5, backoff_s: float = 0.2) -> T:
    """Run a read-modify-write ``op``; on 409 Conflict re-run it (it must re-read the object)."""
    for i in range(attempts):
        try:
            return op()
        except Exception as exc:
            conflict = isinstance(exc, Conflict) or getattr(exc, "status", None) == 409
            if not conflict or i == attempts - 1:
                raise
            time.sleep(backoff_s * (2**i))
    raise AssertionError("unreachable")


def is_not_found(exc: BaseException) -> bool:
    """True for our :class:`NotFound` and for the official client's 404 ``ApiException``."""
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, NotFound) or (isinstance(exc, ApiException) and exc.status == 404)


# ---- label selectors ------------------------------------------------------------------------------

def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Does a ``LabelSelector`` (``matchLabels`` + ``matchExpressions``) select ``labels``?

    The API's semantics: an empty selector selects everything, None selects nothing.
    """
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def selector_keys(selector: Obj | None) -> set[str]:
    """The label keys a ``LabelSelector`` looks at."""
    sel = selector or {}
    return set(sel.get("matchLabels") or {}) | {e.get("key") for e in sel.get("matchExpressions") or []}


def describe_selector(selector: Obj | None) -> str:
    """``app=x,tier in (a,b)``: a selector as ``kubectl`` prints it (``<all>`` for an empty one)."""
    sel = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), ",".join(e.get("values") or [])
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})", "Exists": key,
                      "DoesNotExist": f"!{key}"}.get(op, f"{key} {op} ({vals})"))
    return ",".join(parts) or "<all>"
