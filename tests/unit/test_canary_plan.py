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
from flows.common.kube import selector_matches

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
    # the error ratio is judged on its request counts, taken over the same window as the ratio
    err = metrics[0]
    assert err.judge == "binomial"
    n = render(err.count_query, namespace="ns", deployment="d", track=Track.canary, interval="30s", args=err.args)
    assert n.startswith("sum(increase(") and 'track="canary"' in n and "[30s]" in n


def test_shorthand_expands_to_the_metrics_list():
    p = CanaryPolicy(metrics_preset="http", max_error_rate=0.05, max_latency_s=0.3, tolerance=0.5)
    err, lat = p.analysis()
    assert (err.name, err.failure_threshold, lat.name, lat.failure_threshold) == ("error_rate", 0.05, "latency_s", 0.3)
    assert "http_requests_total" in err.query and err.judge == "binomial" and err.tolerance is None
    assert lat.judge == "mann-whitney"
    assert CanaryPolicy().analysis() == preset_metrics("triton")
    # a custom error-ratio query has no count query to go with it: the U test judges it
    custom = CanaryPolicy(error_rate_query="sum(rate(errs{track={{track}}}[{{interval}}])) / "
                                           "sum(rate(reqs{track={{track}}}[{{interval}}]))").analysis()[0]
    assert (custom.judge, custom.count_query) == ("mann-whitney", "")


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
    ({"judge": "binomial"}, "binomial needs a count_query"),
    ({"count_query": "sum(increase(r{track={{track}}}[{{interval}}]))"}, "binomial needs a count_query"),
    ({"judge": "binomial", "count_query": "sum(increase(r[{{interval}}]))"}, "must use .*track"),
    ({"judge": "binomial", "count_query": "sum(increase(r{track={{track}}}[{{interval}}])"}, "malformed PromQL"),
    ({"judge": "binomial", "compare": "absolute", "failure_threshold": 0.1,
      "count_query": "r{track={{track}}}"}, "binomial compares against the baseline"),
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
    labels = canary["spec"]["template"]["metadata"]["labels"]
    # every stable label kept (NetworkPolicies, PodMonitors), but never selected by the stable Deployment
    assert labels == {"app.kubernetes.io/name": "llm", planner.TRACK_LABEL: "canary", planner.ROLLOUT_OF_LABEL: "llm"}
    assert not selector_matches(stable["spec"]["selector"], labels)
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


# ---- issue 14, defect 1: canary and baseline pods keep what NetworkPolicies and PodMonitors select on

NAME = {"app.kubernetes.io/name": "llm"}


def stable_with(selector, pod_labels=None):
    dep = planner.sample_deployment("inference", "llm", 4)
    dep["spec"]["selector"] = {"matchLabels": selector}
    dep["spec"]["template"]["metadata"]["labels"] = pod_labels or dict(selector)
    return dep


def netpol(name, selector):
    return {"metadata": {"name": name}, "spec": {"podSelector": selector}}


def monitor(name, selector):
    return {"metadata": {"name": name}, "spec": {"selector": selector}}


def service(selector):
    return {"metadata": {"name": "llm", "namespace": "inference"}, "spec": {"selector": selector}}


def track_pods(stable, drop):
    base = stable["spec"]["template"]["metadata"]["labels"]
    return [planner.track_pod_labels(base, "llm", t, drop) for t in planner.TRACKS]


@pytest.mark.parametrize("mode", ["replicas", "gateway-api"])
def test_track_pods_keep_every_label_policies_and_monitors_select(mode):
    """The stack as deploy/k8s ships it: the stable selector and pods carry inferops.io/track=stable,
    the NetworkPolicy and PodMonitor select app.kubernetes.io/name; the Service selects stable only in
    gateway-api mode (the HTTPRoute weights the tracks) and every track in replicas mode."""
    tracked = {**NAME, planner.TRACK_LABEL: "stable"}
    stable = stable_with(tracked)
    svc = service(tracked if mode == "gateway-api" else NAME)
    policy = CanaryPolicy(traffic_mode=mode)
    plan = planner.label_plan(stable, policy, network_policies=[netpol("default-deny", {}), netpol("llm", {
        "matchLabels": NAME}), netpol("other-app", {"matchLabels": {"app.kubernetes.io/name": "other"}})],
        pod_monitors=[monitor("llm", {"matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": ["llm", "llm-v2"]}]})], service=svc)
    assert plan.drop == ()
    assert set(plan.kept_for) >= {"NetworkPolicy default-deny", "NetworkPolicy llm", "PodMonitor llm"}
    assert "NetworkPolicy other-app" not in plan.kept_for
    for labels in track_pods(stable, plan.drop):
        assert labels["app.kubernetes.io/name"] == "llm"
        assert not selector_matches(stable["spec"]["selector"], labels)
        assert selector_matches({"matchLabels": svc["spec"]["selector"]}, labels) is (mode == "replicas")


