"""The night-window controller against an in-memory cluster and a simulated clock: submit, preemption
(delete, requeue from the checkpoint), an API blip, the stop at the window's end and the accounting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.common.clock import SimClock
from flows.common.errors import BackendUnavailable
from flows.idle_gpu.controller import JobSettings, NightWindow
from flows.idle_gpu.manifest import HOSTNAME, JOB_LABEL
from flows.idle_gpu.models import CapacitySnapshot, NodeCapacity, OfflineJob, PlanPolicy
from flows.idle_gpu.tracker import JobView, PodView, Tracker

WS = datetime(2026, 11, 28, 1, tzinfo=UTC)
POLICY = PlanPolicy(slot_seconds=300, grace_period_s=20, runtime_margin=1.0)


class FakeCluster:
    """NightCluster in memory: one node, pods start when submitted and finish after ``run_s``."""

    namespace = "offline-batch"

    def __init__(self, clock: SimClock, gpus: int = 8, run_s: dict[str, float] | None = None) -> None:
        self.clock, self.gpus, self.run_s = clock, gpus, run_s or {}
        self.jobs: dict[str, dict] = {}  # k8s name -> {job, node, state, pod: PodView, ends}
        self.submitted: list[str] = []
        self.deleted: list[str] = []
        self.suspended: list[str] = []
        self.blips = 0
        self.waiting = 0  # GPUs pending pods of other workloads wait for
        self.coming: dict[str, int] = {}  # GPUs autoscalers' next scale-up waves will want

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    def _tick(self) -> None:
        for j in self.jobs.values():
            p = j["pod"]
            if j["state"] == "active" and p.phase == "Running" and self._now() >= j["ends"]:
                j["state"], j["pod"] = "complete", PodView(p.uid, "Succeeded", p.started, j["ends"], False)

    def nodes(self):
        self._tick()
        used = sum(j["gpus"] for j in self.jobs.values() if j["pod"].phase == "Running")
        return [NodeCapacity(name="n1", allocatable=self.gpus, requested=used, idle=self.gpus - used)], []

    def waiting_gpus(self):
        return self.waiting

    def scale_up_gpus(self):
        return self.coming

    def views(self, window_tag=None):
        if self.blips:
            self.blips -= 1
            raise BackendUnavailable("Kubernetes API unreachable (list jobs): connection refused")
        self._tick()
        return [JobView(n, j["job"], j["state"], "", j["node"], (j["pod"],)) for n, j in self.jobs.items()]

    def submit(self, manifest):
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return False
        job = manifest["metadata"]["labels"][JOB_LABEL]
        gpus = int(manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"])
        self.jobs[name] = {"job": job, "gpus": gpus, "state": "active",
                           "node": manifest["spec"]["template"]["spec"]["nodeSelector"][HOSTNAME],
                           "pod": PodView(f"{name}-0", "Running", self._now(), None, False),
                           "ends": self._now() + timedelta(seconds=self.run_s.get(job, 3600))}
        self.submitted.append(name)
        return True

    def preempt(self, job: str) -> None:
        for j in self.jobs.values():
            p = j["pod"]
            if j["job"] == job and p.phase == "Running":
                j["pod"] = PodView(p.uid, "Failed", p.started, self._now(), True)

    def suspend(self, name):
        j = self.jobs.get(name)
        if j is None:
            return False
        p = j["pod"]
        j["state"], j["pod"] = "suspended", PodView(p.uid, "Failed", p.started, self._now(), False)
        self.suspended.append(name)
        return True

    def delete(self, name, grace_period_s):
        self.jobs.pop(name, None)
        self.deleted.append(name)


def job(name, hours, gpus=4, **kw):
    return OfflineJob(name=name, image="registry.local/batch:1", command=["run"], gpus=gpus,
                      estimated_hours=hours, **kw)


def night(cluster, clock, jobs, hours=3.0):
    tracker = Tracker(jobs)
    snap = CapacitySnapshot(taken_at=WS, nodes=cluster.nodes()[0])
    window = NightWindow(cluster, tracker, snap, window_start=WS, window_end=WS + timedelta(hours=hours),
                         policy=POLICY, clock=clock, poll_seconds=60, jobs=JobSettings("offline-batch"))
    return window, tracker


def test_preempted_jobs_are_deleted_and_checkpointable_ones_resume():
    events = {WS.timestamp() + 1800: lambda: (fake.preempt("ckpt"), fake.preempt("plain"))}

    def world(old, new):
        for t in [t for t in events if old < t <= new]:
            events.pop(t)()

    clock = SimClock(WS.timestamp(), on_advance=world)
    fake = FakeCluster(clock, run_s={"ckpt": 3600, "plain": 3600})
    window, tracker = night(fake, clock, [job("ckpt", 1.0, checkpointable=True), job("plain", 1.0)])
    idle_hours, first = window.run()
    assert window.stop() == 0  # everything ended before the window did
    tag = "20261128t0100"
    assert fake.submitted == [f"idle-ckpt-{tag}", f"idle-plain-{tag}", f"idle-ckpt-{tag}-r1"]
    assert sorted(fake.deleted) == [f"idle-ckpt-{tag}", f"idle-plain-{tag}"]
    report = tracker.report(WS, WS + timedelta(hours=3), idle_hours)
    by = {j["job"]: j for j in report["jobs"]}
    assert by["ckpt"]["outcome"] == "done" and by["ckpt"]["attempts"] == 2 and by["ckpt"]["preemptions"] == 1
    assert by["plain"]["outcome"] == "preempted"
    assert tracker.remaining_hours() == {"ckpt": pytest.approx(0.5)}  # resumed with what was left
    assert [p.job for p in first.placements] == ["ckpt", "plain"]
    # the loop ended once nothing was pending or running; idle capacity counts to the stop time
    assert clock.now() < (WS + timedelta(hours=2)).timestamp()
    assert idle_hours == pytest.approx(8 * (3 - 20 / 3600), rel=0.02)


def test_nothing_starts_while_pods_of_other_workloads_wait_for_gpus():
    """Inference scaling up: while its pods wait for GPUs, a tick starts nothing (they take whatever
    frees up); once they are placed, the queue goes on."""
    events = {WS.timestamp() + 150: lambda: setattr(fake, "waiting", 0)}

    def world(old, new):
        for t in [t for t in events if old < t <= new]:
            events.pop(t)()

    clock = SimClock(WS.timestamp(), on_advance=world)
    fake = FakeCluster(clock, run_s={"a": 600})
    fake.waiting = 2
    window, tracker = night(fake, clock, [job("a", 0.2)])
    window.run()
    assert tracker.deferred_ticks == 3  # ticks at 0, 60 and 120 s
    tag = "20261128t0100"
    assert fake.submitted == [f"idle-a-{tag}"]
    assert fake.jobs[f"idle-a-{tag}"]["pod"].started == WS + timedelta(seconds=180)
    assert tracker.records["a"].outcome.value == "done"
    assert tracker.report(WS, WS + timedelta(hours=3), 1.0)["ticks_deferred_to_waiting_pods"] == 3


def test_while_an_autoscaler_is_held_back_by_its_scale_up_rate_its_next_waves_gpus_stay_free():
    """Between two waves of a surge nothing of inference is pending, but its HPA will want 6 more GPUs:
    of the node's 8, a 4-GPU job waits (it would leave 4 free) and a 2-GPU one starts; once the
    HPA has scaled, the queue goes on."""
    events = {WS.timestamp() + 150: lambda: setattr(fake, "coming", {})}

    def world(old, new):
        for t in [t for t in events if old < t <= new]:
            events.pop(t)()

    clock = SimClock(WS.timestamp(), on_advance=world)
    fake = FakeCluster(clock, run_s={"a": 600, "b": 600})
    fake.coming = {"inference/llm-server": 6}
    window, tracker = night(fake, clock, [job("a", 0.2, gpus=4), job("b", 0.2, gpus=2)])
    window.run()
    assert tracker.reserved_ticks == 3 and tracker.deferred_ticks == 0  # ticks at 0, 60 and 120 s
    tag = "20261128t0100"
    assert fake.submitted == [f"idle-b-{tag}", f"idle-a-{tag}"]
    assert fake.jobs[f"idle-b-{tag}"]["pod"].started == WS
    assert fake.jobs[f"idle-a-{tag}"]["pod"].started == WS + timedelta(seconds=180)
    assert tracker.report(WS, WS + timedelta(hours=3), 1.0)["ticks_reserving_for_scale_up"] == 3
    # switched off (keep_free_for_scale_up=False): both start at once
    clock = SimClock(WS.timestamp())
    fake = FakeCluster(clock, run_s={"a": 600, "b": 600})
    fake.coming = {"inference/llm-server": 6}
    window = NightWindow(fake, Tracker([job("a", 0.2, gpus=4), job("b", 0.2, gpus=2)]),
                         CapacitySnapshot(taken_at=WS, nodes=fake.nodes()[0]), window_start=WS,
                         window_end=WS + timedelta(hours=3), clock=clock, poll_seconds=60,
                         policy=POLICY.model_copy(update={"keep_free_for_scale_up": False}))
    window.run()
    assert window.tracker.reserved_ticks == 0
    assert {fake.jobs[n]["pod"].started for n in fake.submitted} == {WS}


def test_an_api_blip_skips_a_tick_and_the_stop_suspends_what_still_runs():
    clock = SimClock(WS.timestamp())
    fake = FakeCluster(clock, run_s={"long": 7200})
    fake.blips = 1
    window, tracker = night(fake, clock, [job("long", 0.5, checkpointable=True)], hours=1.0)
    window.run()
    assert tracker.api_errors == 1 and clock.now() == pytest.approx(window.stop_at.timestamp())
    assert window.stop() == 1 and fake.suspended == ["idle-long-20261128t0100"]
    # issue 14, defect 6: a suspended Job never finishes (no TTL): deleted once stopped
    assert fake.deleted == ["idle-long-20261128t0100"] and not fake.jobs
    out = tracker.report(WS, WS + timedelta(hours=1), 1.0)["jobs"][0]
    assert out["outcome"] == "stopped" and out["gpu_hours"] == pytest.approx(4 * (3600 - 60 - 20) / 3600, rel=0.01)


def test_a_container_that_can_never_start_fails_its_job_and_releases_the_gpus_at_once():
    """A root image under runAsNonRoot (no runAsUser): CreateContainerConfigError. The Job is deleted
    at the next tick, not held (with its GPUs) until its deadline; the next job gets the node."""
    clock = SimClock(WS.timestamp())
    fake = FakeCluster(clock, run_s={"next": 600})
    real_submit = fake.submit

    def submit(manifest):
        created = real_submit(manifest)
        name = manifest["metadata"]["name"]
        if "root" in name:  # its pod waits forever, holding 8 GPUs
            p = fake.jobs[name]["pod"]
            fake.jobs[name]["pod"] = PodView(p.uid, "Pending", None, None, False, "CreateContainerConfigError",
                                             "container has runAsNonRoot and image will run as root")
            fake.jobs[name]["ends"] = WS + timedelta(days=1)
        return created

    def nodes():  # a pending pod bound to the node holds its GPUs, as the scheduler counts them
        n, notes = real_nodes()
        held = sum(j["gpus"] for j in fake.jobs.values() if j["pod"].waiting)
        return [x.model_copy(update={"requested": x.requested + held, "idle": x.idle - held}) for x in n], notes

    fake.submit, real_nodes, fake.nodes = submit, fake.nodes, nodes
    window, tracker = night(fake, clock, [job("root", 1.0, gpus=8, priority=1), job("next", 0.2, gpus=8)])
    window.run()
    by = {r["job"]: r for r in tracker.report(WS, WS + timedelta(hours=3), 1.0)["jobs"]}
    assert by["root"]["outcome"] == "failed" and by["root"]["reason"].startswith("CreateContainerConfigError: ")
    assert fake.deleted == ["idle-root-20261128t0100"] and by["next"]["outcome"] == "done"
    assert clock.now() < (WS + timedelta(minutes=30)).timestamp()  # released at the next tick, not the deadline


def test_checkpointable_jobs_get_the_lower_priority_class():
    """The scheduler takes victims from the lowest priority first: checkpointable jobs go first."""
    from flows.common.errors import BadInput
    from flows.idle_gpu.models import check_names

    s = JobSettings("offline-batch", None, "offline-batch-checkpointable")
    assert (s.priority_for(True), s.priority_for(False)) == ("offline-batch-checkpointable", "offline-batch")
    assert JobSettings("batch").priority_for(True) == "batch"  # empty: one class for all
    with pytest.raises(BadInput, match="checkpointable priority class 'Low!' is not a valid Kubernetes name"):
        check_names("offline-batch", "offline-batch", None, "Low!")


def test_the_summary_says_which_ticks_started_nothing_and_why():
    from flows.idle_gpu.flow import report_markdown

    clock = SimClock(WS.timestamp())
    fake = FakeCluster(clock, run_s={"a": 600})
    window, tracker = night(fake, clock, [job("a", 0.2)])
    report = tracker.report(WS, WS + timedelta(hours=3), 1.0)
    assert "started nothing" not in report_markdown(report)  # a quiet night says nothing of it
    tracker.api_errors, tracker.deferred_ticks, tracker.reserved_ticks = 2, 7, 4
    md = report_markdown({**tracker.report(WS, WS + timedelta(hours=3), 1.0), "notes": ["PriorityClass 'x' not checked"]})
    assert ("- ticks that started nothing: 2 (Kubernetes API unreachable), 7 (pods of other workloads waiting "
            "for GPUs: inference scaling up)") in md
    assert "- ticks that kept GPUs free for an autoscaler's next scale-up waves: 4" in md
    assert "- note: PriorityClass 'x' not checked" in md


def test_priority_classes_the_credentials_may_not_read_are_noted_not_fatal():
    """RBAC grants `get` on the two shipped classes by name; a custom one then answers 403: the night
    goes on and says it did not check (a missing class is a one-line error: test_idle_gpu_window)."""
    from flows.common.errors import BadInput
    from flows.common.kube import Forbidden, NotFound
    from flows.idle_gpu.cluster import Cluster

    class Api:
        def get(self, kind, namespace, name):
            if name == "custom":
                raise Forbidden("priorityclasses \"custom\" is forbidden: cannot get")
            if name == "gone":
                raise NotFound("priorityclasses \"gone\" not found")
            return {"metadata": {"name": name}}

    c = Cluster(Api(), "offline-batch")
    assert c.check_priority_classes(["offline-batch", "offline-batch"]) == []
    assert c.check_priority_classes(["offline-batch", "custom"]) == [
        "PriorityClass 'custom' not checked: the credentials may not get priorityclasses"]
    with pytest.raises(BadInput, match="PriorityClass 'gone' does not exist"):
        c.check_priority_classes(["custom", "gone"])  # one it may not read does not end the check


def test_autoscalers_the_credentials_may_not_list_are_noted_not_fatal():
    """RBAC from before this release lacks `list` on horizontalpodautoscalers: the night goes on
    without the scale-up signal, warns once and notes it; pods and nodes are still read."""
    from flows.common.kube import HORIZONTAL_POD_AUTOSCALERS, Forbidden
    from flows.idle_gpu.cluster import Cluster

    class Api:
        calls: list[str] = []

        def list(self, kind, namespace=None, **kw):
            self.calls.append(kind.plural)
            if kind == HORIZONTAL_POD_AUTOSCALERS:
                raise Forbidden('horizontalpodautoscalers.autoscaling is forbidden: cannot list')
            return []

        def list_at(self, kind, namespace=None, **kw):
            return self.list(kind, namespace, **kw), "1"

        def watch(self, kind, *a, **kw):  # nor watch anything: the caches give up, the night lists
            raise Forbidden(f"{kind.plural} is forbidden: cannot watch")

    api = Api()
    c = Cluster(api, "offline-batch")
    for _ in range(2):
        nodes, notes = c.nodes()
        assert nodes == [] and c.scale_up_gpus() == {} and c.waiting_gpus() == 0
        assert any("HorizontalPodAutoscalers not read" in n for n in notes)
    # asked once by the cache's first list, once more by the list it falls back to; not every tick
    assert api.calls.count("horizontalpodautoscalers") == 2
    # pods and nodes: once their watch is refused, the caches give up and every tick lists
    for cache in c._caches.values():
        if cache is not None:
            cache._thread.join(5)
    pods, nodes_ = api.calls.count("pods"), api.calls.count("nodes")
    c.nodes()
    assert (api.calls.count("pods"), api.calls.count("nodes")) == (pods + 1, nodes_ + 1)


class WakingClock(SimClock):
    """Simulated time whose ``wait`` returns early once the event is set: it moves a minute at a time,
    running ``world`` (the fake cluster's pods end; a watch would set the event)."""

    world = staticmethod(lambda: None)

    def wait(self, event, seconds):
        while seconds > 0 and not event.is_set():
            step = min(60.0, seconds)
            self.sleep(step)
            seconds -= step
            self.world()
        return event.is_set()


def test_a_pod_that_ends_wakes_the_night_before_the_next_poll():
    """A job ends 10 minutes in; with a 30-minute poll, the next job starts within a minute of the
    end (the pod watch's event), not at the next poll."""
    import threading

    clock = WakingClock(WS.timestamp())
    fake = FakeCluster(clock, gpus=4, run_s={"a": 600, "b": 600})
    ended = threading.Event()

    def world():
        before = {n for n, j in fake.jobs.items() if j["state"] == "complete"}
        fake._tick()
        if {n for n, j in fake.jobs.items() if j["state"] == "complete"} - before:
            ended.set()

    clock.world = world
    fake.changes = lambda: ended
    tracker = Tracker([job("a", 0.2), job("b", 0.2)])
    window = NightWindow(fake, tracker, CapacitySnapshot(taken_at=WS, nodes=fake.nodes()[0]), window_start=WS,
                         window_end=WS + timedelta(hours=3), policy=POLICY, clock=clock, poll_seconds=1800,
                         min_poll_seconds=5, jobs=JobSettings("offline-batch"))
    window.run()
    [a, b] = [fake.jobs[n] for n in fake.submitted]
    assert a["ends"] <= b["pod"].started <= a["ends"] + timedelta(seconds=60), (a["ends"], b["pod"].started)
    assert tracker.woken_ticks >= 1


def test_an_attempt_its_node_has_no_room_for_is_withdrawn_and_planned_again():
    """Inference took the planned node's GPUs between the plan and the pod: after the policy's wait
    the Job is deleted unstarted and the job goes back to the queue (no preemption, nothing lost);
    a pod nominated to preempt (it will run) is left alone."""
    t0 = WS + timedelta(minutes=5)
    stuck = PodView("p1", "Pending", None, None, False, message="0/8 nodes are available: 8 Insufficient nvidia.com/gpu",
                    unschedulable_since=t0)
    tracker = Tracker([job("a", 1.0), job("b", 1.0)])
    tracker.submitted("a", "idle-a", "gpu-3", t0)
    tracker.submitted("b", "idle-b", "gpu-4", t0)
    views = [JobView("idle-a", "a", "active", "", "gpu-3", (stuck,)),
             JobView("idle-b", "b", "active", "", "gpu-4", (PodView("p2", "Pending", None, None, False),))]
    assert tracker.observe(views, t0 + timedelta(seconds=29), replan_after_s=30) == []
    assert tracker.observe(views, t0 + timedelta(seconds=30), replan_after_s=30) == ["idle-a"]
    r = tracker.records["a"]
    assert r.waiting and r.attempt == 1 and r.preemptions == 0 and r.outcome is None
    assert r.to_dict()["replans"] == 1 and r.to_dict()["attempts"] == 1  # (its next Job is attempt 2)
    assert "not placed on gpu-3" in r.reason and "Insufficient nvidia.com/gpu" in r.reason
    assert [j.name for j in tracker.pending()] == ["a"]  # b's pod is only pending (being scheduled)
    assert tracker.observe(views, t0 + timedelta(seconds=40), replan_after_s=30) == ["idle-a"]  # until gone
    assert tracker.report(WS, WS + timedelta(hours=3), 1.0)["attempts_replanned_unschedulable"] == 1


def test_pod_view_reads_unschedulable_but_not_a_nominated_preemptor():
    from flows.idle_gpu.cluster import _pod

    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/8 nodes are available", "lastTransitionTime": "2026-11-28T01:05:00Z"}
    pod = {"metadata": {"uid": "u"}, "spec": {}, "status": {"phase": "Pending", "conditions": [cond]}}
    v = _pod(pod)
    assert v.unschedulable_since == datetime(2026, 11, 28, 1, 5, tzinfo=UTC) and v.message == "0/8 nodes are available"
    assert _pod({**pod, "status": {**pod["status"], "nominatedNodeName": "gpu-1"}}).unschedulable_since is None
