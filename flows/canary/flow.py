"""The ``canary-rollout`` flow: a thin Prefect shell over the planner, judge and actuator.

Steps: lease the target, create canary + fresh baseline, wait for readiness, shift traffic, judge
every interval, and finally promote (after approval, if required) or roll back. Failure, crash and
cancellation roll back through state hooks; ``inferops canary abort`` does the same by hand.

No ``from __future__ import annotations`` here: Prefect resolves the flow's parameter types when a
worker loads it from its entrypoint, and string annotations would not resolve there.
"""


import time
import uuid
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from flows.canary import planner
from flows.canary.actuator import Cluster, NotReady, rollback
from flows.canary.analysis import StepSamples, analyse, thresholds
from flows.canary.judge import StepTracker
from flows.canary.models import (
    EVENT_PROMOTED,
    EVENT_ROLLED_BACK,
    CanaryPolicy,
    IntervalResult,
    RolloutState,
    Target,
    Track,
    Verdict,
    resource_id,
)
from flows.canary.promql import queries
from flows.common import artifacts
from flows.common.errors import BadInput, GateFailed
from flows.common.kube import from_settings
from flows.common.prom import PrometheusClient
from flows.common.runtime import (
    NO_CACHE,
    flow,
    flow_run_id,
    get_logger,
    is_offline,
    ops_task,
    pause_for_input,
)
from flows.common.settings import get_settings


class Approval(BaseModel):  # the UI form (runtime.pause_for_input makes it a RunInput)
    """The approve/reject form shown in the UI before a step that needs a human."""

    approve: bool = Field(False, description="Tick to go on; leave unticked to roll back")
    comment: str = Field("", max_length=500)


