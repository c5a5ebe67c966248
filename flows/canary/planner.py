"""The rollout planner: the objects a canary creates or patches, and the step schedule. Pure.

Manifests are plain dicts in the Kubernetes API's JSON shape. Canary and baseline Deployments are
copies of the stable one, named ``<deployment>-canary`` / ``<deployment>-baseline``, with the
labels ``inferops.io/rollout-of`` and ``inferops.io/track`` on their selector and Pods:

* ``replicas`` mode: Pods keep the stable labels, so the shared Service sends them traffic in
  proportion to replica counts; the stable Deployment is scaled down to make room.
* ``gateway-api`` mode: Pods drop the stable selector's labels (the stable Service must not pick
  them up) and get their own Services ``<service>-canary`` / ``<service>-baseline``, which an
  HTTPRoute weights next to the stable Service.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from flows.canary.models import CanaryPolicy, Target, Track

GROUP = "inferops.io"
TRACK_LABEL = f"{GROUP}/track"
ROLLOUT_OF_LABEL = f"{GROUP}/rollout-of"
STATE_ANNOTATION = f"{GROUP}/canary"  # on the target: lease + rollout state (JSON)
MANIFEST_ANNOTATION = f"{GROUP}/model-manifest-uri"
MANIFEST_ENV = "INFEROPS_MODEL_MANIFEST_URI"
MANAGED_BY = {"app.kubernetes.io/managed-by": "inferops-canary"}
GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
TRACKS = (Track.baseline, Track.canary)


def track_name(name: str, track: Track) -> str:
    return f"{name}-{track}"


@dataclass(frozen=True)
class StepPlan:
    weight: int  # requested canary weight in percent
    stable_replicas: int
    baseline_replicas: int
    canary_replicas: int
    stable_weight: int  # HTTPRoute weights (gateway-api); replica shares otherwise
    baseline_weight: int
    canary_weight: int
    promote: bool

    @property
    def effective_canary_percent(self) -> float:
        total = self.stable_weight + self.baseline_weight + self.canary_weight
        return round(100.0 * self.canary_weight / total, 1) if total else 0.0


def step_plan(policy: CanaryPolicy, weight: int, stable_replicas: int) -> StepPlan:
    n = max(int(stable_replicas), 1)
    if weight >= 100:
        return StepPlan(100, n, 0, 0, 100, 0, 0, promote=True)
    if policy.traffic_mode == "gateway-api":
        k = max(1, math.ceil(n * weight / 100))
        return StepPlan(weight, n, k, k, 100 - 2 * weight, weight, weight, promote=False)
    k = max(1, round(n * weight / 100))
    stable = max(n - 2 * k, 1)
    return StepPlan(weight, stable, k, k, stable, k, k, promote=False)


def schedule(policy: CanaryPolicy, stable_replicas: int) -> list[StepPlan]:
    return [step_plan(policy, w, stable_replicas) for w in policy.steps]


def container_index(deployment: dict[str, Any], name: str) -> int:
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    if not containers:
        raise ValueError(f"deployment {deployment['metadata']['name']} has no containers")
    if not name:
        return 0
    for i, c in enumerate(containers):
        if c.get("name") == name:
            return i
    raise ValueError(f"deployment {deployment['metadata']['name']} has no container {name!r}")


def new_template(stable: dict[str, Any], target: Target, policy: CanaryPolicy) -> dict[str, Any]:
    """The stable Pod template with the new image and/or model manifest."""
    template = copy.deepcopy(stable["spec"]["template"])
    c = template["spec"]["containers"][container_index(stable, policy.container)]
    if target.image:
        c["image"] = target.image
    if target.model_manifest_uri:
        env = [e for e in c.get("env") or [] if e.get("name") != MANIFEST_ENV]
        c["env"] = [*env, {"name": MANIFEST_ENV, "value": target.model_manifest_uri}]
        template.setdefault("metadata", {}).setdefault("annotations", {})[MANIFEST_ANNOTATION] = \
            target.model_manifest_uri
    return template


def track_labels(deployment: str, track: Track) -> dict[str, str]:
    return {ROLLOUT_OF_LABEL: deployment, TRACK_LABEL: str(track)}


def track_deployment(stable: dict[str, Any], template: dict[str, Any], track: Track, replicas: int,
                     policy: CanaryPolicy, rollout_id: str) -> dict[str, Any]:
    """A canary or baseline Deployment next to ``stable``, running ``template``."""
    name = stable["metadata"]["name"]
    selector = dict(stable["spec"]["selector"].get("matchLabels") or {})
    own = track_labels(name, track)
    pod_labels = dict(template.get("metadata", {}).get("labels") or {})
    if policy.traffic_mode == "gateway-api":
        pod_labels = {k: v for k, v in pod_labels.items() if k not in selector}
        selector = {}
    tmpl = copy.deepcopy(template)
    tmpl.setdefault("metadata", {})["labels"] = {**pod_labels, **own}
    spec = {k: copy.deepcopy(v) for k, v in stable["spec"].items() if k not in ("replicas", "selector", "template", "paused")}
    spec.update(replicas=int(replicas), selector={"matchLabels": {**selector, **own}}, template=tmpl)
    spec["progressDeadlineSeconds"] = policy.readiness_timeout_s
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": track_name(name, track),
            "namespace": stable["metadata"]["namespace"],
            "labels": {**MANAGED_BY, **own},
            "annotations": {f"{GROUP}/rollout-id": rollout_id},
        },
        "spec": spec,
    }


def track_service(stable_service: dict[str, Any], deployment: str, track: Track) -> dict[str, Any]:
    """A Service for one track (gateway-api mode), with the stable Service's ports."""
    ports = [{k: v for k, v in p.items() if k in ("name", "port", "targetPort", "protocol", "appProtocol")}
             for p in stable_service["spec"].get("ports") or []]
    own = track_labels(deployment, track)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": track_name(stable_service["metadata"]["name"], track),
                     "namespace": stable_service["metadata"]["namespace"], "labels": {**MANAGED_BY, **own}},
        "spec": {"selector": own, "ports": ports, "type": "ClusterIP"},
    }


