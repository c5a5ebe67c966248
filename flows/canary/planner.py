"""The rollout planner: the objects a canary creates or patches, and the step schedule. Pure.

Manifests are plain dicts in the Kubernetes API's JSON shape. Canary and baseline Deployments are
copies of the stable one, named ``<deployment>-canary`` / ``<deployment>-baseline``. Their Pods keep
every label of the stable Pods, with ``inferops.io/track`` set to their track and
``inferops.io/rollout-of`` added; their selector is those two labels only. So the NetworkPolicies
and PodMonitors that select the stable Pods select them too (traffic, DNS, model downloads,
scrapes), and :func:`label_plan` checks that against the objects in the namespace before anything
is created. The stable Deployment's selector must not select them (overlapping controllers; the
HPA would count them): ship it with ``inferops.io/track: stable`` as deploy/k8s does.

* ``replicas`` mode: the shared Service selects every track, so it sends canary and baseline
  traffic in proportion to replica counts. Without an HPA the stable Deployment is scaled down to
  make room; with one, the stable count is the HPA's and canary/baseline are sized next to it.
* ``gateway-api`` mode: the stable Service selects the stable track only, canary and baseline get
  their own Services ``<service>-canary`` / ``<service>-baseline``, and an HTTPRoute weights the
  three.

:func:`check_names` validates every name and label value the rollout will write, before the
first object is created.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from flows.canary.models import CanaryPolicy, Target, Track
from flows.common.errors import BadInput
from flows.common.kube import describe_selector, selector_keys, selector_matches

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


def step_plan(policy: CanaryPolicy, weight: int, stable_replicas: int, *, scale_stable: bool = True) -> StepPlan:
    """Sizes and weights of one step for a stable Deployment of ``stable_replicas``.

    ``scale_stable=False`` (an HPA owns the stable count): the stable size is left as it is; in
    replicas mode canary and baseline are added next to it so that the canary's share of the pods
    is as close to ``weight`` as whole pods allow (at most as many as stable).
    """
    n = max(int(stable_replicas), 1)
    if weight >= 100:
        return StepPlan(100, n, 0, 0, 100, 0, 0, promote=True)
    if policy.traffic_mode == "gateway-api":
        k = max(1, math.ceil(n * weight / 100))
        return StepPlan(weight, n, k, k, 100 - 2 * weight, weight, weight, promote=False)
    if not scale_stable:
        k = n if 2 * weight >= 100 else max(1, min(n, math.floor(n * weight / (100 - 2 * weight) + 0.5)))
        return StepPlan(weight, n, k, k, n, k, k, promote=False)
    k = max(1, round(n * weight / 100))
    stable = max(n - 2 * k, 1)
    return StepPlan(weight, stable, k, k, stable, k, k, promote=False)


def schedule(policy: CanaryPolicy, stable_replicas: int, *, scale_stable: bool = True) -> list[StepPlan]:
    return [step_plan(policy, w, stable_replicas, scale_stable=scale_stable) for w in policy.steps]


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


def track_pod_labels(template_labels: dict[str, str], deployment: str, track: Track,
                     drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The labels of a canary or baseline Pod: the stable Pod's, minus ``drop``, with its track."""
    kept = {k: v for k, v in template_labels.items() if k not in drop}
    return {**kept, **track_labels(deployment, track)}


