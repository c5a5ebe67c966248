"""idle-gpu against real services: the Kubernetes API emulator (Job controller, scheduler with
priority preemption) and a real Prometheus scraping DCGM-style exporters."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from flows.common.runtime import offline
from flows.common.settings import reload_settings
from flows.idle_gpu.capacity import demand_history, demand_query
from flows.idle_gpu.models import Discovery, PlanPolicy
from flows.standins.kube_emulator.controllers import JOBS

REPO = Path(__file__).resolve().parents[2]
NS = "offline-batch"
RUN = "emulator.inferops.dev/run-seconds"
EXIT = "emulator.inferops.dev/exit-code"


@pytest.fixture
def cluster(kube_clean, monkeypatch):
    """Two 8-GPU nodes, the PriorityClasses that deploy/ ships, and inference using 2 GPUs of gpu-b."""
    kube = kube_clean
    monkeypatch.setenv("INFEROPS_KUBE__KUBECONFIG", kube.kubeconfig)
    monkeypatch.delenv("INFEROPS_PROMETHEUS__URL", raising=False)
    reload_settings()
    api = kube.api_client()
    sched = client.SchedulingV1Api(api)
    for doc in yaml.safe_load_all((REPO / "deploy/k8s/base/priorityclasses.yaml").read_text()):
        kubernetes_validate.validate(doc, "1.33", strict=True)
        sched.create_priority_class(doc)
    for ns in (NS, "inference"):
        kube.create_namespace(ns)
    kube.add_node("gpu-a", gpus=8, product="NVIDIA-H100-80GB-HBM3")
    kube.add_node("gpu-b", gpus=8, product="NVIDIA-H100-80GB-HBM3")
    inference_pod(api, "llm-0", "gpu-b", 2)
    wait(lambda: pod_phase(api, "llm-0") == "Running", "inference pod running")
    yield kube, api
    reload_settings()


def inference_pod(api, name: str, node: str, gpus: int) -> None:
    client.CoreV1Api(api).create_namespaced_pod("inference", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "llm"}},
        "spec": {"priorityClassName": "inference-critical", "nodeSelector": {"kubernetes.io/hostname": node},
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                 "containers": [{"name": "server", "image": "registry.local/llm:1",
                                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}})


def pod_phase(api, name: str) -> str:
    return client.CoreV1Api(api).read_namespaced_pod(name, "inference").status.phase


def wait(pred, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def job(name: str, gpus: int, est_s: float, priority: int, run_s: float, **kw) -> dict:
    return {"name": name, "image": "registry.local/batch:1", "command": ["run", name], "gpus": gpus,
            "estimated_hours": est_s / 3600, "priority": priority, "team": "search", "cost_center": "cc-42",
            "annotations": {RUN: str(run_s), **kw.pop("annotations", {})}, **kw}


def running_pods(api, job_name: str) -> list:
    pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=f"inferops.io/job={job_name}").items
    return [p for p in pods if p.status.phase == "Running"]


def night_thread(result: dict, queue: Path, ws: datetime, we: datetime, grace_s: int = 2, poll_s: float = 0.25,
                 **kw) -> threading.Thread:
    """The nightly flow (inline, offline) for one window, in a thread; its report goes to ``result``."""

    def night() -> None:
        from flows.idle_gpu.flow import idle_gpu_nightly

        with offline():
            result["report"] = idle_gpu_nightly.fn(
                queue=str(queue), window_start=ws.isoformat(), window_end=we.isoformat(), timezone="UTC",
                policy=PlanPolicy(slot_seconds=1, grace_period_s=grace_s, runtime_margin=1.0),
                discovery=Discovery(forecast_nights=0), poll_seconds=poll_s, **kw)

    return threading.Thread(target=night)


@pytest.mark.slow
def test_a_night_in_the_emulator(cluster, tmp_path):
    """Preempted pods are deleted once their grace period is over, as on a real cluster: the flow
    watches the job pods, so it sees every preemption even between two polls (issue 14, defect 5)."""
    kube, api = cluster
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"jobs": [
        job("nockpt", 8, 20, 9, 60),  # only gpu-a fits it; inference will take gpu-a back
        job("ckpt", 4, 6, 8, 6, checkpointable=True),  # preempted once, resumes, completes
        job("long", 2, 5, 7, 999),  # under-estimated: still running at the window's end
        job("quick", 1, 2, 6, 1),  # waits for ckpt's node, then completes
        job("fails", 1, 2, 5, 1, annotations={EXIT: "3"}),
        job("huge", 8, 3600, 0, 1),  # cannot finish inside a 30-second window
        {"name": "Not_A_Name", "image": "x", "command": ["x"], "gpus": 1, "estimated_hours": 1},
    ]}))
    now = datetime.now(UTC)
    ws, we = now, now + timedelta(seconds=30)
    report_path = tmp_path / "report.json"
    result: dict = {}
    t = night_thread(result, queue, ws, we, report_path=str(report_path),
                     checkpointable_priority_class="offline-batch-checkpointable")  # opted in
    t.start()
    wait(lambda: running_pods(api, "nockpt") and running_pods(api, "ckpt"), "batch pods running")
    # inference wants gpu-a back: the scheduler preempts the batch pod (DisruptionTarget)
    inference_pod(api, "llm-1", "gpu-a", 8)
    wait(lambda: pod_phase(api, "llm-1") == "Running", "inference pod running after preemption")
    kube.jobs.preempt(NS, next(j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job(NS).items
                               if j.metadata.labels["inferops.io/job"] == "ckpt"))
    t.join(timeout=90)
    assert not t.is_alive()
    report = result["report"]
    outcomes = {j["job"]: j for j in report["jobs"]}
    assert {k: v["outcome"] for k, v in outcomes.items()} == {
        "nockpt": "preempted", "ckpt": "done", "long": "stopped", "quick": "done", "fails": "failed",
        "huge": "not_scheduled"}
    assert outcomes["ckpt"]["preemptions"] == 1 and outcomes["nockpt"]["preemptions"] == 1
    assert outcomes["ckpt"]["attempts"] == 2 and outcomes["ckpt"]["k8s_job"].endswith("-r1")  # re-planned
    assert "window end" in outcomes["huge"]["reason"]
    assert [r["name"] for r in report["rejected"]] == ["Not_A_Name"]
    assert report["outcomes"]["done"] == 2 and report["outcomes"]["stopped"] == 1
    assert 0 < report["gpu_hours_used"] < report["idle_gpu_hours"]
    assert json.loads(report_path.read_text()) == report

    batch = client.BatchV1Api(api)
    jobs = {j.metadata.labels["inferops.io/job"]: j for j in batch.list_namespaced_job(NS).items}
    assert "nockpt" not in jobs  # deleted: it could not resume, so it must not hold a GPU later
    # stopped gracefully at the window's end: suspended by the flow, then deleted (a suspended Job has
    # no TTL: issue 14, defect 6), or failed by its activeDeadlineSeconds backstop (both end at the same
    # moment; either wins the race)
    assert not [j for j in jobs.values() if j.spec.suspend]
    if "long" in jobs:
        long_failed = {c.type: c.reason for c in jobs["long"].status.conditions or [] if c.status == "True"}
        assert long_failed.get("Failed") == "DeadlineExceeded"
    assert not [p for p in client.CoreV1Api(api).list_namespaced_pod(NS).items if p.status.phase == "Running"]
    assert pod_phase(api, "llm-1") == "Running"  # inference was never blocked by batch
    for j in kube.store.list(JOBS, NS):
        meta = {k: j["metadata"][k] for k in ("name", "namespace", "labels", "annotations")}
        kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                                      "spec": j["spec"]}, "1.33", strict=True)
        tmpl = j["spec"]["template"]["spec"]
        # checkpointable jobs below the others: a surge preempts them first (they resume)
        checkpointable = j["metadata"]["labels"].get("inferops.io/checkpointable") == "true"
        assert tmpl["priorityClassName"] == ("offline-batch-checkpointable" if checkpointable else "offline-batch")
        assert tmpl["terminationGracePeriodSeconds"] == 2
        assert j["spec"]["activeDeadlineSeconds"] <= 28
        assert j["metadata"]["labels"]["inferops.io/cost-center"] == "cc-42"


def test_stop_command_suspends_running_jobs(cluster, run_cli, tmp_path):
    kube, api = cluster
    from flows.common.kube import Kube
    from flows.idle_gpu.cluster import Cluster
    from flows.idle_gpu.manifest import job_manifest
    from flows.idle_gpu.models import OfflineJob

    ws = datetime.now(UTC)
    j = OfflineJob(**job("embed", 2, 60, 0, 999))
    m = job_manifest(j, node="gpu-a", namespace=NS, window_start=ws, window_end=ws + timedelta(hours=1),
                     active_deadline_s=3600, priority_class="offline-batch", grace_period_s=5)
    c = Cluster(Kube(api), NS)
    assert c.submit(m) is True and c.submit(m) is False  # the second submit adopts it
    wait(lambda: running_pods(api, "embed"), "batch pod running")
    env = {"INFEROPS_KUBE__KUBECONFIG": kube.kubeconfig}
    r = run_cli("idle-gpu", "stop", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"namespace": NS, "stopped": [m["metadata"]["name"]]}
    wait(lambda: not running_pods(api, "embed"), "pods gone after suspend")
    assert json.loads(run_cli("idle-gpu", "stop", "--json", env=env).stdout)["stopped"] == []
    bad = run_cli("idle-gpu", "stop", "-n", "Bad_NS", env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "inferops: namespace 'Bad_NS' is not a valid Kubernetes name"


def test_dry_run_sees_dcgm_idle_gpus(cluster, prometheus, exporter, run_cli, tmp_path):
    """Kubernetes says gpu-a has 8 free and gpu-b 6; DCGM says 3 of gpu-a's GPUs are busy (outside
    Kubernetes) and has no metrics for gpu-b: idle = min of both, and the note says why."""
    from prometheus_client import Gauge

    kube, api = cluster
    e = exporter()
    names = ["gpu", "UUID", "Hostname", "modelName", "namespace"]
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", names, registry=e.registry)
    fb = Gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", names, registry=e.registry)
    for i in range(9):  # GPU 8 runs one of our batch pods (DCGM's pod mapping adds the namespace)
        labels = dict(gpu=str(i), UUID=f"GPU-a-{i}", Hostname="gpu-a", modelName="NVIDIA H100 80GB HBM3",
                      namespace=NS if i == 8 else "")
        util.labels(**labels).set(95 if i in (0, 1, 8) else 0)
        fb.labels(**labels).set(30000 if i in (0, 1, 2, 8) else 3)  # GPU 2: idle compute but memory held
    prometheus.wait_for('count(DCGM_FI_DEV_FB_USED{Hostname="gpu-a"}) == 9')
    # the demand series the forecast reads: busy GPUs outside the batch namespace (0 is data too)
    with prometheus.client() as c:
        now = datetime.now(UTC)
        at = now + timedelta(days=1)  # "one night back" is now: one point, after the exporter was complete
        points = demand_history(c, demand_query(NS, 10.0), at, at, nights=1, step_s=1)
    assert [v for _, v in points] == [2.0]
    queue = tmp_path / "q.json"
    queue.write_text(json.dumps([job("a", 4, 600, 1, 1), job("b", 4, 600, 0, 1)]))
    now = datetime.now(UTC)
    env = {"INFEROPS_KUBE__KUBECONFIG": kube.kubeconfig, "INFEROPS_PROMETHEUS__URL": prometheus.url}
    r = run_cli("idle-gpu", "run", "--queue", str(queue), "--dry-run", "--json", "--timezone", "UTC",
                "--window-start", now.isoformat(), "--window-end", (now + timedelta(hours=1)).isoformat(), env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["capacity"]["idle_gpus_now"] == 5  # gpu-a: 8 free in Kubernetes, 5 quiet; gpu-b: no DCGM data
    assert "node gpu-b: no DCGM metrics, not used" in out["notes"]
    assert any("no demand history" in n for n in out["notes"])
    placed = {p["job"]: p for p in out["plan"]["placements"]}
    assert placed["a"]["node"] == placed["b"]["node"] == "gpu-a"  # 5 idle: the second 4-GPU job waits
    assert placed["b"]["start"] == placed["a"]["end"]
    assert client.BatchV1Api(api).list_namespaced_job(NS).items == []  # dry run: nothing submitted


def test_a_priority_class_that_does_not_exist_is_named_before_anything_runs(cluster, run_cli, tmp_path):
    """A Job naming a missing PriorityClass is created, but admission refuses every pod of it: the night
    would fill nothing. The run refuses first, in one line, exit 2, with nothing submitted."""
    kube, api = cluster
    queue = tmp_path / "q.json"
    queue.write_text(json.dumps([job("a", 1, 600, 1, 1)]))
    now = datetime.now(UTC)
    env = {"INFEROPS_KUBE__KUBECONFIG": kube.kubeconfig}
    args = ("idle-gpu", "run", "--queue", str(queue), "--timezone", "UTC", "--window-start", now.isoformat(),
            "--window-end", (now + timedelta(hours=1)).isoformat())
    r = run_cli(*args, "--checkpointable-priority-class", "offline-spot", env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("inferops: PriorityClass 'offline-spot' does not exist: apply "
                                                 "deploy/k8s (base/priorityclasses.yaml) or name another one")
    assert "Traceback" not in r.stderr
    r = run_cli(*args, "--dry-run", "--priority-class", "offline-low", env=env)
    assert r.returncode == 2 and "PriorityClass 'offline-low' does not exist" in r.stderr
    assert client.BatchV1Api(api).list_namespaced_job(NS).items == []


def test_snapshot_then_plan_without_the_cluster(cluster, tmp_path):
    """`snapshot` reads the cluster once, and leaves no watch behind (its cluster-wide caches end at
    once, not at the watches' 60 s timeout); `plan` then works from the file alone."""
    from flows.common.runtime import run_flow
    from flows.idle_gpu.flow import idle_gpu_plan, take_snapshot

    def watches() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if "-watch-" in t.name and t.is_alive()}

    # a one-off window from now: a time-of-day window would shrink as the wall clock nears its end
    ws = datetime.now(UTC).replace(microsecond=0)
    window = {"window_start": ws.isoformat(), "window_end": (ws + timedelta(hours=6)).isoformat()}
    before = watches()
    started = time.monotonic()
    snap = take_snapshot(NS, window["window_start"], window["window_end"], "UTC", Discovery())
    assert watches() - before == set() and time.monotonic() - started < 30
    assert {(n.name, n.allocatable, n.requested, n.idle, n.product) for n in snap.nodes} == {
        ("gpu-a", 8, 0, 8, "NVIDIA-H100-80GB-HBM3"), ("gpu-b", 8, 2, 6, "NVIDIA-H100-80GB-HBM3")}
    path = tmp_path / "capacity.json"
    path.write_text(snap.model_dump_json())
    queue = tmp_path / "q.yaml"
    queue.write_text(yaml.safe_dump([job("emb", 6, 3600, 0, 1), job("ev", 8, 1800, 1, 1)]))
    with offline():
        report = run_flow(idle_gpu_plan, queue=str(queue), capacity=str(path), timezone="UTC", **window)
    placed = {p["job"]: p["node"] for p in report["plan"]["placements"]}
    assert placed == {"ev": "gpu-a", "emb": "gpu-b"}


