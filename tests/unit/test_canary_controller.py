"""The rollout controller against an in-memory cluster and a simulated clock: steps, the analysis
loop, approval, the lease (busy, lost compare-and-swap, resume, takeover) and the one rollback path."""

from __future__ import annotations

import copy

import pytest

from flows.canary import planner
from flows.canary.controller import NotReady, Rollout, RolloutBusy, StaleLease, rollback_if_held
from flows.canary.models import CanaryPolicy, IntervalResult, RolloutState, Target, Track, Verdict
from flows.common.clock import SimClock
from flows.common.errors import BadInput

NS, DEP, OLD, NEW = "inference", "llm", "nvcr.io/nvidia/tritonserver:25.01-py3", "registry.example/llm:2"
POLICY = CanaryPolicy(steps=[25, 50, 100], interval_s=30, intervals_per_step=2, failure_limit=2,
                      inconclusive_limit=2, readiness_timeout_s=60)
T0 = 1_800_000_000.0


class FakeCluster:
    """CanaryCluster in memory: Deployments roll out at once unless stalled; the lease is versioned."""

    def __init__(self, replicas: int = 4) -> None:
        self.namespace, self.name = NS, DEP
        self.deployments = {DEP: self._rolled_out(planner.sample_deployment(NS, DEP, replicas))}
        self.services: dict[str, dict] = {}
        self.routes: dict[str, dict] = {}
        self.state: RolloutState | None = None
        self.version = 1
        self.stalled: set[str] = set()
        self.ops: list[str] = []
        self.on_write_lease = None  # called before a lease write: simulate someone writing in between

    def _rolled_out(self, dep: dict) -> dict:
        dep = copy.deepcopy(dep)
        dep["metadata"]["generation"] = dep["metadata"].get("generation", 0) + 1
        n = dep["spec"].get("replicas", 1)
        if dep["metadata"]["name"] not in getattr(self, "stalled", set()):
            dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n,
                             "updatedReplicas": n, "availableReplicas": n, "readyReplicas": n}
        return dep

    def read_deployment(self, name):
        return copy.deepcopy(self.deployments.get(name))

    def read_lease(self):
        return self.state, str(self.version)

    def write_lease(self, state, version):
        if self.on_write_lease:
            self.on_write_lease()
        if version != str(self.version):
            raise StaleLease("changed")
        self.state, self.version = state, self.version + 1
        self.ops.append("lease" if state else "release")

    def apply_track(self, manifest):
        self.deployments[manifest["metadata"]["name"]] = self._rolled_out(manifest)
        self.ops.append(f"apply {manifest['metadata']['name']} x{manifest['spec']['replicas']}")

    def apply_track_service(self, manifest):
        self.services[manifest["metadata"]["name"]] = manifest

    def read_service(self, name):
        return self.services[name]

    def read_route(self, name):
        return self.routes[name]

    def set_route(self, route, service, plan):
        self.routes[route]["spec"]["rules"] = planner.route_rules(self.routes[route], service, plan)
        self.ops.append(f"route {plan.weight if plan else 'stable'}")

    def scale_target(self, replicas):
        dep = self.deployments[DEP]
        dep["spec"]["replicas"] = replicas
        self.deployments[DEP] = self._rolled_out(dep)
        self.ops.append(f"scale {replicas}")

    def set_target_template(self, template, replicas):
        dep = self.deployments[DEP]
        dep["spec"].update(template=copy.deepcopy(template), replicas=replicas)
        self.deployments[DEP] = self._rolled_out(dep)
        self.ops.append(f"template {template['spec']['containers'][0]['image']}")

    def delete_tracks(self, tracks, service):
        done = []
        for t in tracks:
            if self.deployments.pop(planner.track_name(DEP, t), None):
                done.append(f"deployment/{planner.track_name(DEP, t)}")
            if service and self.services.pop(planner.track_name(service, t), None):
                done.append(f"service/{planner.track_name(service, t)}")
        self.ops.append(f"delete {','.join(str(t) for t in tracks)}")
        return done

    def image(self):
        return self.deployments[DEP]["spec"]["template"]["spec"]["containers"][0]["image"]