def test_a_label_nothing_needs_is_dropped_to_keep_the_stable_service_away():
    """gateway-api mode, an old-style selector (app name only), nothing selecting by it: the label
    goes (what the planner always did), so neither the stable Service nor its ReplicaSets pick them up."""
    stable = stable_with(NAME)
    plan = planner.label_plan(stable, CanaryPolicy(traffic_mode="gateway-api"), service=service(NAME))
    assert plan.drop == ("app.kubernetes.io/name",)
    assert not any(selector_matches(stable["spec"]["selector"], p) for p in track_pods(stable, plan.drop))


@pytest.mark.parametrize("mode", ["replicas", "gateway-api"])
def test_refused_when_a_policy_needs_a_label_the_stable_selector_also_uses(mode):
    stable = stable_with(NAME)
    with pytest.raises(BadInput) as err:
        planner.label_plan(stable, CanaryPolicy(traffic_mode=mode), network_policies=[netpol("llm", {"matchLabels": NAME})],
                           service=service(NAME))
    msg = str(err.value)
    assert "the selector of Deployment llm (app.kubernetes.io/name=llm) would also select the baseline and canary pods" in msg
    assert "NetworkPolicy llm" in msg and "add inferops.io/track: stable" in msg and "\n" not in msg


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": None}, {"matchLabels": {}, "matchExpressions": []}])
def test_an_empty_deployment_selector_is_refused_by_name(selector):
    """apps/v1 refuses an empty selector (it would select every pod, the track pods too)."""
    stable = stable_with(NAME)
    stable["spec"]["selector"] = selector
    with pytest.raises(BadInput, match="Deployment llm has an empty spec.selector, which apps/v1 refuses"):
        planner.label_plan(stable, CanaryPolicy())


def test_refused_when_a_selector_depends_on_the_stable_track():
    tracked = {**NAME, planner.TRACK_LABEL: "stable"}
    stable = stable_with(tracked)
    with pytest.raises(BadInput, match="PodMonitor llm selects the stable pods by app.kubernetes.io/name=llm,"
                       "inferops.io/track=stable, which baseline pods cannot match"):
        planner.label_plan(stable, CanaryPolicy(), pod_monitors=[monitor("llm", {"matchLabels": tracked})])
    # replicas mode sends traffic through the stable Service: one that selects stable only is refused
    with pytest.raises(BadInput, match="Service llm .it sends canary and baseline their traffic"):
        planner.label_plan(stable, CanaryPolicy(traffic_mode="replicas"), service=service(tracked))


# ---- issue 14, defect 7: every name validated before anything is created

def test_every_name_the_rollout_creates_is_validated_first():
    long_service = "s" * 60  # a valid DNS-1035 label; -baseline makes it 69 characters
    gw = CanaryPolicy(traffic_mode="gateway-api", service=long_service)
    with pytest.raises(BadInput) as err:
        planner.check_names(T, gw)
    assert f"Service {long_service}-baseline (69 characters) is not a DNS-1035 label of at most 63" in str(err.value)
    assert f"Service {long_service}-canary (67 characters)" in str(err.value)
    planner.check_names(T, CanaryPolicy(traffic_mode="replicas", service=long_service))  # no Services made
    digits = Target(namespace="inference", deployment="7b-llm", image="registry.example/llm:2")
    with pytest.raises(BadInput, match="Service 7b-llm-canary .* starting with a letter"):
        planner.check_names(digits, CanaryPolicy(traffic_mode="gateway-api"))
    with pytest.raises(BadInput, match="69 characters"):
        planner.render_plan(T, gw, planner.sample_deployment("inference", "llm", 4))


def test_hpa_schedule_never_touches_stable_and_sizes_next_to_it():
    steps = planner.schedule(CanaryPolicy(), 3, scale_stable=False)
    assert [(s.stable_replicas, s.canary_replicas, s.baseline_replicas) for s in steps[:-1]] == \
        [(3, 1, 1), (3, 2, 2), (3, 3, 3)]
    assert [s.effective_canary_percent for s in steps[:-1]] == [20.0, 28.6, 33.3]
    assert planner.step_plan(CanaryPolicy(), 5, 30, scale_stable=False).canary_replicas == 2  # ~5.9 %
    plan = planner.render_plan(T, CanaryPolicy(), planner.sample_deployment("inference", "llm", 3),
                               autoscaler={"metadata": {"name": "llm"}})
    assert not [o for o in plan["objects"] if o.get("kind") == "Deployment" and o["action"] == "patch"]
    assert plan["stable_replicas"] == "left to HorizontalPodAutoscaler llm"


def test_flow_run_pods_outlive_a_rollback():
    """issue 14, defect 3: the crash hook of a cancelled canary run waits for stable up to the policy's
    readiness timeout; the k8s pool gives its flow-run pods a longer termination grace period."""
    from pathlib import Path

    from flows.canary.models import READINESS_TIMEOUT_MAX_S

    template = json.loads((Path(__file__).resolve().parents[2] / "deploy/prefect/k8s.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > READINESS_TIMEOUT_MAX_S
    with pytest.raises(ValidationError, match="less than or equal to 1800"):
        CanaryPolicy(readiness_timeout_s=READINESS_TIMEOUT_MAX_S + 1)