def test_preemptions_between_polls_are_seen_every_time_and_a_root_image_is_released_at_once(cluster, tmp_path):
    """Polls 4 s apart, preempted pods gone in well under a second (grace 0): the watch on the job pods
    still sees each preemption, so the checkpointable job is requeued both times (issue 14, defect 5).
    A root image under runAsNonRoot never starts (CreateContainerConfigError): its Job is deleted at the
    next tick, releasing its GPUs, instead of holding them until the deadline."""
    kube, api = cluster
    kube.pods.image_users["registry.local/root-batch:1"] = 0
    root = job("rootimg", 4, 20, 9, 5)
    root["image"] = "registry.local/root-batch:1"
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"jobs": [job("ckpt", 2, 20, 8, 999, checkpointable=True), root]}))
    now = datetime.now(UTC)
    result: dict = {}
    t = night_thread(result, queue, now, now + timedelta(seconds=24), grace_s=0, poll_s=4)
    t.start()
    batch = client.BatchV1Api(api)
    tag = f"idle-ckpt-{now.strftime('%Y%m%dt%H%M')}"
    for name in (tag, f"{tag}-r1"):
        wait(lambda name=name: [p for p in running_pods(api, "ckpt") if p.metadata.labels["job-name"] == name],
             f"{name} running", timeout=15)
        kube.jobs.preempt(NS, name)  # the scheduler's preemption: DisruptionTarget, deleted at once (grace 0)
    t.join(timeout=60)
    assert not t.is_alive()
    by = {j["job"]: j for j in result["report"]["jobs"]}
    assert by["ckpt"]["preemptions"] == 2 and by["ckpt"]["attempts"] == 3
    assert by["ckpt"]["k8s_job"].endswith("-r2") and by["ckpt"]["outcome"] == "stopped"
    assert by["rootimg"]["outcome"] == "failed" and by["rootimg"]["reason"].startswith("CreateContainerConfigError")
    assert not [j for j in batch.list_namespaced_job(NS).items if j.metadata.labels["inferops.io/job"] == "rootimg"]
    assert not [j for j in batch.list_namespaced_job(NS).items if j.spec.suspend]  # deleted at the window's end


@pytest.mark.slow
def test_a_run_started_before_its_window_waits_for_it(cluster, tmp_path):
    """The schedule starts the flow five minutes early: it connects, then submits nothing before the
    window opens, and its first Jobs are created as it opens."""
    kube, api = cluster
    queue = tmp_path / "queue.yaml"
    queue.write_text(yaml.safe_dump({"jobs": [job("early", 1, 2, 5, 1)]}))
    ws = datetime.now(UTC) + timedelta(seconds=3)
    we = ws + timedelta(seconds=10)
    result: dict = {}
    t = night_thread(result, queue, ws, we, max_wait_minutes=1)
    t.start()
    batch = client.BatchV1Api(api)
    while datetime.now(UTC) < ws - timedelta(seconds=0.3):
        assert not batch.list_namespaced_job(NS).items, "a Job was created before the window opened"
        time.sleep(0.1)
    t.join(timeout=60)
    assert not t.is_alive()
    created = [j.metadata.creation_timestamp for j in batch.list_namespaced_job(NS).items]
    assert len(created) == 1 and created[0] >= ws.replace(microsecond=0)  # the API keeps whole seconds
    assert [j["outcome"] for j in result["report"]["jobs"]] == ["done"]
