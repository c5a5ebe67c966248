"""The canary's Kubernetes side: :class:`~flows.canary.controller.CanaryCluster` over the shared adapter.

Every write goes through :mod:`flows.common.kube`, on dicts, never through the client's models:

* the lease (:class:`~flows.canary.models.RolloutState`, JSON in the target's ``inferops.io/canary``
  annotation) is a JSON merge patch of that one annotation, guarded by the ``resourceVersion`` it
  was read at. We chose this over a ``coordination.k8s.io/v1`` Lease object because the state
  belongs to the Deployment it guards: it is visible with ``kubectl describe``, it goes away with
  the Deployment, a run needs no extra RBAC grant (the ``inferops-canary`` Role covers Deployments
  only), and resume/abort read one object. A merge patch of metadata never touches ``spec``, so it
  never bumps ``generation`` or drops a field; ``resourceVersion`` makes it a compare-and-swap.
* canary and baseline Deployments are ours entirely: server-side apply (``fieldManager: inferops``),
  after checking that an existing one with that name carries our labels;
* their Services (gateway-api mode) are created or adopted (the Role may not patch Services);
* the stable Deployment's size is a merge patch of ``spec.replicas``; its Pod template (promotion,
  and the undo of a failed promotion) and the HTTPRoute's rules are edited in the dict the server
  returned and written as a merge patch of exactly what changed, guarded by its
  ``resourceVersion`` (``Kube.modify``; 409: read again, edit again);
* deletes treat "already gone" as done;
* reads for the checks before a rollout: the HorizontalPodAutoscaler of the target (whose count
  the rollout never writes), and the NetworkPolicies and PodMonitors whose selectors canary and
  baseline Pods must keep matching (no PodMonitor CRD installed: none).
"""

from __future__ import annotations

from typing import Any

from flows.canary import planner
from flows.canary.controller import StaleLease
from flows.canary.models import RolloutState, Track
from flows.canary.planner import STATE_ANNOTATION, StepPlan
from flows.common.errors import BadInput
from flows.common.kube import (
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    HTTPROUTES,
    NETWORK_POLICIES,
    POD_MONITORS,
    SERVICES,
    Conflict,
    Kube,
    NotFound,
)


class Cluster:
    """One target Deployment in one namespace, and the objects a canary adds next to it."""

    def __init__(self, kube: Kube, namespace: str, deployment: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, deployment

    # reads -------------------------------------------------------------------------------------
    def read_deployment(self, name: str) -> dict[str, Any] | None:
        return self.kube.find(DEPLOYMENTS, self.namespace, name)

    def read_target(self) -> dict[str, Any]:
        return self.kube.get(DEPLOYMENTS, self.namespace, self.name)

    def read_service(self, name: str) -> dict[str, Any]:
        return self.kube.get(SERVICES, self.namespace, name)

    def read_route(self, name: str) -> dict[str, Any]:
        return self.kube.get(HTTPROUTES, self.namespace, name)

    def find_service(self, name: str) -> dict[str, Any] | None:
        return self.kube.find(SERVICES, self.namespace, name)

    def read_autoscaler(self) -> dict[str, Any] | None:
        for hpa in self.kube.list(HORIZONTAL_POD_AUTOSCALERS, self.namespace):
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name") == self.name and \
                    ref.get("apiVersion", "apps/v1").split("/")[0] == "apps":
                return hpa
        return None

    def label_objects(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        policies = self.kube.list(NETWORK_POLICIES, self.namespace)
        try:
            monitors = self.kube.list(POD_MONITORS, self.namespace)
        except NotFound:  # the prometheus-operator CRDs are not installed: nothing selects by PodMonitor
            monitors = []
        return policies, monitors

    def read_lease(self) -> tuple[RolloutState | None, str]:
        dep = self.read_target()
        raw = (dep["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
        return (RolloutState.model_validate_json(raw) if raw else None), dep["metadata"]["resourceVersion"]

    def read_state(self) -> RolloutState | None:
        return self.read_lease()[0]

    # the lease ---------------------------------------------------------------------------------
    def write_lease(self, state: RolloutState | None, version: str) -> None:
        value = state.model_dump_json() if state is not None else None  # null removes the annotation
        try:
            self.kube.merge_patch(DEPLOYMENTS, self.namespace, self.name,
                                  {"metadata": {"annotations": {STATE_ANNOTATION: value}}}, resource_version=version)
        except Conflict:
            raise StaleLease(f"deployment {self.namespace}/{self.name} changed since version {version}") from None

    # writes ------------------------------------------------------------------------------------
    def _ours(self, obj: dict[str, Any], what: str) -> None:
        labels = obj["metadata"].get("labels") or {}
        if labels.get(planner.ROLLOUT_OF_LABEL) != self.name:
            raise BadInput(f"{what} {self.namespace}/{obj['metadata']['name']} exists and is not a canary object "
                           f"of {self.name} (label {planner.ROLLOUT_OF_LABEL}); not ours to change")

    def apply_track(self, manifest: dict[str, Any]) -> None:
        existing = self.read_deployment(manifest["metadata"]["name"])
        if existing is not None:
            self._ours(existing, "deployment")
        self.kube.apply(DEPLOYMENTS, manifest, self.namespace, force=True)

    def apply_track_service(self, manifest: dict[str, Any]) -> None:
        obj, created = self.kube.create_or_adopt(SERVICES, manifest, self.namespace)
        if not created:  # from an earlier attempt: same selector by construction
            self._ours(obj, "service")

    def scale_target(self, replicas: int) -> None:
        self.kube.merge_patch(DEPLOYMENTS, self.namespace, self.name, {"spec": {"replicas": int(replicas)}})

    def set_target_template(self, template: dict[str, Any], replicas: int | None) -> None:
        """The Pod template, and the count unless None (an HPA's count is never sent)."""
        def change(dep: dict[str, Any]) -> dict[str, Any] | None:
            if dep["spec"]["template"] == template and replicas in (None, dep["spec"].get("replicas")):
                return None
            dep["spec"]["template"] = template
            if replicas is not None:
                dep["spec"]["replicas"] = int(replicas)
            return dep

        self.kube.modify(DEPLOYMENTS, self.namespace, self.name, change)

    def set_route(self, route: str, service: str, plan: StepPlan | None) -> None:
        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            try:
                rules = planner.route_rules(obj, service, plan)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            if rules == obj["spec"].get("rules"):
                return None
            obj["spec"]["rules"] = rules
            return obj

        self.kube.modify(HTTPROUTES, self.namespace, route, change)

    def delete_tracks(self, tracks: tuple[Track, ...] = planner.TRACKS, service: str | None = None) -> list[str]:
        deleted = []
        for track in tracks:
            targets = [(DEPLOYMENTS, "deployment", planner.track_name(self.name, track))]
            if service:
                targets.append((SERVICES, "service", planner.track_name(service, track)))
            for kind, label, name in targets:
                if self.kube.delete(kind, self.namespace, name):
                    deleted.append(f"{label}/{name}")
        return deleted
