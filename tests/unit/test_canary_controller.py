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
        self.hpa: dict | None = None  # a HorizontalPodAutoscaler on the target
        self.network_policies: list[dict] = []
        self.pod_monitors: list[dict] = []
        self.on_interval = None  # called by the analysis after each interval (e.g. the HPA scales)

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
        dep["spec"]["template"] = copy.deepcopy(template)
        if replicas is not None:
            dep["spec"]["replicas"] = replicas
        self.deployments[DEP] = self._rolled_out(dep)
        self.ops.append(f"template {template['spec']['containers'][0]['image']}"
                        + ("" if replicas is None else f" x{replicas}"))

    def find_service(self, name):
        return copy.deepcopy(self.services.get(name))

    def read_autoscaler(self):
        return copy.deepcopy(self.hpa)

    def label_objects(self):
        return copy.deepcopy(self.network_policies), copy.deepcopy(self.pod_monitors)

    def hpa_scales(self, replicas):  # the HPA controller writes the count (not an op of the rollout)
        dep = self.deployments[DEP]
        dep["spec"]["replicas"] = replicas
        self.deployments[DEP] = self._rolled_out(dep)

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
                     "apply llm-baseline x2", "scale 1", "template " + NEW + " x4", "delete baseline,canary"]


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
    # clean-up before step 1 (stable is at its size already: no scale)
    assert c.ops[:4] == ["lease", "delete canary", "delete baseline", "lease"]


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
    with pytest.raises(NotReady, match="not ready without progress for 60s"):
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


# ---- issue 14, defects 2, 3 and 7 -------------------------------------------------------------------

HPA = {"metadata": {"name": "llm"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                                "name": DEP}, "minReplicas": 3, "maxReplicas": 50}}


def surge_at(c, weight, interval, replicas, seen=None):
    """An analysis that passes, and where the HPA scales stable to ``replicas`` after that interval."""
    inner = scripted({}, seen)

    def analyse(w, n, history, end):
        if (w, n) == (weight, interval):
            c.hpa_scales(replicas)
        return inner(w, n, history, end)
    return analyse


@pytest.mark.parametrize("mode", ["replicas", "gateway-api"])
def test_with_an_hpa_the_count_is_never_written_and_tracks_follow_it(mode):
    c, clock = FakeCluster(replicas=3), SimClock(T0)
    c.hpa = HPA
    if mode == "gateway-api":
        c.services[DEP] = {"metadata": {"name": DEP, "namespace": NS}, "spec": {"ports": [{"port": 8000}]}}
        c.routes[DEP] = {"metadata": {"name": DEP}, "spec": {"rules": [{"backendRefs": [{"name": DEP, "port": 8000}]}]}}
    policy = POLICY.model_copy(update={"traffic_mode": mode})
    result = rollout(c, clock, surge_at(c, 25, 1, 7), policy=policy).run()
    assert result.outcome == "promoted"
    ops = [o for o in c.ops if o.startswith(("apply", "scale", "template"))]
    assert not [o for o in ops if o.startswith("scale")]  # the HPA's count is never written
    assert ops[-1] == "template " + NEW  # promotion writes the template only
    assert c.deployments[DEP]["spec"]["replicas"] == 7  # the HPA's scale-up survived the rollout
    if mode == "replicas":  # 25 %: two of each next to 3 (2/7), then four next to 7 (4/15), 50 %: 7 each
        assert ops[:6] == ["apply llm-canary x2", "apply llm-baseline x2", "apply llm-canary x4",
                           "apply llm-baseline x4", "apply llm-canary x7", "apply llm-baseline x7"]
    else:  # ceil(n * w / 100): 1 next to 3, then 2 next to 7 at 25 %, 4 at 50 %
        assert ops[:6] == ["apply llm-canary x1", "apply llm-baseline x1", "apply llm-canary x2",
                           "apply llm-baseline x2", "apply llm-canary x4", "apply llm-baseline x4"]
    assert c.state is None and set(c.deployments) == {DEP}