def scripted(verdicts: dict[int, list[Verdict]], seen: list | None = None):
    """An analysis: per step weight, the verdicts of its intervals in order (then passes)."""
    def analyse(weight, n, history, end):
        if seen is not None:
            seen.append((weight, n, end))
        v = (verdicts.get(weight) or [])[n - 1] if n <= len(verdicts.get(weight) or []) else Verdict.passed
        return IntervalResult(step=weight, interval=n, verdict=v, metrics=[], reason=f"scripted {v}")
    return analyse


def rollout(cluster, clock, analyse=None, policy=POLICY, holder="run-1", **kw):
    return Rollout(Target(namespace=NS, deployment=DEP, image=NEW), policy, cluster, clock, holder=holder,
                   analyse=analyse or scripted({}), **kw)


def test_healthy_canary_is_promoted_on_the_simulated_clock():
    c, clock, seen = FakeCluster(), SimClock(T0), []
    result = rollout(c, clock, scripted({}, seen)).run()
    assert result.outcome == "promoted" and result.reason == "passed 2 step(s) of analysis"
    assert [(w, n) for w, n, _ in seen] == [(25, 1), (25, 2), (50, 1), (50, 2)]
    assert [end - T0 for *_, end in seen] == [30, 60, 90, 120]  # one interval of simulated time each
    assert result.seconds == 120 and len(result.rows) == 4
    assert c.image() == NEW and c.deployments[DEP]["spec"]["replicas"] == 4
    assert set(c.deployments) == {DEP} and c.state is None
    steps = [o for o in c.ops if o.startswith(("apply", "scale", "template", "delete"))]
    assert steps == ["apply llm-canary x1", "apply llm-baseline x1", "scale 2", "apply llm-canary x2",
                     "apply llm-baseline x2", "scale 1", "template " + NEW, "delete baseline,canary"]


def test_failed_step_rolls_back_through_the_one_path():
    c, clock = FakeCluster(), SimClock(T0)
    result = rollout(c, clock, scripted({50: [Verdict.failed, Verdict.failed]})).run()
    assert result.outcome == "rolled back" and result.reason == "step 50% fail: scripted fail"
    assert c.image() == OLD and c.deployments[DEP]["spec"]["replicas"] == 4 and set(c.deployments) == {DEP}
    assert c.state is None
    assert c.ops[-4:] == ["scale 4", "delete canary", "delete baseline", "release"]  # canary first, baseline last


def test_inconclusive_rolls_back_or_asks_a_human():
    c = FakeCluster()
    unsure = scripted({25: [Verdict.inconclusive, Verdict.inconclusive]})
    assert rollout(c, SimClock(T0), unsure).run().reason.startswith("step 25% inconclusive")
    asked = []
    c = FakeCluster()
    pause = POLICY.model_copy(update={"on_inconclusive": "pause"})
    out = rollout(c, SimClock(T0), unsure, policy=pause,
                  approve=lambda q, rows: (asked.append(q), (True, "approved"))[1]).run()
    assert out.outcome == "promoted" and asked == ["Step 25% is inconclusive; continue anyway?"]


def test_approval_holds_the_lease_and_a_rejection_rolls_back():
    c, clock = FakeCluster(), SimClock(T0)
    expiry = []

    def approve(question, rows):
        expiry.append(c.state.expires - clock.now())
        return False, "rejected (not today)"

    result = rollout(c, clock, approve=approve).run(require_approval=True)
    assert result.outcome == "rolled back" and result.reason == "promotion rejected (not today)"
    assert expiry and expiry[0] >= POLICY.approval_timeout_s  # the lease outlives the wait
    assert c.image() == OLD and c.state is None
    with pytest.raises(BadInput, match="approval needs a Prefect API"):
        rollout(FakeCluster(), SimClock(T0)).run(require_approval=True)


