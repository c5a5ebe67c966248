"""The canary rollout as a controller: steps, the analysis loop, promotion, and the one rollback path.

No Prefect and no Kubernetes client here. A :class:`Rollout` drives a narrow :class:`CanaryCluster`
(the Kubernetes adapter in ``actuator.py``; an in-memory fake in the unit tests) with a
:class:`~flows.common.clock.Clock`, and gets each interval's verdict from an ``analyse`` callback
(the flow's Prometheus task) and human decisions from an optional ``approve`` callback (the flow's
pause-for-input). The objects it creates come from the planner; every wait takes the policy's
timeout and the clock.

The lease (who runs the rollout of a target, until when, and how far it got) is a
:class:`~flows.canary.models.RolloutState` kept on the target Deployment and written as a
compare-and-swap: :meth:`CanaryCluster.write_lease` fails with :class:`StaleLease` when the target
changed since :meth:`CanaryCluster.read_lease`, and :class:`Lease` then reads again and decides
again. Any path that ends a rollout without promoting it goes through :func:`rollback`.

The target's replica count: with a HorizontalPodAutoscaler on the target the rollout never writes
it; canary and baseline are sized from the *current* stable count, and follow it when the HPA
scales. Without one, replicas mode scales stable down to make room and the end of the rollout
restores what was there, unless someone else changed the count meanwhile (it is none of the counts
the rollout wrote, which the lease records before each write): then theirs is left, and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from flows.canary import planner
from flows.canary.analysis import StepSamples
from flows.canary.judge import StepTracker
from flows.canary.models import CanaryPolicy, IntervalResult, RolloutState, Target, Track, Verdict
from flows.common.clock import Clock
from flows.common.errors import BackendUnavailable, BadInput, InferopsError

log = logging.getLogger("inferops")


class RolloutBusy(InferopsError):
    """Another run holds the target's lease (exit 4)."""

    exit_code = 4


class NotReady(InferopsError):
    """A Deployment missed its progress deadline (exit 1)."""


class StaleLease(Exception):
    """The target changed between reading the lease and writing it: read again, decide again."""


