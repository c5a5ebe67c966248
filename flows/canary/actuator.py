"""The Kubernetes actuator: create, weight, wait for, promote and remove canaries. No Prefect import.

Every write is a read-modify-replace carrying the object's ``resourceVersion``; a 409 Conflict
re-reads and retries (``retry_on_conflict``). "Already exists" on create updates the object
instead, and "not found" on delete is success, so every operation can be repeated safely.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flows.canary import planner
from flows.canary.models import RolloutState, Track
from flows.canary.planner import STATE_ANNOTATION, StepPlan
from flows.common.errors import BackendUnavailable, BadInput, InferopsError
from flows.common.kube import is_not_found, retry_on_conflict


class RolloutBusy(InferopsError):
    """Another run holds the target's lease (exit 4)."""

    exit_code = 4


class NotReady(InferopsError):
    """A Deployment missed its progress deadline (exit 1)."""


def _api_error(what: str, exc: Exception) -> InferopsError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        try:
            msg = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            msg = exc.reason
        cls = BadInput if exc.status in (400, 404, 422) else BackendUnavailable
        return cls(f"{what}: HTTP {exc.status}: {msg}")
    return BackendUnavailable(f"{what}: Kubernetes API unreachable: {type(exc).__name__}: {exc}")


def _call(what: str, fn: Callable[[], Any], passthrough: tuple[int, ...] = (409,)) -> Any:
    """Run an API call; failures become one-line typed errors, except ``passthrough`` statuses."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn()
    except ApiException as exc:
        if exc.status in passthrough:
            raise
        raise _api_error(what, exc) from None
    except (HTTPError, OSError) as exc:
        raise _api_error(what, exc) from None


class Cluster:
    """One target Deployment in one namespace, and the objects a canary adds next to it."""

    def __init__(self, api_client: Any, namespace: str, deployment: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ns = namespace
        self.name = deployment

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.api_client.sanitize_for_serialization(obj)

    # reads -------------------------------------------------------------------------------
    def read_deployment(self, name: str | None = None, *, missing_ok: bool = False) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        name = name or self.name
        try:
            return self._dict(_call(f"read deployment {self.ns}/{name}",
                                    lambda: self.apps.read_namespaced_deployment(name, self.ns), (404,)))
        except ApiException:
            if missing_ok:
                return None
            raise BadInput(f"deployment {self.ns}/{name} not found") from None

    def read_service(self, name: str) -> dict[str, Any]:
        return self._dict(_call(f"read service {self.ns}/{name}",
                                lambda: self.core.read_namespaced_service(name, self.ns)))

    def read_route(self, name: str) -> dict[str, Any]:
        return _call(f"read HTTPRoute {self.ns}/{name}", lambda: self.custom.get_namespaced_custom_object(
            planner.GATEWAY_GROUP, planner.GATEWAY_VERSION, self.ns, planner.HTTPROUTES, name))

    def read_state(self) -> RolloutState | None:
        dep = self.read_deployment()
        raw = (dep["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
        return RolloutState.model_validate_json(raw) if raw else None

    # the lease/state annotation on the target ----------------------------------------------
    def _modify_target(self, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Read the target, apply ``change`` (returns the new object, or None for no write), replace."""

        def op() -> dict[str, Any]:
            dep = self.read_deployment()
            new = change(dep)
            if new is None:
                return dep
            return self._dict(_call(f"update deployment {self.ns}/{self.name}",
                                    lambda: self.apps.replace_namespaced_deployment(self.name, self.ns, new)))

        return retry_on_conflict(op)

    def acquire(self, fresh: RolloutState, now: float) -> tuple[RolloutState, RolloutState | None]:
        """Take the lease: returns (state now held, the stale state taken over or None).

        Raises :class:`RolloutBusy` when another holder's lease has not expired.
        """
        taken: list[RolloutState | None] = [None]

        def change(dep: dict[str, Any]) -> dict[str, Any]:
            ann = dep["metadata"].setdefault("annotations", {})
            old = RolloutState.model_validate_json(ann[STATE_ANNOTATION]) if ann.get(STATE_ANNOTATION) else None
            taken[0] = old
            state = fresh
            if old is not None:
                if old.holder != fresh.holder and old.expires > now:
                    raise RolloutBusy(
                        f"deployment {self.ns}/{self.name} has a canary in flight (holder {old.holder}, lease "
                        f"for {old.expires - now:.0f}s more); wait for it or run `inferops canary abort`")
                # keep the original stable size: the stable Deployment may be scaled down right now
                state = fresh.model_copy(update={"stable_replicas": old.stable_replicas})
            ann[STATE_ANNOTATION] = state.model_dump_json()
            return dep

        dep = self._modify_target(change)
        return RolloutState.model_validate_json(dep["metadata"]["annotations"][STATE_ANNOTATION]), taken[0]

    def save_state(self, state: RolloutState) -> None:
        """Renew/update the lease; fails if another holder took it over meanwhile."""

        def change(dep: dict[str, Any]) -> dict[str, Any]:
            ann = dep["metadata"].setdefault("annotations", {})
            raw = ann.get(STATE_ANNOTATION)
            if raw and RolloutState.model_validate_json(raw).holder != state.holder:
                raise RolloutBusy(f"lease on {self.ns}/{self.name} was taken over by another run")
            ann[STATE_ANNOTATION] = state.model_dump_json()
            return dep

        self._modify_target(change)

    def clear_state(self, holder: str | None = None) -> None:
        def change(dep: dict[str, Any]) -> dict[str, Any] | None:
            ann = dep["metadata"].get("annotations") or {}
            raw = ann.get(STATE_ANNOTATION)
            if not raw or (holder and RolloutState.model_validate_json(raw).holder != holder):
                return None
            del ann[STATE_ANNOTATION]
            return dep

        self._modify_target(change)

    # writes --------------------------------------------------------------------------------
    def scale_stable(self, replicas: int) -> None:
        def change(dep: dict[str, Any]) -> dict[str, Any] | None:
            if dep["spec"].get("replicas") == replicas:
                return None
            dep["spec"]["replicas"] = int(replicas)
            return dep

        self._modify_target(change)

    def set_stable_template(self, template: dict[str, Any], replicas: int) -> None:
        def change(dep: dict[str, Any]) -> dict[str, Any] | None:
            if dep["spec"]["template"] == template and dep["spec"].get("replicas") == replicas:
                return None
            dep["spec"]["template"] = template
            dep["spec"]["replicas"] = int(replicas)
            return dep

        self._modify_target(change)

    def apply_deployment(self, manifest: dict[str, Any]) -> None:
        """Create, or bring an existing one (same name) to ``manifest``'s spec."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        try:
            _call(f"create deployment {self.ns}/{name}",
                  lambda: self.apps.create_namespaced_deployment(self.ns, manifest))
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        # AlreadyExists (a resumed run): replace its spec, keeping identity and resourceVersion

        def op() -> None:
            cur = self.read_deployment(name)
            if cur["spec"].get("selector") != manifest["spec"]["selector"]:
                raise BadInput(f"deployment {self.ns}/{name} exists with another selector; not ours to change")
            new = {**cur, "metadata": {**cur["metadata"], "labels": manifest["metadata"]["labels"],
                                       "annotations": manifest["metadata"]["annotations"]},
                   "spec": manifest["spec"]}
            new.pop("status", None)
            _call(f"update deployment {self.ns}/{name}",
                  lambda: self.apps.replace_namespaced_deployment(name, self.ns, new))

        retry_on_conflict(op)

    def apply_service(self, manifest: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            _call(f"create service {self.ns}/{manifest['metadata']['name']}",
                  lambda: self.core.create_namespaced_service(self.ns, manifest))
        except ApiException as exc:
            if exc.status != 409:
                raise  # AlreadyExists: ours, from an earlier attempt; its selector is the same

    def set_route(self, route_name: str, service: str, plan: StepPlan | None) -> None:
        """Weight the HTTPRoute for ``plan``; None sends everything back to stable."""

        def op() -> None:
            route = self.read_route(route_name)
            try:
                rules = planner.route_rules(route, service, plan)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            if rules == route["spec"].get("rules"):
                return
            route["spec"]["rules"] = rules
            _call(f"update HTTPRoute {self.ns}/{route_name}", lambda: self.custom.replace_namespaced_custom_object(
                planner.GATEWAY_GROUP, planner.GATEWAY_VERSION, self.ns, planner.HTTPROUTES, route_name, route))

        retry_on_conflict(op)

    def delete_tracks(self, tracks: tuple[Track, ...] = planner.TRACKS, service: str | None = None) -> list[str]:
        """Delete canary/baseline Deployments and Services; gone already counts as done."""
        from kubernetes.client.exceptions import ApiException

        deleted = []
        for track in tracks:
            targets = [("deployment", planner.track_name(self.name, track), self.apps.delete_namespaced_deployment)]
            if service:
                targets.append(("service", planner.track_name(service, track), self.core.delete_namespaced_service))
            for kind, name, delete in targets:
                try:
                    # no deserialising: servers answer a delete with the object or with a Status
                    _call(f"delete {kind} {self.ns}/{name}",
                          lambda d=delete, n=name: d(n, self.ns, _preload_content=False), (404,))
                    deleted.append(f"{kind}/{name}")
                except ApiException as exc:
                    if not is_not_found(exc):
                        raise
        return deleted

    def wait_ready(self, name: str, timeout_s: float, poll_s: float = 0.5) -> dict[str, Any]:
        """Wait until the Deployment's controller has rolled out its current generation.

        Ready: ``observedGeneration >= generation`` and updated = available = ready = replicas.
        Raises :class:`NotReady` on ``ProgressDeadlineExceeded`` or after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            dep = self.read_deployment(name)
            why = readiness(dep)
            if why is None:
                return dep
            if why.startswith("ProgressDeadlineExceeded") or time.monotonic() >= deadline:
                raise NotReady(f"deployment {self.ns}/{name} not ready after {timeout_s:g}s: {why}")
            time.sleep(poll_s)