def test_another_holders_live_lease_is_respected():
    c = FakeCluster()
    c.state = RolloutState(holder="someone-else", expires=T0 + 600, image="x:1", stable_replicas=4)
    with pytest.raises(RolloutBusy, match="in flight") as err:
        rollout(c, SimClock(T0)).run()
    assert err.value.exit_code == 4 and c.state.holder == "someone-else" and set(c.deployments) == {DEP}


def test_a_lost_compare_and_swap_reads_again():
    c, clock = FakeCluster(), SimClock(T0)
    writes = []

    def someone_writes():  # the first lease write races with another writer of the target
        if not writes:
            c.version += 1
        writes.append(1)

    c.on_write_lease = someone_writes
    assert rollout(c, clock).run().outcome == "promoted"
    assert writes[:2] == [1, 1] and c.state is None


def test_resume_continues_and_a_different_rollout_is_cleaned_up():
    c = FakeCluster()
    c.scale_target(1)  # the dead run had scaled stable down
    c.state = RolloutState(holder="dead", expires=T0 - 1, image=NEW, stable_replicas=4, step=1)
    seen = []
    assert rollout(c, SimClock(T0), scripted({}, seen)).run().outcome == "promoted"
    assert {w for w, *_ in seen} == {50} and c.deployments[DEP]["spec"]["replicas"] == 4
    c = FakeCluster()
    stable = c.read_deployment(DEP)
    c.apply_track(planner.track_deployment(stable, stable["spec"]["template"], Track.canary, 1, POLICY, "dead"))
    c.state = RolloutState(holder="dead", expires=T0 - 1, image="other:9", stable_replicas=4, step=1)
    c.ops.clear()
    seen = []
    assert rollout(c, SimClock(T0), scripted({}, seen)).run().outcome == "promoted"
    assert {w for w, *_ in seen} == {25, 50}  # started over after the clean-up
    assert c.ops[:4] == ["lease", "scale 4", "delete canary", "delete baseline"]  # clean-up before step 1


def test_failed_promotion_restores_the_template_and_the_failure_hook_rolls_back():
    c, clock = FakeCluster(), SimClock(T0)
    r = rollout(c, clock)
    real = c.set_target_template

    def stall_promotion(template, replicas):  # the new template never becomes ready
        c.stalled.add(DEP)
        real(template, replicas)
        if template["spec"]["containers"][0]["image"] == OLD:
            c.stalled.discard(DEP)

    c.set_target_template = stall_promotion
    with pytest.raises(NotReady, match="not ready after 60s"):
        r.run()
    assert c.image() == OLD and c.state.holder == "run-1" and clock.now() - T0 >= 60
    assert rollback_if_held(c, "someone-else", clock, timeout_s=60) is None  # not ours: untouched
    done = rollback_if_held(c, "run-1", clock, timeout_s=60)
    assert "deployment/llm-canary" in done and set(c.deployments) == {DEP} and c.state is None


def test_gateway_mode_weights_the_route_and_resets_it():
    c = FakeCluster()
    c.services[DEP] = {"metadata": {"name": DEP, "namespace": NS}, "spec": {"ports": [{"port": 8000}]}}
    c.routes[DEP] = {"metadata": {"name": DEP}, "spec": {"rules": [{"backendRefs": [{"name": DEP, "port": 8000}]}]}}
    gw = POLICY.model_copy(update={"traffic_mode": "gateway-api"})
    result = rollout(c, SimClock(T0), scripted({25: [Verdict.failed] * 2}), policy=gw).run()
    assert result.outcome == "rolled back" and "route 25" in c.ops and c.ops.count("route stable") == 1
    assert c.routes[DEP]["spec"]["rules"][0]["backendRefs"] == [{"name": DEP, "port": 8000, "weight": 1}]
    assert c.services.keys() == {DEP} and c.deployments[DEP]["spec"]["replicas"] == 4