class CanaryCluster(Protocol):
    """What a rollout needs from the cluster: one target Deployment and the objects next to it.

    ``namespace`` and ``name`` are the target's. Reads return objects as dicts in the API's JSON
    shape; ``read_deployment`` returns None when it does not exist.
    """

    namespace: str
    name: str

    def read_deployment(self, name: str) -> dict[str, Any] | None: ...

    def read_lease(self) -> tuple[RolloutState | None, str]:
        """The state on the target and a version token for :meth:`write_lease`."""

    def write_lease(self, state: RolloutState | None, version: str) -> None:
        """Write (None: remove) the state if the target is still at ``version``, else :class:`StaleLease`."""

    def apply_track(self, manifest: dict[str, Any]) -> None:
        """Create or update a canary/baseline Deployment (refusing one that is not ours)."""

    def apply_track_service(self, manifest: dict[str, Any]) -> None: ...

    def read_service(self, name: str) -> dict[str, Any]: ...

    def read_route(self, name: str) -> dict[str, Any]: ...

    def set_route(self, route: str, service: str, plan: planner.StepPlan | None) -> None:
        """Weight the HTTPRoute for ``plan``; None sends everything back to stable."""

    def scale_target(self, replicas: int) -> None: ...

    def set_target_template(self, template: dict[str, Any], replicas: int | None) -> None:
        """Write the target's Pod template (and its replica count, unless None)."""

    def read_autoscaler(self) -> dict[str, Any] | None:
        """The HorizontalPodAutoscaler whose scaleTargetRef is the target, or None."""

    def label_objects(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The namespace's NetworkPolicies and PodMonitors (none when the CRD is not installed)."""

    def find_service(self, name: str) -> dict[str, Any] | None: ...

    def delete_tracks(self, tracks: tuple[Track, ...], service: str | None) -> list[str]:
        """Delete those tracks' Deployments (and Services); gone already counts as done."""


Analyse = Callable[[int, int, StepSamples, float], IntervalResult]  # (weight, interval, history, end)
Approve = Callable[[str, list[dict[str, Any]]], tuple[bool, str]]  # (question, rows) -> (approved, why)


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


def wait_ready(cluster: CanaryCluster, clock: Clock, name: str, timeout_s: float,
               poll_s: float = 0.5, *, progress: bool = False) -> dict[str, Any]:
    """Wait until the Deployment has rolled out its current generation, up to ``timeout_s``.

    ``progress=True`` (a rolling update of many pods, e.g. the promotion of a large Deployment with
    ``maxSurge: 1``): ``timeout_s`` counts from the last progress (more pods updated or available), as
    a Deployment's own progress deadline does. Raises :class:`NotReady` on ``ProgressDeadlineExceeded``,
    when the timeout passes, or if it is gone.
    """
    deadline = clock.now() + timeout_s
    mark: tuple | None = None
    while True:
        dep = cluster.read_deployment(name)
        why = "it does not exist" if dep is None else readiness(dep)
        if why is None:
            assert dep is not None
            return dep
        if progress and dep is not None:
            st = dep.get("status") or {}
            now = (st.get("updatedReplicas") or 0, st.get("availableReplicas") or 0)
            if mark is not None and now > mark:
                deadline = clock.now() + timeout_s
            mark = now if mark is None else max(mark, now)
        if dep is None or why.startswith("ProgressDeadlineExceeded") or clock.now() >= deadline:
            what = "without progress for" if progress else "after"
            raise NotReady(f"deployment {cluster.namespace}/{name} not ready {what} {timeout_s:g}s: {why}")
        clock.sleep(poll_s)


_KEEP = object()


def current_replicas(cluster: CanaryCluster) -> int:
    dep = cluster.read_deployment(cluster.name)
    if dep is None:
        raise BadInput(f"deployment {cluster.namespace}/{cluster.name} not found")
    return int(dep["spec"].get("replicas", 1))


def count_to_restore(cluster: CanaryCluster, state: RolloutState,
                     logger: logging.Logger | logging.LoggerAdapter | None = None) -> tuple[int | None, str]:
    """The replica count to write back on the target at the end of a rollout (None: leave it), and why.

    An HPA owns the count: leave it. Unchanged: nothing to do. One of the counts this rollout wrote
    (or a state from before they were recorded): restore ``stable_replicas``. Anything else was set
    by someone else during the rollout: leave theirs, and log it.
    """
    lg = logger or log
    where = f"deployment/{cluster.name}"
    hpa = state.autoscaler or (cluster.read_autoscaler() or {}).get("metadata", {}).get("name", "")
    if hpa:
        return None, f"{where} replicas left to HorizontalPodAutoscaler {hpa}"
    current = current_replicas(cluster)
    if current == state.stable_replicas:
        return None, f"{where} replicas {current}"
    if not state.replicas_written or current in state.replicas_written:
        return state.stable_replicas, f"{where} replicas {state.stable_replicas}"
    lg.warning("deployment %s/%s was scaled to %d by someone else during the rollout (it had %d): leaving "
               "their count", cluster.namespace, cluster.name, current, state.stable_replicas)
    return None, f"{where} replicas {current} left as someone else set them (was {state.stable_replicas})"


class Lease:
    """Acquire, renew and release the lease on the target, retrying lost compare-and-swaps."""

    def __init__(self, cluster: CanaryCluster, clock: Clock, *, attempts: int = 12) -> None:
        self.cluster, self.clock, self.attempts = cluster, clock, attempts

    def _update(self, decide: Callable[[RolloutState | None], Any]) -> RolloutState | None:
        for i in range(self.attempts):
            current, version = self.cluster.read_lease()
            new = decide(current)
            if new is _KEEP:
                return current
            try:
                self.cluster.write_lease(new, version)
                return new
            except StaleLease:
                self.clock.sleep(min(1.0, 0.05 * 2 ** i))
        raise BackendUnavailable(f"deployment {self.cluster.namespace}/{self.cluster.name} kept changing; "
                                 f"could not update the rollout lease in {self.attempts} attempts")

    def acquire(self, fresh: RolloutState) -> tuple[RolloutState, RolloutState | None]:
        """Take the lease: (state now held, the stale state taken over or None).

        Raises :class:`RolloutBusy` when another holder's lease has not expired.
        """
        taken: list[RolloutState | None] = [None]

        def decide(old: RolloutState | None) -> RolloutState:
            taken[0] = old
            if old is None:
                return fresh
            now = self.clock.now()
            if old.holder != fresh.holder and old.expires > now:
                c = self.cluster
                raise RolloutBusy(
                    f"deployment {c.namespace}/{c.name} has a canary in flight (holder {old.holder}, lease "
                    f"for {old.expires - now:.0f}s more); wait for it or run `inferops canary abort`")
            # keep the original stable size: the stable Deployment may be scaled down right now
            return fresh.model_copy(update={"stable_replicas": old.stable_replicas, "replicas_written": sorted(
                {*old.replicas_written, *fresh.replicas_written})})

        held = self._update(decide)
        assert held is not None
        return held, taken[0]

    def save(self, state: RolloutState) -> None:
        """Renew/update the lease; :class:`RolloutBusy` if another holder took it over meanwhile."""

        def decide(old: RolloutState | None) -> RolloutState:
            if old is not None and old.holder != state.holder:
                raise RolloutBusy(f"lease on {self.cluster.namespace}/{self.cluster.name} was taken over "
                                  f"by another run ({old.holder})")
            return state

        self._update(decide)

    def release(self, holder: str | None = None) -> None:
        """Remove the lease (only ``holder``'s, if given)."""
        self._update(lambda old: _KEEP if old is None or (holder and old.holder != holder) else None)


def rollback(cluster: CanaryCluster, state: RolloutState | None, clock: Clock, *, timeout_s: float | None = None,
             clear: bool = True, logger: logging.Logger | logging.LoggerAdapter | None = None) -> list[str]:
    """THE rollback: all traffic back to stable, stable back to size, canary and baseline removed.

    Idempotent. Order matters: traffic first, then the canary goes at once; the baseline goes once
    stable is rolled out (or ``timeout_s`` passed: default the policy's readiness timeout, kept in
    the lease), so capacity does not dip. The stable count is restored only as
    :func:`count_to_restore` says (never under an HPA, never over someone else's change).
    """
    timeout_s = timeout_s if timeout_s is not None else (state.readiness_timeout_s if state else 600)
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
        count, why = count_to_restore(cluster, state, logger)
        if count is not None:
            cluster.scale_target(count)
        done.append(why)
    done += cluster.delete_tracks((Track.canary,), service)
    if state is not None:
        try:
            wait_ready(cluster, clock, cluster.name, timeout_s)
        except NotReady as exc:
            done.append(f"stable not ready yet ({exc})")
    done += cluster.delete_tracks((Track.baseline,), service)
    if clear:
        Lease(cluster, clock).release()
    return done


def rollback_if_held(cluster: CanaryCluster, holder: str, clock: Clock, *, timeout_s: float | None = None,
                     logger: logging.Logger | logging.LoggerAdapter | None = None) -> list[str] | None:
    """Roll back the rollout that ``holder`` runs; None if nothing is in flight or it is another's.
    Waits for stable up to ``timeout_s`` (default: the rollout policy's readiness timeout)."""
    state, _ = cluster.read_lease()
    if state is None or state.holder != holder:
        return None
    return rollback(cluster, state, clock, timeout_s=timeout_s, logger=logger)


def lease_ttl(policy: CanaryPolicy) -> float:
    return policy.readiness_timeout_s + 3 * policy.interval_s + 60


def row(r: IntervalResult) -> dict[str, Any]:
    """One interval as a table row (the flow's artifact and the CLI's ``intervals``)."""
    out: dict[str, Any] = {"step_%": r.step, "interval": r.interval, "verdict": str(r.verdict)}
    for m in r.metrics:
        out[f"{m.metric}_canary"] = m.canary
        out[f"{m.metric}_baseline"] = m.baseline
        out[f"{m.metric}_class"] = str(m.classification)
        out[f"{m.metric}_p"] = m.p_value
    out["reason"] = r.reason
    return out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v).replace("|", "/")