def make_target(namespace: str, deployment: str, image: str, model_manifest_uri: str) -> Target:
    try:
        return Target(namespace=namespace, deployment=deployment, image=image,
                      model_manifest_uri=model_manifest_uri)
    except ValidationError as exc:
        raise BadInput("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def prometheus_client() -> PrometheusClient:
    s = get_settings().prometheus
    if not s.url:
        raise BadInput("no Prometheus configured (set INFEROPS_PROMETHEUS__URL)")
    token = s.bearer_token.get_secret_value() if s.bearer_token else None
    return PrometheusClient(s.url, timeout_s=s.timeout_s, bearer_token=token)


def _row(r: IntervalResult) -> dict[str, Any]:
    row: dict[str, Any] = {"step_%": r.step, "interval": r.interval, "verdict": str(r.verdict)}
    for m in r.metrics:
        row[f"{m.metric}_canary"] = m.canary
        row[f"{m.metric}_baseline"] = m.baseline
        row[f"{m.metric}_class"] = str(m.classification)
        row[f"{m.metric}_p"] = m.p_value
    row["reason"] = r.reason
    return row


def summary_markdown(target: Target, outcome: str, reason: str, rows: list[dict[str, Any]],
                     seconds: float) -> str:
    head = (f"# Canary {outcome}: `{target.namespace}/{target.deployment}`\n\n"
            f"- new image: `{target.image or '(unchanged)'}`\n"
            f"- model manifest: `{target.model_manifest_uri or '(unchanged)'}`\n"
            f"- reason: {reason}\n- intervals analysed: {len(rows)}; {seconds:.0f} s\n\n")
    if not rows:
        return head
    cols = list(rows[-1])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[-20:]:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return head + "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v).replace("|", "/")


@ops_task(name="canary-analyse-interval", task_run_name="analyse {target.deployment} {weight}% #{interval}",
          cache_policy=NO_CACHE)
def analyse_interval(target: Target, policy: CanaryPolicy, history: StepSamples, weight: int,
                     interval: int) -> IntervalResult:
    """Sample and judge one interval; adds this interval's samples to ``history`` (the step's)."""
    with prometheus_client() as client:
        return analyse(client, queries(policy), target, policy, thresholds(policy), history,
                       weight=weight, interval=interval)


def _holder() -> str:
    return flow_run_id() or f"cli-{uuid.uuid4()}"


def _lease_ttl(policy: CanaryPolicy) -> float:
    return policy.readiness_timeout_s + 3 * policy.interval_s + 60


class Rollout:
    """The state of one run: the cluster, the lease and what has been judged so far."""

    def __init__(self, target: Target, policy: CanaryPolicy, cluster: Cluster, holder: str) -> None:
        self.target, self.policy, self.cluster, self.holder = target, policy, cluster, holder
        self.log = get_logger()
        self.rows: list[dict[str, Any]] = []
        self.started = time.time()
        self.state: RolloutState | None = None
        self.service = policy.service or target.deployment
        self.route = policy.httproute or target.deployment

    def renew(self, extra_s: float = 0.0, **update: Any) -> None:
        assert self.state is not None
        self.state = self.state.model_copy(update={"expires": time.time() + _lease_ttl(self.policy) + extra_s,
                                                   **update})
        self.cluster.save_state(self.state)

    def begin(self, stable: dict[str, Any]) -> int:
        """Take the lease; return the step index to start from (a resumed rollout continues)."""
        t = self.target
        fresh = RolloutState(holder=self.holder, expires=time.time() + _lease_ttl(self.policy), image=t.image,
                             model_manifest_uri=t.model_manifest_uri, stable_replicas=stable["spec"].get("replicas", 1),
                             traffic_mode=self.policy.traffic_mode, httproute=self.route, service=self.service)
        self.state, stale = self.cluster.acquire(fresh, time.time())
        if stale is None:
            return 0
        if (stale.image, stale.model_manifest_uri) == (t.image, t.model_manifest_uri) \
                and stale.traffic_mode == self.policy.traffic_mode and stale.phase == "progressing":
            self.log.info("resuming the rollout of %s at step %d (left by %s)", t.deployment, stale.step, stale.holder)
            self.renew(step=stale.step)
            return stale.step
        self.log.warning("cleaning up an abandoned rollout of %s (holder %s, phase %s)", t.deployment,
                         stale.holder, stale.phase)
        rollback(self.cluster, stale, clear=False, timeout_s=self.policy.readiness_timeout_s)
        return 0

    def run_step(self, index: int, plan: planner.StepPlan, stable: dict[str, Any], new: dict[str, Any]) -> Verdict:
        p, c = self.policy, self.cluster
        self.log.info("step %d/%d: canary weight %d%% (stable %d, baseline %d, canary %d replicas; ~%.1f%% to canary)",
                      index + 1, len(p.steps), plan.weight, plan.stable_replicas, plan.baseline_replicas,
                      plan.canary_replicas, plan.effective_canary_percent)
        c.apply_deployment(planner.track_deployment(stable, new, Track.canary, plan.canary_replicas, p, self.holder))
        c.apply_deployment(planner.track_deployment(stable, stable["spec"]["template"], Track.baseline,
                                                    plan.baseline_replicas, p, self.holder))
        for track in planner.TRACKS:
            c.wait_ready(planner.track_name(self.target.deployment, track), p.readiness_timeout_s)
        if p.traffic_mode == "gateway-api":
            svc = c.read_service(self.service)
            for track in planner.TRACKS:
                c.apply_service(planner.track_service(svc, self.target.deployment, track))
            c.set_route(self.route, self.service, plan)
        else:
            c.scale_stable(plan.stable_replicas)
        self.renew(step=index)
        return self.analyse_step(plan.weight)

    def analyse_step(self, weight: int) -> Verdict:
        p = self.policy
        tracker, history, n = StepTracker(p), StepSamples(), 0
        while True:
            time.sleep(p.interval_s)
            n += 1
            r = analyse_interval(self.target, p, history, weight, n)
            row = _row(r)
            self.rows.append(row)
            self.log.info("interval %d%% #%d: %s (%s) %s", weight, n, r.verdict, r.reason,
                          ", ".join(f"{m.metric}: canary={_fmt(m.canary)} baseline={_fmt(m.baseline)} "
                                    f"{m.classification}" for m in r.metrics))
            outcome = tracker.add(r)
            self.renew()
            if outcome is not None:
                artifacts.table(f"canary-{self.target.deployment}-intervals", self.rows,
                                description=f"Canary analysis of {self.target.namespace}/{self.target.deployment}")
                return outcome

    def ask(self, question: str) -> tuple[bool, str]:
        """Pause for a human (UI form); returns (approved, why)."""
        p = self.policy
        body = summary_markdown(self.target, "awaiting approval", question, self.rows, time.time() - self.started)
        artifacts.markdown(f"canary-{self.target.deployment}-approval", body, description=question)
        self.renew(extra_s=p.approval_timeout_s)
        answer = pause_for_input(Approval, description=body, timeout_s=p.approval_timeout_s, poll_interval_s=2)
        if answer is None:
            return False, f"no approval within {p.approval_timeout_s}s"
        self.renew()
        who = f" ({answer.comment})" if answer.comment else ""
        return bool(answer.approve), ("approved" if answer.approve else "rejected") + who

    def promote(self, stable: dict[str, Any], new: dict[str, Any]) -> None:
        assert self.state is not None
        c = self.cluster
        self.renew(phase="promoting")
        c.set_stable_template(new, self.state.stable_replicas)
        try:
            c.wait_ready(self.target.deployment, self.policy.readiness_timeout_s)
        except NotReady:
            c.set_stable_template(stable["spec"]["template"], self.state.stable_replicas)
            raise
        if self.state.traffic_mode == "gateway-api":
            c.set_route(self.route, self.service, None)
        c.delete_tracks(service=self.service if self.state.traffic_mode == "gateway-api" else None)
        c.clear_state(self.holder)

    def finish(self, outcome: str, reason: str) -> dict[str, Any]:
        t = self.target
        seconds = time.time() - self.started
        artifacts.table(f"canary-{t.deployment}-intervals", self.rows,
                        description=f"Canary analysis of {t.namespace}/{t.deployment}")
        artifacts.markdown(f"canary-{t.deployment}-summary", summary_markdown(t, outcome, reason, self.rows, seconds),
                           description=f"canary {outcome}: {reason}")
        event = EVENT_PROMOTED if outcome == "promoted" else EVENT_ROLLED_BACK
        artifacts.emit(event, resource_id(t.namespace, t.deployment), {"namespace": t.namespace, "deployment": t.deployment,
                                               "image": t.image, "model_manifest_uri": t.model_manifest_uri,
                                               "reason": reason, "intervals": len(self.rows)})
        self.log.info("canary %s: %s (%.1f s)", outcome, reason, seconds)
        return {"outcome": outcome, "reason": reason, "namespace": t.namespace, "deployment": t.deployment,
                "seconds": round(seconds, 1), "intervals": self.rows}

    def roll_back(self, reason: str) -> dict[str, Any]:
        rollback(self.cluster, self.state, timeout_s=self.policy.readiness_timeout_s)
        return self.finish("rolled back", reason)


def rollback_on_failure(flow: Any, flow_run: Any, state: Any) -> None:  # Prefect passes these by name
    """State hook (failure, crash, cancellation): roll back if this run holds the lease."""
    log = get_logger()
    params = flow_run.parameters or {}
    try:
        cluster = Cluster(from_settings(), params["namespace"], params["deployment"])
        held = cluster.read_state()
        if held is None or held.holder != str(flow_run.id):
            return  # nothing in flight, or another run's rollout: not ours to touch
        done = rollback(cluster, held, timeout_s=60)
    except Exception as exc:  # a hook must report, not raise
        log.error("rollback after %s failed: %s (run `inferops canary abort`)", state.name, exc)
        return
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
    """Roll a new image and/or model out to a Deployment as a judged canary; promote or roll back."""
    target = make_target(namespace, deployment, image, model_manifest_uri)
    queries(policy)  # custom PromQL is checked before anything changes
    if require_approval and is_offline() and not dry_run:
        raise BadInput("approval needs a Prefect API (set PREFECT_API_URL), or run without --approval")
    cluster = Cluster(from_settings(), target.namespace, target.deployment)
    stable = cluster.read_deployment()
    if dry_run:
        return dry_run_plan(target, policy, cluster, stable, require_approval)
    rollout = Rollout(target, policy, cluster, _holder())
    try:
        return _run(rollout, stable, require_approval)
    except BaseException:
        if is_offline():  # no state hooks without an API: roll back here
            rollback_offline(rollout)
        raise


def _run(rollout: Rollout, stable: dict[str, Any], require_approval: bool) -> dict[str, Any]:
    policy, target = rollout.policy, rollout.target
    first = rollout.begin(stable)
    stable = rollout.cluster.read_deployment()  # after any clean-up
    new = planner.new_template(stable, target, policy)
    assert rollout.state is not None
    for index in range(first, len(policy.steps)):
        plan = planner.step_plan(policy, policy.steps[index], rollout.state.stable_replicas)
        if plan.promote:
            if require_approval:
                ok, why = rollout.ask(f"Promote {target.deployment} to 100%?")
                if not ok:
                    rollout.roll_back(f"promotion {why}")
                    raise GateFailed(f"canary of {target.namespace}/{target.deployment} rolled back: promotion {why}")
            rollout.promote(stable, new)
            return rollout.finish("promoted", f"passed {index} step(s) of analysis")
        verdict = rollout.run_step(index, plan, stable, new)
        if verdict is Verdict.inconclusive and policy.on_inconclusive == "pause" and not is_offline():
            ok, why = rollout.ask(f"Step {plan.weight}% is inconclusive; continue anyway?")
            verdict = Verdict.passed if ok else Verdict.inconclusive
        if verdict is not Verdict.passed:
            last = rollout.rows[-1]["reason"] if rollout.rows else ""
            reason = f"step {plan.weight}% {verdict}: {last}"
            rollout.roll_back(reason)
            raise GateFailed(f"canary of {target.namespace}/{target.deployment} rolled back: {reason}")
    raise AssertionError("steps end with 100")


def rollback_offline(rollout: Rollout) -> None:
    try:
        held = rollout.cluster.read_state()
        if held is not None and held.holder == rollout.holder:
            rollback(rollout.cluster, held, timeout_s=60)
            rollout.log.warning("rolled back after an error")
    except Exception as exc:
        rollout.log.error("rollback after an error failed: %s (run `inferops canary abort`)", exc)


def dry_run_plan(target: Target, policy: CanaryPolicy, cluster: Cluster, stable: dict[str, Any],
                 require_approval: bool) -> dict[str, Any]:
    svc = route = None
    if policy.traffic_mode == "gateway-api":
        svc = cluster.read_service(policy.service or target.deployment)
        route = cluster.read_route(policy.httproute or target.deployment)
    plan = planner.render_plan(target, policy, stable, svc, route, require_approval=require_approval)
    artifacts.markdown(f"canary-{target.deployment}-plan", plan_markdown(target, plan))
    return {"outcome": "planned", **plan}


@flow(name="canary-plan", log_prints=False)
def canary_plan(namespace: str, deployment: str, image: str = "", model_manifest_uri: str = "",
                policy: CanaryPolicy = CanaryPolicy(), replicas: int = 4,  # noqa: B008
                require_approval: bool = False) -> dict[str, Any]:
    """The plan for a typical Deployment of ``replicas``, with no cluster: what ``make demo`` shows."""
    target = make_target(namespace, deployment, image, model_manifest_uri)
    queries(policy)
    plan = planner.render_plan(target, policy, planner.sample_deployment(namespace, deployment, replicas),
                               require_approval=require_approval)
    artifacts.markdown(f"canary-{deployment}-plan", plan_markdown(target, plan))
    return plan


def plan_markdown(target: Target, plan: dict[str, Any]) -> str:
    return (f"# Canary plan: `{target.namespace}/{target.deployment}`\n\n"
            + "\n".join(f"- {s['weight']}%: stable {s['stable_replicas']}, baseline {s['baseline_replicas']}, "
                        f"canary {s['canary_replicas']} (~{s['effective_canary_percent']}% to canary)"
                        for s in plan["schedule"]) + "\n")
