"""Hostile deployment parameters, as the Prefect UI and CI send them (JSON values through the API),
checked at the models the flows validate them with: a bad value is refused naming the parameter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.canary.models import CanaryPolicy, MetricSpec, Target
from flows.common.errors import BadInput
from flows.common.prom import validate_duration, validate_name
from flows.host_bootstrap.models import parse_extra_vars, validate_limit
from flows.idle_gpu.models import OfflineJob, check_names
from model_build.build import Serving

TARGET = {"namespace": "inference", "deployment": "llm-server", "image": "registry.local/llm:1.2"}
JOB = {"name": "eval-1", "image": "registry.local/eval:1", "command": ["python", "eval.py"], "gpus": 1,
       "estimated_hours": 1}


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\t"])
@pytest.mark.parametrize("field", ["namespace", "deployment", "image"])
def test_canary_target_names_refuse_trailing_whitespace(field, suffix):
    """Python's ``$`` matches before a final newline: 'inference\\n' passed as a Kubernetes name."""
    with pytest.raises(ValidationError, match=field):
        Target(**{**TARGET, field: TARGET[field] + suffix})


def test_canary_manifest_uri_refuses_a_trailing_newline():
    with pytest.raises(ValidationError, match="model_manifest_uri"):
        Target(**{**TARGET, "image": "", "model_manifest_uri": "s3://models/llm/manifest.json\n"})


@pytest.mark.parametrize("field", ["httproute", "service", "container"])
def test_canary_policy_names_refuse_a_trailing_newline(field):
    with pytest.raises(ValidationError, match=field):
        CanaryPolicy(**{field: "llm-server\n"})


def test_canary_metric_name_and_arg_name_refuse_a_trailing_newline():
    query = "sum(rate(errors_total{track={{track}}}[{{interval}}]))"
    with pytest.raises(ValidationError, match="metric name"):
        MetricSpec(name="errors\n", query=query)
    with pytest.raises(ValidationError, match="argument name"):
        MetricSpec(name="errors", query=query.replace("}}}", "}},code={{args.code}}}"), args={"code\n": "500"})


def test_prometheus_names_and_durations_refuse_a_trailing_newline():
    with pytest.raises(BadInput, match="metric/label name"):
        validate_name("up\n")
    with pytest.raises(BadInput, match="duration"):
        validate_duration("5m\n")


def test_bootstrap_limit_and_join_token_refuse_a_trailing_newline():
    with pytest.raises(BadInput, match="--limit"):
        validate_limit("gpu-a100-01\n")
    with pytest.raises(BadInput, match="k8s_node_join_token"):
        parse_extra_vars({"k8s_node_join_token": "abcdef.0123456789abcdef\n"})
    assert parse_extra_vars({"k8s_node_join_token": "abcdef.0123456789abcdef"}).to_ansible()


def test_idle_gpu_names_refuse_a_trailing_newline():
    with pytest.raises(BadInput, match="namespace"):
        check_names("offline-batch\n")
    with pytest.raises(BadInput, match="Kueue"):
        check_names("offline-batch", kueue_queue="queue\n")
    for field, value in (("name", "eval-1\n"), ("team", "ml\n"), ("annotations", {"example.com/a\n": "x"})):
        with pytest.raises(ValidationError, match=field):
            OfflineJob(**{**JOB, field: value})


@pytest.mark.parametrize("field", ["namespace", "deployment"])
def test_model_build_serving_names_refuse_a_trailing_newline(field):
    with pytest.raises(ValidationError, match=f"serving.{field}"):
        Serving(**{field: "inference\n"})


@pytest.mark.parametrize("timeout_s", [float("nan"), float("inf"), 1e308, 0, -1])
def test_drbd_timeout_refuses_nan_and_out_of_range(timeout_s):
    """NaN passed `timeout_s <= 0` and reached asyncio.timeout(nan), which never fires (a hung host hung the check)."""
    from flows.drbd_health.flow import check

    with pytest.raises(BadInput, match="timeout_s"):
        check(None, "drbd_hosts", ["unused"], None, None, None, timeout_s, 64)


@pytest.mark.parametrize(("poll", "wait"), [(float("nan"), 60), (-5, 60), (0, 60), (1e300, 60), (30, 10**12),
                                            (30, -1)])
def test_idle_gpu_timing_refuses_nan_negative_and_huge(poll, wait):
    """NaN or negative poll_seconds made the window loop poll back to back; a huge max_wait_minutes
    overflowed timedelta (OverflowError, naming nothing)."""
    from flows.idle_gpu.flow import check_timing

    with pytest.raises(BadInput, match="poll_seconds" if wait == 60 else "max_wait_minutes"):
        check_timing(poll, wait)
    check_timing(0.5, 60)


@pytest.mark.parametrize("model, base, misspelt", [
    ("model_build.build:BuildSpec", {"source": "m.onnx", "calib": "c.npz", "eval": "e.npz"}, "tolerence"),
    ("model_build.build:Serving", {}, "deploymnet"),
    ("flows.canary.models:CanaryPolicy", {}, "stpes"),
    ("flows.idle_gpu.models:PlanPolicy", {}, "headroom_gpu"),
    ("flows.idle_gpu.models:Discovery", {}, "util_bellow"),
    ("flows.cost_report.models:CostPolicy", {}, "teamtag"),
])
def test_a_misspelt_parameter_is_refused_never_ignored(model, base, misspelt):
    """A misspelt key in the UI's JSON (``"tolerence": 0.001``) was dropped, and the run went on with the
    default: the policy models behind the forms refuse unknown keys, naming them."""
    import importlib

    module, name = model.split(":")
    cls = getattr(importlib.import_module(module), name)
    cls.model_validate(base)  # the base is valid
    with pytest.raises(ValidationError, match=misspelt):
        cls.model_validate({**base, misspelt: 1})
    schema = cls.model_json_schema()  # the schema the deployment publishes to the UI and the API declares it
    assert schema.get("additionalProperties") is False


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_canary_thresholds_refuse_nan_and_infinity(value):
    """A NaN failure threshold never fails an interval (every comparison with NaN is false): the failure
    condition was silently off. ``--param`` and the API's JSON both carry NaN and Infinity."""
    with pytest.raises(ValidationError, match="failure_threshold"):
        MetricSpec(name="error_rate", query="sum(rate(x[1m]))", judge="threshold", failure_threshold=value)
    with pytest.raises(ValidationError, match="max_latency_s"):
        CanaryPolicy(max_latency_s=value)