def readiness(dep: dict[str, Any]) -> str | None:
    """None when rolled out, else why not (the Deployment controller's own status fields)."""
    spec, status = dep["spec"], dep.get("status") or {}
    want = spec.get("replicas", 1)
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("status") == "False" and \
                c.get("reason") == "ProgressDeadlineExceeded":
            return f"ProgressDeadlineExceeded: {c.get('message', '')}".strip()
    if (status.get("observedGeneration") or 0) < (dep["metadata"].get("generation") or 0):
        return "controller has not observed the latest generation"
    for field in ("updatedReplicas", "availableReplicas", "readyReplicas"):
        if (status.get(field) or 0) < want:
            return f"{field} {status.get(field) or 0}/{want}"
    if (status.get("replicas") or 0) > want:
        return f"old replicas terminating ({status.get('replicas')}/{want})"
    return None


def rollback(cluster: Cluster, state: RolloutState | None, *, clear: bool = True,
             timeout_s: float = 60.0) -> list[str]:
    """All traffic back to stable, stable back to size, canary and baseline removed. Idempotent.

    Order matters: traffic first, then the canary goes at once; the baseline goes once stable is
    back to full size (or ``timeout_s`` passed), so capacity does not dip.
    """
    done: list[str] = []
    gateway = state is not None and state.traffic_mode == "gateway-api"
    service = state.service if gateway and state else None
    if gateway and state:
        try:
            cluster.set_route(state.httproute, state.service, None)
            done.append(f"httproute/{state.httproute} weights reset")
        except BadInput as exc:  # the route is gone or no longer routes the service: nothing to reset
            done.append(f"httproute/{state.httproute} not reset: {exc}")
    if state is not None:
        cluster.scale_stable(state.stable_replicas)
        done.append(f"deployment/{cluster.name} replicas {state.stable_replicas}")
    done += cluster.delete_tracks((Track.canary,), service)
    if state is not None:
        try:
            cluster.wait_ready(cluster.name, timeout_s)
        except NotReady as exc:
            done.append(f"stable not ready yet ({exc})")
    done += cluster.delete_tracks((Track.baseline,), service)
    if clear:
        cluster.clear_state()
    return done
