"""Policy validation, analysis specs and PromQL templating, the planner's objects (schema-valid) and schedule."""

import json

import kubernetes_validate
import pytest
from pydantic import ValidationError

from flows.canary import planner
from flows.canary.models import (
    CanaryPolicy,
    MetricSpec,
    MetricsPreset,
    Target,
    Track,
    load_metrics,
    preset_metrics,
)
from flows.canary.promql import check_template, rate_window, render
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
    with pytest.raises(ValidationError, match="error_rate_query.*track"):  # checked when the policy is built
        CanaryPolicy(error_rate_query="sum(rate(errors{namespace={{namespace}}}[{{interval}}]))")
    p = CanaryPolicy(latency_query="max(lat{track={{track}}})")
    assert [m.query for m in p.analysis()][1] == "max(lat{track={{track}}})"


@pytest.mark.parametrize("preset", list(MetricsPreset))
def test_presets_render_per_track(preset):
    metrics = preset_metrics(preset)
    assert [m.name for m in metrics] == ["error_rate", "latency_s"]  # what the shorthand fields refer to
    for m in metrics:
        q = render(m.query, namespace="ns", deployment="d", track=Track.baseline, interval="30s", args=m.args)
        assert 'track="baseline"' in q and "{{" not in q and "[30s]" in q


def test_shorthand_expands_to_the_metrics_list():
    p = CanaryPolicy(metrics_preset="http", max_error_rate=0.05, max_latency_s=0.3, tolerance=0.5)
    err, lat = p.analysis()
    assert (err.name, err.failure_threshold, lat.name, lat.failure_threshold) == ("error_rate", 0.05, "latency_s", 0.3)
    assert "http_requests_total" in err.query and err.judge == "mann-whitney" and err.tolerance is None
    assert CanaryPolicy().analysis() == preset_metrics("triton")


def test_any_number_of_metrics_and_named_args():
    spec = {"name": "tokens_per_s", "query": "sum(rate(tokens{track={{track}}, model={{args.model}}}[{{interval}}]))",
            "args": {"model": 'llama"3'}, "judge": "threshold", "compare": "absolute", "higher_is": "better",
            "failure_threshold": 100, "success_threshold": 200}
    metrics = [*preset_metrics("vllm"), MetricSpec(**spec)]
    p = CanaryPolicy(metrics=metrics)
    assert [m.name for m in p.analysis()] == ["error_rate", "latency_s", "tokens_per_s"]
    q = render(p.analysis()[2].query, namespace="n", deployment="d", track="canary", interval="1m", args=spec["args"])
    assert q == 'sum(rate(tokens{track="canary", model="llama\\"3"}[1m]))'


@pytest.mark.parametrize("change,msg", [
    ({"name": "Error-Rate"}, "snake_case"),
    ({"query": "sum(x{track={{track}}, m={{args.model}}})"}, "unknown placeholder"),
    ({"query": "sum(rate(x{track={{track}}}[{{interval}}])"}, "malformed PromQL"),
    ({"query": "x{track={{track}}}", "args": {"unused": "v"}}, "not used"),
    ({"judge": "mann-whitney", "compare": "absolute"}, "compares against the baseline"),
    ({"judge": "threshold", "compare": "absolute"}, "needs a failure_threshold"),
    ({"failure_threshold": 0.1, "success_threshold": 0.2}, "worse than failure_threshold"),
    ({"extra": 1}, "Extra inputs"),
])
def test_metric_specs_are_validated_when_loaded(change, msg):
    base = {"name": "error_rate", "query": "x{track={{track}}}"}
    with pytest.raises(ValidationError, match=msg):
        MetricSpec(**(base | change))


def test_analysis_files_load_or_fail_in_one_line(tmp_path):
    from flows.canary.models import PRESETS_DIR

    for path in PRESETS_DIR.glob("*.yaml"):  # the shipped files are what users copy
        assert load_metrics(path.read_text(), path.name)
    with pytest.raises(BadInput, match="metrics"):
        load_metrics("metrics: []", "a.yaml")
    with pytest.raises(BadInput, match=r"^analysis b.yaml, metric lat: the query must use .*track") as err:
        load_metrics("metrics:\n  - name: lat\n    query: max(lat)\n", "b.yaml")
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="unique"):
        CanaryPolicy(metrics=preset_metrics("triton") * 2)
    with pytest.raises(ValidationError, match="not both"):
        CanaryPolicy(metrics=preset_metrics("triton"), max_error_rate=0.2)


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