def test_with_an_hpa_rollback_leaves_the_count_to_it():
    c, clock = FakeCluster(replicas=3), SimClock(T0)
    c.hpa = HPA
    analyse = surge_at(c, 25, 1, 9)
    fail = scripted({25: [Verdict.passed, Verdict.failed, Verdict.failed]})
    result = rollout(c, clock, lambda *a: (analyse(*a), fail(*a))[1]).run()
    assert result.outcome == "rolled back"
    assert not [o for o in c.ops if o.startswith(("scale", "template"))]
    assert c.deployments[DEP]["spec"]["replicas"] == 9 and set(c.deployments) == {DEP}


def test_without_an_hpa_someone_elses_count_is_left_and_logged(caplog):
    c, clock = FakeCluster(replicas=4), SimClock(T0)

    def analyse(w, n, history, end):
        if (w, n) == (25, 2):
            c.hpa_scales(6)  # an operator scales by hand during the rollout
        return IntervalResult(step=w, interval=n, verdict=Verdict.failed if w == 50 else Verdict.passed,
                              metrics=[], reason="scripted")
    with caplog.at_level("WARNING", logger="inferops"):
        result = rollout(c, clock, analyse).run()
    assert result.outcome == "rolled back"
    assert [o for o in c.ops if o.startswith("scale")] == ["scale 2"]  # step 25 %; none after the operator's
    assert c.deployments[DEP]["spec"]["replicas"] == 6
    assert "was scaled to 6 by someone else during the rollout (it had 4): leaving their count" in caplog.text


def test_rollback_waits_for_stable_up_to_the_policys_readiness_timeout():
    """Not a fixed 60 s: the crash hook and `canary abort` read the timeout from the lease."""
    c, clock = FakeCluster(), SimClock(T0)
    slow = POLICY.model_copy(update={"readiness_timeout_s": 900})
    r = rollout(c, clock, policy=slow)
    stable = c.read_deployment(DEP)
    r.begin(stable)
    c.scale_target(2)
    c.state = c.state.model_copy(update={"replicas_written": [4, 2]})
    c.stalled.add(DEP)  # stable takes long to come back
    start = clock.now()
    done = rollback_if_held(c, "run-1", clock)
    assert clock.now() - start >= 900 and any("stable not ready yet" in d for d in done)
    assert c.deployments[DEP]["spec"]["replicas"] == 4 and c.state is None


def test_nothing_is_created_when_names_or_labels_are_refused():
    c, clock = FakeCluster(), SimClock(T0)
    gw = POLICY.model_copy(update={"traffic_mode": "gateway-api", "service": "s" * 60})
    with pytest.raises(BadInput, match="69 characters"):
        rollout(c, clock, policy=gw).run()
    c.deployments[DEP]["spec"]["selector"] = {"matchLabels": {"app.kubernetes.io/name": DEP}}
    c.network_policies = [{"metadata": {"name": "llm"}, "spec": {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": DEP}}}}]
    with pytest.raises(BadInput, match="NetworkPolicy llm"):
        rollout(c, clock).run()
    assert c.ops == [] and c.state is None and set(c.deployments) == {DEP}


def test_a_large_promotion_waits_on_progress_not_a_total_deadline():
    """50 pods that each take 30 s to load roll one by one (maxSurge 1): 25 minutes, more than the 60 s
    readiness timeout, but never 60 s without progress. A stall still fails after 60 s."""
    from flows.canary.controller import wait_ready

    c, clock = FakeCluster(replicas=50), SimClock(T0)
    dep = c.deployments[DEP]
    dep["metadata"]["generation"] += 1
    start = clock.now()

    def rolling(name):
        done = min(50, int((clock.now() - start) // 30))
        st = {"observedGeneration": dep["metadata"]["generation"], "replicas": 51 if done < 50 else 50,
              "updatedReplicas": done, "availableReplicas": 50, "readyReplicas": 50}
        return {**copy.deepcopy(dep), "status": st}

    c.read_deployment = rolling
    wait_ready(c, clock, DEP, 60, poll_s=5, progress=True)
    assert clock.now() - start == pytest.approx(1500, abs=5)
    stuck = clock.now()
    c.read_deployment = lambda name: {**copy.deepcopy(dep), "status": {
        "observedGeneration": dep["metadata"]["generation"], "updatedReplicas": 7, "availableReplicas": 50}}
    with pytest.raises(NotReady, match="without progress for 60s"):
        wait_ready(c, clock, DEP, 60, poll_s=5, progress=True)
    assert clock.now() - stuck == pytest.approx(60, abs=5)