@dataclass
class RolloutResult:
    outcome: Literal["promoted", "rolled back"]
    reason: str
    rows: list[dict[str, Any]]
    seconds: float


class Rollout:
    """One rollout of ``target`` under ``policy``: lease, steps, analysis, promote or roll back."""

    def __init__(self, target: Target, policy: CanaryPolicy, cluster: CanaryCluster, clock: Clock, *,
                 holder: str, analyse: Analyse, approve: Approve | None = None,
                 on_step: Callable[[list[dict[str, Any]]], None] | None = None,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.target, self.policy, self.cluster, self.clock, self.holder = target, policy, cluster, clock, holder
        self.analyse, self.approve, self.on_step = analyse, approve, on_step
        self.log = logger or log
        self.lease = Lease(cluster, clock)
        self.rows: list[dict[str, Any]] = []
        self.started = clock.now()
        self.state: RolloutState | None = None
        self.service = policy.service or target.deployment
        self.route = policy.httproute or target.deployment
        self.labels = planner.LabelPlan()
        self.autoscaler = ""
        self.sizes: tuple[int, int] = (0, 0)  # (canary, baseline) replicas applied in the current step

    # -- the lease -------------------------------------------------------------------------------
    def renew(self, extra_s: float = 0.0, **update: Any) -> None:
        assert self.state is not None
        self.state = self.state.model_copy(update={
            "expires": self.clock.now() + lease_ttl(self.policy) + extra_s, **update})
        self.lease.save(self.state)

    def begin(self, stable: dict[str, Any]) -> int:
        """Take the lease; return the step index to start from (a resumed rollout continues)."""
        t = self.target
        replicas = int(stable["spec"].get("replicas", 1))
        fresh = RolloutState(holder=self.holder, expires=self.clock.now() + lease_ttl(self.policy), image=t.image,
                             model_manifest_uri=t.model_manifest_uri, stable_replicas=replicas,
                             replicas_written=[replicas], autoscaler=self.autoscaler,
                             readiness_timeout_s=self.policy.readiness_timeout_s,
                             traffic_mode=self.policy.traffic_mode, httproute=self.route, service=self.service)
        self.state, stale = self.lease.acquire(fresh)
        if stale is None:
            return 0
        if (stale.image, stale.model_manifest_uri) == (t.image, t.model_manifest_uri) \
                and stale.traffic_mode == self.policy.traffic_mode and stale.phase == "progressing":
            self.log.info("resuming the rollout of %s at step %d (left by %s)", t.deployment, stale.step, stale.holder)
            self.renew(step=stale.step)
            return stale.step
        self.log.warning("cleaning up an abandoned rollout of %s (holder %s, phase %s)", t.deployment,
                         stale.holder, stale.phase)
        rollback(self.cluster, stale, self.clock, clear=False, timeout_s=self.policy.readiness_timeout_s, logger=self.log)
        now = current_replicas(self.cluster)  # what the clean-up left: this rollout starts from it
        self.renew(stable_replicas=now, replicas_written=[now], step=0)
        return 0

    # -- the rollout -----------------------------------------------------------------------------
    def run(self, require_approval: bool = False) -> RolloutResult:
        """Run every step; promote, or roll back and say why. Errors propagate (the caller's
        failure handling calls :func:`rollback_if_held`)."""
        if require_approval and self.approve is None:
            raise BadInput("approval needs a Prefect API (set PREFECT_API_URL), or run without --approval")
        policy, target, c = self.policy, self.target, self.cluster
        stable = self._stable()
        self.preflight(stable)
        first = self.begin(stable)
        stable = self._stable()  # after any clean-up
        new = planner.new_template(stable, target, policy)
        assert self.state is not None
        for index in range(first, len(policy.steps)):
            if policy.steps[index] >= 100:
                if require_approval:
                    ok, why = self.ask(f"Promote {target.deployment} to 100%?")
                    if not ok:
                        return self.roll_back(f"promotion {why}")
                self.promote(stable, new)
                return self.result("promoted", f"passed {index} step(s) of analysis")
            weight = policy.steps[index]
            verdict = self.run_step(index, stable, new)
            if verdict is Verdict.inconclusive and policy.on_inconclusive == "pause" and self.approve is not None:
                ok, why = self.ask(f"Step {weight}% is inconclusive; continue anyway?")
                verdict = Verdict.passed if ok else Verdict.inconclusive
            if verdict is not Verdict.passed:
                last = self.rows[-1]["reason"] if self.rows else ""
                return self.roll_back(f"step {weight}% {verdict}: {last}")
        raise AssertionError(f"steps of {c.namespace}/{c.name} end with 100")

    def _stable(self) -> dict[str, Any]:
        dep = self.cluster.read_deployment(self.target.deployment)
        if dep is None:
            raise BadInput(f"deployment {self.target.namespace}/{self.target.deployment} not found")
        return dep

    def preflight(self, stable: dict[str, Any]) -> None:
        """Before anything is created: every name valid, the labels the namespace's NetworkPolicies and
        PodMonitors select on kept, the stable Service and route there, and whether an HPA owns the count."""
        p, c, t = self.policy, self.cluster, self.target
        planner.check_names(t, p)
        service = c.find_service(self.service)
        if p.traffic_mode == "gateway-api":
            if service is None:
                raise BadInput(f"service {t.namespace}/{self.service} not found (gateway-api mode weights it "
                               f"on HTTPRoute {self.route}; set --service)")
            c.read_route(self.route)
        policies, monitors = c.label_objects()
        self.labels = planner.label_plan(stable, p, network_policies=policies, pod_monitors=monitors, service=service)
        hpa = c.read_autoscaler()
        self.autoscaler = hpa["metadata"]["name"] if hpa else ""
        if self.labels.drop:
            self.log.info("canary and baseline pods of %s drop %s (no NetworkPolicy or PodMonitor needs them)",
                          t.deployment, ", ".join(self.labels.drop))
        if self.autoscaler:
            self.log.info("HorizontalPodAutoscaler %s owns the replica count of %s: canary and baseline follow "
                          "it, the rollout never writes it", self.autoscaler, t.deployment)

    def scales_stable(self) -> bool:
        """Replicas mode without an HPA scales stable down to make room (while the count is ours)."""
        assert self.state is not None
        return self.policy.traffic_mode == "replicas" and not self.autoscaler and \
            (not self.state.replicas_written or current_replicas(self.cluster) in self.state.replicas_written)

    def plan(self, weight: int) -> planner.StepPlan:
        assert self.state is not None
        if self.scales_stable():
            return planner.step_plan(self.policy, weight, self.state.stable_replicas)
        return planner.step_plan(self.policy, weight, current_replicas(self.cluster), scale_stable=False)

    def apply_tracks(self, plan: planner.StepPlan, stable: dict[str, Any], new: dict[str, Any]) -> None:
        p, c, drop = self.policy, self.cluster, self.labels.drop
        c.apply_track(planner.track_deployment(stable, new, Track.canary, plan.canary_replicas, p, self.holder, drop))
        c.apply_track(planner.track_deployment(stable, stable["spec"]["template"], Track.baseline,
                                               plan.baseline_replicas, p, self.holder, drop))
        self.sizes = (plan.canary_replicas, plan.baseline_replicas)

    def write_count(self, replicas: int) -> None:
        """Scale stable (replicas mode, no HPA), recording the count in the lease before writing it."""
        assert self.state is not None
        if replicas == current_replicas(self.cluster):
            return
        self.renew(replicas_written=sorted({*self.state.replicas_written, int(replicas)}))
        self.cluster.scale_target(replicas)

    def run_step(self, index: int, stable: dict[str, Any], new: dict[str, Any]) -> Verdict:
        p, c = self.policy, self.cluster
        weight = p.steps[index]
        scale = self.scales_stable()
        if not scale and p.traffic_mode == "replicas" and not self.autoscaler:
            self.log.warning("deployment %s/%s was scaled by someone else during the rollout: its count is left "
                             "as it is, canary and baseline are sized next to it", c.namespace, c.name)
        plan = self.plan(weight)
        self.log.info("step %d/%d: canary weight %d%% (stable %d, baseline %d, canary %d replicas; ~%.1f%% to canary)",
                      index + 1, len(p.steps), plan.weight, plan.stable_replicas, plan.baseline_replicas,
                      plan.canary_replicas, plan.effective_canary_percent)
        self.apply_tracks(plan, stable, new)
        for track in planner.TRACKS:
            wait_ready(c, self.clock, planner.track_name(self.target.deployment, track), p.readiness_timeout_s)
        if p.traffic_mode == "gateway-api":
            svc = c.read_service(self.service)
            for track in planner.TRACKS:
                c.apply_track_service(planner.track_service(svc, self.target.deployment, track))
            c.set_route(self.route, self.service, plan)
        elif scale:
            self.write_count(plan.stable_replicas)
        self.renew(step=index)
        return self.analyse_step(weight, stable, new)

    def follow_stable(self, weight: int, stable: dict[str, Any], new: dict[str, Any]) -> None:
        """With the stable count not ours (HPA, gateway-api, someone else's), canary and baseline
        follow the current stable count between intervals."""
        if self.scales_stable():
            return
        plan = self.plan(weight)
        if (plan.canary_replicas, plan.baseline_replicas) != self.sizes:
            self.log.info("stable %s now has %d replicas: canary %d, baseline %d", self.target.deployment,
                          plan.stable_replicas, plan.canary_replicas, plan.baseline_replicas)
            self.apply_tracks(plan, stable, new)

    def analyse_step(self, weight: int, stable: dict[str, Any] | None = None,
                     new: dict[str, Any] | None = None) -> Verdict:
        p = self.policy
        tracker, history, n = StepTracker(p), StepSamples(), 0
        while True:
            self.clock.sleep(p.interval_s)
            n += 1
            r = self.analyse(weight, n, history, self.clock.now())
            self.rows.append(row(r))
            self.log.info("interval %d%% #%d: %s (%s) %s", weight, n, r.verdict, r.reason,
                          ", ".join(f"{m.metric}: canary={fmt(m.canary)} baseline={fmt(m.baseline)} "
                                    f"{m.classification}" for m in r.metrics))
            outcome = tracker.add(r)
            self.renew()
            if outcome is not None:
                if self.on_step is not None:
                    self.on_step(self.rows)
                return outcome
            if stable is not None and new is not None:
                self.follow_stable(weight, stable, new)

    def ask(self, question: str) -> tuple[bool, str]:
        """A human decision through ``approve``; the lease is held for the approval timeout meanwhile."""
        assert self.approve is not None
        self.renew(extra_s=self.policy.approval_timeout_s)
        ok, why = self.approve(question, self.rows)
        self.renew()
        return ok, why

    def promote(self, stable: dict[str, Any], new: dict[str, Any]) -> None:
        assert self.state is not None
        c = self.cluster
        self.renew(phase="promoting")
        count, why = count_to_restore(c, self.state, self.log)
        self.log.info("promoting %s: %s", self.target.deployment, why)
        c.set_target_template(new, count)
        try:  # pods roll one by one (maxSurge): a large Deployment takes long, so the timeout is on progress
            wait_ready(c, self.clock, self.target.deployment, self.policy.readiness_timeout_s, progress=True)
        except NotReady:
            c.set_target_template(stable["spec"]["template"], count)
            raise
        gateway = self.state.traffic_mode == "gateway-api"
        if gateway:
            c.set_route(self.route, self.service, None)
        c.delete_tracks(planner.TRACKS, self.service if gateway else None)
        self.lease.release(self.holder)

    def roll_back(self, reason: str) -> RolloutResult:
        rollback(self.cluster, self.state, self.clock, timeout_s=self.policy.readiness_timeout_s, logger=self.log)
        return self.result("rolled back", reason)

    def result(self, outcome: Literal["promoted", "rolled back"], reason: str) -> RolloutResult:
        return RolloutResult(outcome, reason, self.rows, self.clock.now() - self.started)
