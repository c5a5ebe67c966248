"""Policy validation, PromQL templating, the planner's objects (schema-valid) and schedule."""

import json

import kubernetes_validate
import pytest
from pydantic import ValidationError

from flows.canary import planner
from flows.canary.models import CanaryPolicy, MetricsPreset, Target, Track
from flows.canary.promql import PRESETS, check_template, queries, rate_window, render
from flows.common.errors import BadInput

T = Target(namespace="inference", deployment="llm", image="registry.example/llm:2",
           model_manifest_uri="s3://models/llm/manifest.json")
K8S = "1.33.0"


def validate(obj):
    kubernetes_validate.validate(obj, K8S, strict=True)


@pytest.mark.parametrize("steps", [[5, 25], [50, 25, 100], [0, 100], [5, 75, 100], []])
def test_bad_steps_rejected(steps):
    with pytest.raises(ValidationError):
        CanaryPolicy(steps=steps)


@pytest.mark.parametrize("fields", [
    {"namespace": "Bad_NS", "deployment": "llm", "image": "x:1"},
    {"namespace": "ns", "deployment": "llm", "image": "x:1; rm -rf /"},
    {"namespace": "ns", "deployment": "llm"},
    {"namespace": "ns", "deployment": "llm", "model_manifest_uri": "ftp://x"},
])
def test_bad_targets_rejected(fields):
    with pytest.raises(ValidationError):
        Target(**fields)


def test_placeholders_are_quoted_and_validated():
    q = render("rate(x{namespace={{namespace}}, deployment={{deployment}}, track={{ track }}}[{{interval}}])",
               namespace="ns", deployment='a"}) or vector(1) #', track="canary", interval="5s")
    assert q == 'rate(x{namespace="ns", deployment="a\\"}) or vector(1) #", track="canary"}[5s])'
    with pytest.raises(BadInput):
        render("x[{{interval}}]", namespace="n", deployment="d", track="canary", interval="5s) or vector(1")
    with pytest.raises(BadInput):
        render("x{a={{pod}}}", namespace="n", deployment="d", track="canary", interval="5s")
    with pytest.raises(ValueError):
        render("x{track={{track}}}", namespace="n", deployment="d", track="prod", interval="5s")


def test_custom_query_must_select_track():
    with pytest.raises(BadInput, match="track"):
        check_template("sum(rate(errors{namespace={{namespace}}}[{{interval}}]))", "error_rate")
    p = CanaryPolicy(latency_query="max(lat{track={{track}}})")
    assert [q.template for q in queries(p)][1] == "max(lat{track={{track}}})"


@pytest.mark.parametrize("preset", list(MetricsPreset))
def test_presets_render_per_track(preset):
    for template in PRESETS[preset].values():
        q = render(template, namespace="ns", deployment="d", track=Track.baseline, interval="30s")
        assert 'track="baseline"' in q and "{{" not in q and "[30s]" in q


def test_rate_window_spans_at_least_four_scrapes():
    assert rate_window(CanaryPolicy(interval_s=30, scrape_interval_s=30)) == "120s"
    assert rate_window(CanaryPolicy(interval_s=300, scrape_interval_s=30)) == "300s"
    assert rate_window(CanaryPolicy(interval_s=3, scrape_interval_s=1)) == "4s"


def test_replicas_schedule_keeps_baseline_equal_to_canary():
    steps = planner.schedule(CanaryPolicy(), 10)
    assert [(s.stable_replicas, s.baseline_replicas, s.canary_replicas) for s in steps] == \
        [(8, 1, 1), (6, 2, 2), (1, 5, 5), (10, 0, 0)]
    assert steps[-1].promote and not steps[0].promote


def test_gateway_schedule_weights():
    steps = planner.schedule(CanaryPolicy(traffic_mode="gateway-api"), 4)
    assert [(s.stable_weight, s.baseline_weight, s.canary_weight) for s in steps[:-1]] == \
        [(90, 5, 5), (50, 25, 25), (0, 50, 50)]
    assert [s.canary_replicas for s in steps[:-1]] == [1, 1, 2]


@pytest.mark.parametrize("mode", ["replicas", "gateway-api"])
def test_plan_objects_validate_strictly(mode):
    stable = planner.sample_deployment("inference", "llm", 4)
    plan = planner.render_plan(T, CanaryPolicy(traffic_mode=mode), stable)
    created = [o["object"] for o in plan["objects"] if o["action"] == "create"]
    assert {o["kind"] for o in created} == ({"Deployment", "Service"} if mode == "gateway-api" else {"Deployment"})
    for obj in created:
        validate(obj)
    canary = created[0]
    c = canary["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == T.image and {"name": planner.MANIFEST_ENV, "value": T.model_manifest_uri} in c["env"]
    sel = canary["spec"]["selector"]["matchLabels"]
    assert sel[planner.TRACK_LABEL] == "canary"
    assert all(canary["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    if mode == "gateway-api":  # the stable Service (selecting app.kubernetes.io/name) must not pick it up
        assert "app.kubernetes.io/name" not in canary["spec"]["template"]["metadata"]["labels"]
    baseline = created[1]
    assert baseline["spec"]["template"]["spec"]["containers"][0]["image"] == \
        stable["spec"]["template"]["spec"]["containers"][0]["image"]
    json.dumps(plan)  # the CLI prints it


def test_route_rules_weights_and_reset():
    route = {"metadata": {"name": "llm"}, "spec": {"rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
         "backendRefs": [{"name": "llm", "port": 8000}]},
        {"backendRefs": [{"name": "other", "port": 80}]},
    ]}}
    plan = planner.step_plan(CanaryPolicy(traffic_mode="gateway-api"), 25, 4)
    rules = planner.route_rules(route, "llm", plan)
    assert rules[0]["backendRefs"] == [{"name": "llm", "port": 8000, "weight": 50},
                                       {"name": "llm-baseline", "port": 8000, "weight": 25},
                                       {"name": "llm-canary", "port": 8000, "weight": 25}]
    assert rules[1] == route["spec"]["rules"][1]
    route["spec"]["rules"] = rules
    assert planner.route_rules(route, "llm", None)[0]["backendRefs"] == [{"name": "llm", "port": 8000, "weight": 1}]
    with pytest.raises(ValueError, match="no rule"):
        planner.route_rules(route, "nope", plan)