def _is_ref(ref: dict[str, Any], name: str) -> bool:
    return ref.get("name") == name and ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")


def route_rules(route: dict[str, Any], service: str, plan: StepPlan | None) -> list[dict[str, Any]]:
    """The HTTPRoute's rules with weights for ``plan`` (None: everything back to stable)."""
    rules = copy.deepcopy(route["spec"].get("rules") or [])
    names = {t: track_name(service, t) for t in TRACKS}
    touched = 0
    for rule in rules:
        refs = rule.get("backendRefs") or []
        stable = next((r for r in refs if _is_ref(r, service)), None)
        if stable is None:
            continue
        touched += 1
        others = [r for r in refs if not any(_is_ref(r, n) for n in (service, *names.values()))]
        if plan is None:
            rule["backendRefs"] = [*others, {**stable, "weight": 1}]
            continue
        refs = [{**stable, "weight": plan.stable_weight}]
        for track, weight in ((Track.baseline, plan.baseline_weight), (Track.canary, plan.canary_weight)):
            ref = {k: v for k, v in stable.items() if k not in ("weight", "filters")}
            refs.append({**ref, "name": names[track], "weight": weight})
        rule["backendRefs"] = [*others, *refs]
    if not touched:
        raise ValueError(f"HTTPRoute {route['metadata']['name']} has no rule sending to Service {service}")
    return rules


def render_plan(target: Target, policy: CanaryPolicy, stable: dict[str, Any],
                stable_service: dict[str, Any] | None = None, route: dict[str, Any] | None = None,
                rollout_id: str = "plan", require_approval: bool = False) -> dict[str, Any]:
    """What ``inferops canary plan`` prints: the objects and the step schedule."""
    steps = schedule(policy, stable["spec"].get("replicas", 1))
    first = steps[0]
    template = new_template(stable, target, policy)
    objects: list[dict[str, Any]] = [
        {"action": "create", "object": track_deployment(stable, template, Track.canary, first.canary_replicas,
                                                         policy, rollout_id)},
        {"action": "create", "object": track_deployment(stable, stable["spec"]["template"], Track.baseline,
                                                         first.baseline_replicas, policy, rollout_id)},
    ]
    if policy.traffic_mode == "gateway-api":
        service = policy.service or target.deployment
        svc = stable_service or {"metadata": {"name": service, "namespace": target.namespace},
                                 "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}}
        objects += [{"action": "create", "object": track_service(svc, target.deployment, t)} for t in TRACKS]
        route_name = policy.httproute or target.deployment
        if route is not None:
            objects.append({"action": "patch", "kind": "HTTPRoute", "name": route_name,
                            "spec.rules": route_rules(route, service, first)})
        else:
            objects.append({"action": "patch", "kind": "HTTPRoute", "name": route_name, "backendRef weights": {
                service: first.stable_weight, track_name(service, Track.baseline): first.baseline_weight,
                track_name(service, Track.canary): first.canary_weight}})
    else:
        objects.append({"action": "patch", "kind": "Deployment", "name": target.deployment,
                        "spec.replicas": first.stable_replicas})
    return {
        "target": target.model_dump(),
        "policy": json.loads(policy.model_dump_json()),
        "objects": objects,
        "schedule": [{**asdict(s), "effective_canary_percent": s.effective_canary_percent,
                      "min_analysis_s": 0 if s.promote else policy.intervals_per_step * policy.interval_s}
                     for s in steps],
        "promotion": {"approval_required": require_approval, "stable_template": template},
    }


def sample_deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A typical Triton Deployment, for plans made without a cluster."""
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "server",
                    "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                    "args": ["tritonserver", "--model-repository=/models"],
                    "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8000}},
                }]},
            },
        },
    }
