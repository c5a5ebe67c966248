"""The ``canary-rollout`` flow: a short sequence of tasks around the rollout controller.

Check the target and the analysis, read the stable Deployment, then let
:class:`~flows.canary.controller.Rollout` lease the target, create canary + fresh baseline, shift
traffic, judge every interval (the ``canary-analyse-interval`` task) and promote (after approval,
if required) or roll back. Failure, crash and cancellation roll back through state hooks (offline
runs call the same hooks, see ``flows.common.runtime.run_offline``); ``inferops canary abort`` does
the same by hand.

No ``from __future__ import annotations`` here: Prefect resolves the flow's parameter types when a
worker loads it from its entrypoint, and string annotations would not resolve there.
"""


from typing import Any

from pydantic import BaseModel, Field, ValidationError

from flows.canary import planner
from flows.canary.actuator import Cluster
from flows.canary.analysis import StepSamples, analyse, preflight
from flows.canary.controller import Approve, Rollout, RolloutResult, fmt, rollback_if_held
from flows.canary.models import (
    EVENT_PROMOTED,
    EVENT_ROLLED_BACK,
    CanaryPolicy,
    IntervalResult,
    Target,
    resource_id,
)
from flows.common import artifacts
from flows.common.clock import WallClock
from flows.common.errors import BadInput, GateFailed, bad_input_from
from flows.common.kube import client_from_settings
from flows.common.prom import client_from_settings as prometheus
from flows.common.runtime import (
    NO_CACHE,
    can_pause,
    current_run_id,
    flow,
    get_logger,
    ops_task,
    pause_for_input,
)


class Approval(BaseModel):  # the UI form (runtime.pause_for_input makes it a RunInput)
    """The approve/reject form shown in the UI before a step that needs a human."""

    approve: bool = Field(False, description="Tick to go on; leave unticked to roll back")
    comment: str = Field("", max_length=500)


def make_target(namespace: str, deployment: str, image: str, model_manifest_uri: str) -> Target:
    try:
        return Target(namespace=namespace, deployment=deployment, image=image,
                      model_manifest_uri=model_manifest_uri)
    except ValidationError as exc:
        raise bad_input_from(exc, "canary target") from None


def summary_markdown(target: Target, outcome: str, reason: str, rows: list[dict[str, Any]],
                     seconds: float) -> str:
    head = (f"# Canary {outcome}: `{target.namespace}/{target.deployment}`\n\n"
            f"- new image: {artifacts.code(target.image or '(unchanged)')}\n"
            f"- model manifest: {artifacts.code(target.model_manifest_uri or '(unchanged)')}\n"
            f"- reason: {reason}\n- intervals analysed: {len(rows)}; {seconds:.0f} s\n\n")
    if not rows:
        return head
    cols = list(rows[-1])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[-20:]:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return head + "\n".join(lines) + "\n"


@ops_task(name="canary-check-queries", cache_policy=NO_CACHE)
def check_queries(target: Target, policy: CanaryPolicy) -> None:
    """Every metric's query once against Prometheus, before anything changes (400: bad input now)."""
    with prometheus() as client:
        for note in preflight(client, target, policy):
            get_logger().warning("analysis: %s", note)


@ops_task(name="canary-analyse-interval", task_run_name="analyse {target.deployment} {weight}% #{interval}",
          cache_policy=NO_CACHE)
def analyse_interval(target: Target, policy: CanaryPolicy, history: StepSamples, weight: int,
                     interval: int, end: float) -> IntervalResult:
    """Sample and judge the interval ending at ``end``; adds its samples to ``history`` (the step's)."""
    with prometheus() as client:
        return analyse(client, target, policy, history, weight=weight, interval=interval, end=end)


def approver(target: Target, policy: CanaryPolicy, started: float) -> Approve:
    """The human decision: a summary artifact, then the run pauses for the Approval form."""
    import time

    def ask(question: str, rows: list[dict[str, Any]]) -> tuple[bool, str]:
        body = summary_markdown(target, "awaiting approval", question, rows, time.time() - started)
        artifacts.markdown(f"canary-{target.deployment}-approval", body, description=question)
        answer = pause_for_input(Approval, description=body, timeout_s=policy.approval_timeout_s, poll_interval_s=2)
        if answer is None:
            return False, f"no approval within {policy.approval_timeout_s}s"
        who = f" ({answer.comment})" if answer.comment else ""
        return bool(answer.approve), ("approved" if answer.approve else "rejected") + who

    return ask


def finish(target: Target, result: RolloutResult) -> dict[str, Any]:
    """Artifacts, the event and the flow's return value for a finished rollout."""
    t, rows = target, result.rows
    artifacts.table(f"canary-{t.deployment}-intervals", rows,
                    description=f"Canary analysis of {t.namespace}/{t.deployment}")
    artifacts.markdown(f"canary-{t.deployment}-summary",
                       summary_markdown(t, result.outcome, result.reason, rows, result.seconds),
                       description=f"canary {result.outcome}: {result.reason}")
    event = EVENT_PROMOTED if result.outcome == "promoted" else EVENT_ROLLED_BACK
    artifacts.emit(event, resource_id(t.namespace, t.deployment), {
        "namespace": t.namespace, "deployment": t.deployment, "image": t.image,
        "model_manifest_uri": t.model_manifest_uri, "reason": result.reason, "intervals": len(rows)})
    get_logger().info("canary %s: %s (%.1f s)", result.outcome, result.reason, result.seconds)
    return {"outcome": result.outcome, "reason": result.reason, "namespace": t.namespace,
            "deployment": t.deployment, "seconds": round(result.seconds, 1), "intervals": rows}