def track_deployment(stable: dict[str, Any], template: dict[str, Any], track: Track, replicas: int,
                     policy: CanaryPolicy, rollout_id: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A canary or baseline Deployment next to ``stable``, running ``template``.

    Its Pods carry the labels of ``template`` except ``drop`` (see :func:`label_plan`); its selector
    is the track's own labels, which the stable Deployment's selector never matches.
    """
    name = stable["metadata"]["name"]
    own = track_labels(name, track)
    tmpl = copy.deepcopy(template)
    tmpl.setdefault("metadata", {})["labels"] = track_pod_labels(
        dict(template.get("metadata", {}).get("labels") or {}), name, track, drop)
    spec = {k: copy.deepcopy(v) for k, v in stable["spec"].items() if k not in ("replicas", "selector", "template", "paused")}
    spec.update(replicas=int(replicas), selector={"matchLabels": own}, template=tmpl)
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


# ---- what the canary Pods must keep, and what must not select them --------------------------------

@dataclass(frozen=True)
class LabelPlan:
    """Labels dropped from canary/baseline Pods, and the objects checked (for the plan and the log)."""

    drop: tuple[str, ...] = ()
    kept_for: tuple[str, ...] = ()  # objects that select stable Pods and select the track Pods too
    kept_apart_from: tuple[str, ...] = ()  # selectors that must not select the track Pods


def label_plan(stable: dict[str, Any], policy: CanaryPolicy, *, network_policies: list[dict[str, Any]] = (),
               pod_monitors: list[dict[str, Any]] = (), service: dict[str, Any] | None = None) -> LabelPlan:
    """Check, before anything is created, that canary and baseline Pods keep every label the
    namespace's NetworkPolicies and PodMonitors select the stable Pods by, and that no selector
    that must leave them alone selects them; refuse with :class:`BadInput` when both cannot hold.

    Must keep selecting them: every NetworkPolicy (``podSelector``) and PodMonitor (``selector``)
    that selects the stable Pods, and in replicas mode the stable ``service`` (it carries their
    traffic). Must not select them: the stable Deployment's selector (overlapping controllers; its
    HPA would count them) and, in gateway-api mode, the stable ``service`` (the HTTPRoute weights
    would lie). A label that only makes the second kind match, and that nothing of the first kind
    needs, is dropped from the track Pods.
    """
    name, ns = stable["metadata"]["name"], stable["metadata"]["namespace"]
    base = dict((stable["spec"]["template"].get("metadata") or {}).get("labels") or {})
    keep: list[tuple[str, dict[str, Any]]] = []
    for np in network_policies:
        sel = (np.get("spec") or {}).get("podSelector") or {}
        if selector_matches(sel, base):
            keep.append((f"NetworkPolicy {np['metadata']['name']}", sel))
    for pm in pod_monitors:
        sel = (pm.get("spec") or {}).get("selector") or {}
        if selector_matches(sel, base):
            keep.append((f"PodMonitor {pm['metadata']['name']}", sel))
    if not selector_keys(stable["spec"].get("selector")):  # apps/v1 refuses it: it would select every pod
        raise BadInput(f"canary of {ns}/{name}: Deployment {name} has an empty spec.selector, which apps/v1 "
                       "refuses; give it the stable pods' matchLabels")
    avoid: list[tuple[str, dict[str, Any]]] = [(f"the selector of Deployment {name}", stable["spec"]["selector"])]
    svc_sel = ((service or {}).get("spec") or {}).get("selector")
    if svc_sel and selector_matches({"matchLabels": svc_sel}, base):
        svc = f"Service {service['metadata']['name']}"
        if policy.traffic_mode == "gateway-api":
            avoid.append((f"{svc} (the stable backend of the HTTPRoute)", {"matchLabels": svc_sel}))
        else:
            keep.append((f"{svc} (it sends canary and baseline their traffic in replicas mode)",
                         {"matchLabels": svc_sel}))
    needed = set().union(*(selector_keys(s) for _, s in keep)) if keep else set()
    own = {TRACK_LABEL, ROLLOUT_OF_LABEL}

    def pods(drop: set[str]) -> list[tuple[Track, dict[str, str]]]:
        return [(t, track_pod_labels(base, name, t, tuple(drop))) for t in TRACKS]

    drop: set[str] = set()
    for _, sel in avoid:
        if any(selector_matches(sel, labels) for _, labels in pods(drop)):
            drop |= {k for k in selector_keys(sel) if k in base and k not in needed and k not in own}
    for what, sel in keep:
        for track, labels in pods(drop):
            if not selector_matches(sel, labels):
                raise BadInput(
                    f"canary of {ns}/{name}: {what} selects the stable pods by {describe_selector(sel)}, which "
                    f"{track} pods cannot match (they carry {TRACK_LABEL}={track}); select on labels other than "
                    f"{TRACK_LABEL} there")
    for what, sel in avoid:
        hit = [str(t) for t, labels in pods(drop) if selector_matches(sel, labels)]
        if hit:
            why = ", ".join(w for w, s in keep if selector_keys(s) & selector_keys(sel)) or "the track pods"
            raise BadInput(
                f"canary of {ns}/{name}: {what} ({describe_selector(sel)}) would also select the {' and '.join(hit)} "
                f"pods, which must keep {', '.join(sorted(selector_keys(sel) & needed)) or 'those labels'} for "
                f"{why}; add {TRACK_LABEL}: stable to the stable pods' labels and to that selector "
                f"(deploy/k8s does)")
    return LabelPlan(tuple(sorted(drop)), tuple(w for w, _ in keep), tuple(w for w, _ in avoid))


# ---- names ---------------------------------------------------------------------------------------

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _subdomain_ok(name: str) -> bool:
    return len(name) <= 253 and all(_DNS_1123_LABEL.fullmatch(p) for p in name.split("."))


def planned_names(target: Target, policy: CanaryPolicy) -> list[tuple[str, str]]:
    """(what, value) of every name and label value the rollout writes."""
    dep = target.deployment
    out = [(f"Deployment {track_name(dep, t)}", track_name(dep, t)) for t in TRACKS]
    if policy.traffic_mode == "gateway-api":
        svc = policy.service or dep
        out += [(f"Service {track_name(svc, t)}", track_name(svc, t)) for t in TRACKS]
    out.append((f"label {ROLLOUT_OF_LABEL}", dep))
    return out


def check_names(target: Target, policy: CanaryPolicy) -> None:
    """Every name the rollout will create is valid, checked before the first object is created:
    Deployments are DNS-1123 subdomains, Services DNS-1035 labels (at most 63 characters, starting
    with a letter), label values at most 63 characters. :class:`BadInput` lists each bad one."""
    bad = []
    for what, value in planned_names(target, policy):
        if what.startswith("Service") and (len(value) > 63 or not _DNS_1035.fullmatch(value)):
            bad.append(f"{what} ({len(value)} characters) is not a DNS-1035 label of at most 63 characters "
                       f"starting with a letter")
        elif what.startswith("Deployment") and not _subdomain_ok(value):
            bad.append(f"{what} is not a DNS-1123 subdomain")
        elif what.startswith("label") and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
            bad.append(f"{what}={value} ({len(value)} characters) is not a label value of at most 63 characters")
    if bad:
        raise BadInput(f"canary of {target.namespace}/{target.deployment} would create names Kubernetes rejects: "
                       + "; ".join(bad) + (" (shorten --service)" if any(b.startswith("Service") for b in bad) else ""))


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
                rollout_id: str = "plan", require_approval: bool = False, *, autoscaler: dict[str, Any] | None = None,
                network_policies: list[dict[str, Any]] = (), pod_monitors: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """What ``inferops canary plan`` prints: the objects and the step schedule.

    Checks the names (:func:`check_names`) and the labels (:func:`label_plan`) as a rollout would.
    With an ``autoscaler`` (the HPA of the target) the stable count is left to it.
    """
    check_names(target, policy)
    labels = label_plan(stable, policy, network_policies=network_policies, pod_monitors=pod_monitors,
                        service=stable_service)
    steps = schedule(policy, stable["spec"].get("replicas", 1), scale_stable=autoscaler is None)
    first = steps[0]
    template = new_template(stable, target, policy)
    objects: list[dict[str, Any]] = [
        {"action": "create", "object": track_deployment(stable, template, Track.canary, first.canary_replicas,
                                                         policy, rollout_id, labels.drop)},
        {"action": "create", "object": track_deployment(stable, stable["spec"]["template"], Track.baseline,
                                                         first.baseline_replicas, policy, rollout_id, labels.drop)},
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
    elif autoscaler is None:
        objects.append({"action": "patch", "kind": "Deployment", "name": target.deployment,
                        "spec.replicas": first.stable_replicas})
    return {
        "target": target.model_dump(),
        "policy": json.loads(policy.model_dump_json()),
        "objects": objects,
        "labels": {"dropped": list(labels.drop), "kept_for": list(labels.kept_for),
                   "not_selected_by": list(labels.kept_apart_from)},
        "stable_replicas": (f"left to HorizontalPodAutoscaler {autoscaler['metadata']['name']}" if autoscaler
                            else "scaled down to make room, restored at the end"
                            if policy.traffic_mode == "replicas" else "unchanged"),
        "schedule": [{**asdict(s), "effective_canary_percent": s.effective_canary_percent,
                      "min_analysis_s": 0 if s.promote else policy.intervals_per_step * policy.interval_s}
                     for s in steps],
        "promotion": {"approval_required": require_approval, "stable_template": template},
    }


def sample_deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """A typical Triton Deployment, for plans made without a cluster: its selector and Pods carry
    ``inferops.io/track: stable`` beside the app name, as deploy/k8s ships it."""
    labels = {"app.kubernetes.io/name": name, TRACK_LABEL: "stable"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
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