def rollback_on_failure(flow: Any, flow_run: Any, state: Any) -> None:  # Prefect passes these by name
    """State hook (failure, crash, cancellation; offline runs too): roll back if this run holds the lease."""
    log = get_logger()
    params = flow_run.parameters or {}
    try:
        cluster = Cluster(client_from_settings(), params["namespace"], params["deployment"])
        # waits for stable up to the policy's readiness timeout (kept in the lease); the k8s pool's
        # flow-run pods have a longer termination grace period, so SIGTERM does not cut this short
        done = rollback_if_held(cluster, str(flow_run.id), WallClock(), logger=log)
    except Exception as exc:  # a hook must report, not raise
        log.error("rollback after %s failed: %s (run `inferops canary abort`)", state.name, exc)
        return
    if done is None:
        return  # nothing in flight, or another run's rollout: not ours to touch
    log.warning("rolled back %s/%s after the run ended %s: %s", params["namespace"], params["deployment"],
                state.name, ", ".join(done) or "nothing left")
    artifacts.emit(EVENT_ROLLED_BACK, resource_id(params["namespace"], params["deployment"]),
                   {"reason": f"flow run {state.name}", "namespace": params["namespace"],
                    "deployment": params["deployment"]})


@flow(name="canary-rollout", log_prints=False, on_failure=[rollback_on_failure],
      on_crashed=[rollback_on_failure], on_cancellation=[rollback_on_failure])
def canary_rollout(
    namespace: str,
    deployment: str,
    image: str = "",
    model_manifest_uri: str = "",
    policy: CanaryPolicy = CanaryPolicy(),  # noqa: B008 (an immutable default the UI shows)
    require_approval: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Roll a new image and/or model out to a Deployment as a judged canary; promote or roll back.

    Args:
        namespace: Kubernetes namespace of the target Deployment, e.g. inference.
        deployment: The stable Deployment to roll out to; the canary and baseline Deployments are
            named after it with the suffixes -canary and -baseline.
        image: New container image for the container named in the policy (default: the first one).
            Give an image, a model manifest URI, or both.
        model_manifest_uri: Model manifest written by model-build (s3://, file:// or http(s)://),
            passed to the pods as INFEROPS_MODEL_MANIFEST_URI.
        policy: Steps, traffic mode and analysis (metrics, thresholds, limits) of the rollout.
        require_approval: Pause for a human decision in the UI before promoting to 100 percent;
            no answer within the approval timeout rolls back.
        dry_run: Read the cluster and return the plan (objects and schedule); change nothing.
    """
    target = make_target(namespace, deployment, image, model_manifest_uri)
    if require_approval and not dry_run and not can_pause():
        raise BadInput("approval needs a Prefect API (set PREFECT_API_URL), or run without --approval")
    cluster = Cluster(client_from_settings(), target.namespace, target.deployment)
    stable = cluster.read_target()
    if dry_run:
        return dry_run_plan(target, policy, cluster, stable, require_approval)
    check_queries(target, policy)
    clock = WallClock()
    rollout = Rollout(
        target, policy, cluster, clock, holder=current_run_id(),
        analyse=lambda weight, n, history, end: analyse_interval(target, policy, history, weight, n, end),
        approve=approver(target, policy, clock.now()) if can_pause() else None,
        on_step=lambda rows: artifacts.table(f"canary-{deployment}-intervals", rows,
                                             description=f"Canary analysis of {namespace}/{deployment}"),
        logger=get_logger())
    result = rollout.run(require_approval)
    out = finish(target, result)
    if result.outcome != "promoted":
        raise GateFailed(f"canary of {target.namespace}/{target.deployment} rolled back: {result.reason}")
    return out


def dry_run_plan(target: Target, policy: CanaryPolicy, cluster: Cluster, stable: dict[str, Any],
                 require_approval: bool) -> dict[str, Any]:
    route = None
    svc = cluster.find_service(policy.service or target.deployment)
    if policy.traffic_mode == "gateway-api":
        svc = cluster.read_service(policy.service or target.deployment)
        route = cluster.read_route(policy.httproute or target.deployment)
    policies, monitors = cluster.label_objects()
    plan = planner.render_plan(target, policy, stable, svc, route, require_approval=require_approval,
                               autoscaler=cluster.read_autoscaler(), network_policies=policies,
                               pod_monitors=monitors)
    artifacts.markdown(f"canary-{target.deployment}-plan", plan_markdown(target, plan))
    return {"outcome": "planned", **plan}


@flow(name="canary-plan", log_prints=False)
def canary_plan(namespace: str, deployment: str, image: str = "", model_manifest_uri: str = "",
                policy: CanaryPolicy = CanaryPolicy(), replicas: int = 4,  # noqa: B008
                require_approval: bool = False) -> dict[str, Any]:
    """The plan for a typical Deployment of ``replicas``, with no cluster: what ``make demo`` shows."""
    target = make_target(namespace, deployment, image, model_manifest_uri)
    plan = planner.render_plan(target, policy, planner.sample_deployment(namespace, deployment, replicas),
                               require_approval=require_approval)
    artifacts.markdown(f"canary-{deployment}-plan", plan_markdown(target, plan))
    return plan


def plan_markdown(target: Target, plan: dict[str, Any]) -> str:
    return (f"# Canary plan: `{target.namespace}/{target.deployment}`\n\n"
            + "\n".join(f"- {s['weight']}%: stable {s['stable_replicas']}, baseline {s['baseline_replicas']}, "
                        f"canary {s['canary_replicas']} (~{s['effective_canary_percent']}% to canary)"
                        for s in plan["schedule"]) + "\n")
