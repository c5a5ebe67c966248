"""The shared Kubernetes adapter (flows/common/kube.py) over real HTTP: the emulator for the API's
semantics, and a scripted loopback server for what the emulator never answers (401/403, 429, 5xx).

The last test is the reason the adapter exists: a Deployment carrying a field the client's models do
not know keeps it, and keeps its generation, through a whole canary (lease, steps, promotion,
rollback), because no write goes through a typed model."""

from __future__ import annotations

import copy
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from flows.canary import planner
from flows.canary.actuator import Cluster
from flows.canary.controller import Rollout
from flows.canary.models import CanaryPolicy, IntervalResult, Target, Verdict
from flows.common.clock import WallClock
from flows.common.errors import BackendUnavailable, BadInput
from flows.common.kube import (
    DEPLOYMENTS,
    NODES,
    SERVICES,
    Conflict,
    Forbidden,
    Kube,
    NotFound,
    merge_diff,
    status_error,
)
from flows.standins.kube_emulator.resources import lookup

NS = "inference"


@pytest.fixture
def adapter(kube_clean):
    kube_clean.create_namespace(NS)
    with Kube(kube_clean.api_client(), backoff_s=0.01) as k:
        yield k


def test_reads_writes_and_the_error_mapping(adapter):
    kube = adapter
    dep = planner.sample_deployment(NS, "web", 1)
    created, fresh = kube.create_or_adopt(DEPLOYMENTS, dep)
    assert fresh and created["metadata"]["generation"] == 1
    again, fresh = kube.create_or_adopt(DEPLOYMENTS, dep)  # a re-run adopts what it made
    assert not fresh and again["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(Conflict) as dup:
        kube.create(DEPLOYMENTS, dep)
    assert dup.value.reason == "AlreadyExists"
    with pytest.raises(NotFound, match="^deployment inference/nope not found") as missing:
        kube.get(DEPLOYMENTS, NS, "nope")
    assert missing.value.exit_code == 2 and kube.find(DEPLOYMENTS, NS, "nope") is None
    bad = copy.deepcopy(dep)
    bad["metadata"]["name"] = "Bad_Name"
    with pytest.raises(BadInput, match="Kubernetes rejected create deployment inference/Bad_Name: .*RFC 1123"):
        kube.create(DEPLOYMENTS, bad)
    # a merge patch guarded by a stale resourceVersion is a compare-and-swap that lost
    current = kube.get(DEPLOYMENTS, NS, "web")
    kube.merge_patch(DEPLOYMENTS, NS, "web", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(Conflict):
        kube.merge_patch(DEPLOYMENTS, NS, "web", {"metadata": {"labels": {"b": "2"}}},
                         resource_version=current["metadata"]["resourceVersion"])
    # server-side apply as fieldManager inferops; replace of the dict the server returned
    applied = kube.apply(DEPLOYMENTS, {"metadata": {"name": "web", "namespace": NS, "labels": {"c": "3"}}})
    assert applied["metadata"]["labels"]["c"] == "3"
    assert "inferops" in {m["manager"] for m in applied["metadata"]["managedFields"]}
    applied["spec"]["replicas"] = 2
    assert kube.replace(DEPLOYMENTS, applied)["spec"]["replicas"] == 2
    with pytest.raises(Conflict):  # the same dict again: its resourceVersion is stale now
        kube.replace(DEPLOYMENTS, applied)
    assert [d["metadata"]["name"] for d in kube.list(DEPLOYMENTS, NS)] == ["web"]
    assert kube.list(DEPLOYMENTS, NS)[0]["kind"] == "Deployment" and kube.list(NODES) == []
    assert kube.delete(DEPLOYMENTS, NS, "web") is True and kube.delete(DEPLOYMENTS, NS, "web") is False


def test_modify_writes_only_what_changed():
    old = {"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1, "list": [1, 2]}}
    new = {"metadata": {"name": "x", "labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 1, "list": [1]}}
    assert merge_diff(old, new) == {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"list": [1]}}
    assert merge_diff(old, copy.deepcopy(old)) == {}


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of ``script``; records paths."""

    script: list[tuple[int, dict, dict]] = []
    seen: list[str] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        status, headers, body = self.script.pop(0) if self.script else (500, {}, {"message": "script empty"})
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_address[1]}"
    cfg.retries = False  # urllib3 would honour a 429's Retry-After itself; test the adapter's own retries
    Scripted.script, Scripted.seen = [], []
    slept: list[float] = []
    kube = Kube(client.ApiClient(cfg), attempts=3, backoff_s=0.5, sleep=slept.append)
    yield kube, Scripted, slept
    server.shutdown()


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
            "message": message}


def test_forbidden_names_verb_and_resource(scripted):
    kube, srv, _ = scripted
    srv.script = [(403, {}, status(403, "Forbidden", 'deployments.apps "llm" is forbidden: User "ci" cannot '
                                                    'patch resource "deployments" in API group "apps"'))]
    with pytest.raises(Forbidden, match="cannot patch deployments.apps in namespace inference \\(llm\\)"):
        kube.merge_patch(DEPLOYMENTS, NS, "llm", {"spec": {"replicas": 1}})
    srv.script = [(401, {}, status(401, "Unauthorized", "Unauthorized"))]
    with pytest.raises(Forbidden, match="credentials were rejected.*cannot list services"):
        kube.list(SERVICES, NS)
    assert len(srv.seen) == 2  # neither is retried


def test_throttling_and_server_errors_are_retried_with_backoff(scripted):
    kube, srv, slept = scripted
    srv.script = [(429, {"Retry-After": "2"}, status(429, "TooManyRequests", "slow down")),
                  (503, {}, status(503, "ServiceUnavailable", "etcd leader changed")),
                  (200, {}, {"metadata": {"name": "llm"}})]
    assert kube.get(DEPLOYMENTS, NS, "llm")["metadata"]["name"] == "llm"
    assert slept == [2.0, 1.0]  # Retry-After honoured, then exponential backoff
    srv.script = [(500, {}, status(500, "InternalError", "boom"))] * 3
    with pytest.raises(BackendUnavailable, match="failed to get deployment inference/llm: HTTP 500: boom"):
        kube.get(DEPLOYMENTS, NS, "llm")


def test_unreachable_api_is_backend_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = False
    slept: list[float] = []
    with pytest.raises(BackendUnavailable, match="Kubernetes API unreachable \\(list deployments.apps"):
        Kube(client.ApiClient(cfg), attempts=2, sleep=slept.append).list(DEPLOYMENTS, NS)
    assert slept == [0.5]


def test_status_error_is_the_one_mapping():
    cases = {400: BadInput, 422: BadInput, 401: Forbidden, 403: Forbidden, 404: NotFound, 409: Conflict,
             429: BackendUnavailable, 500: BackendUnavailable, 503: BackendUnavailable}
    for code, cls in cases.items():
        err = status_error(code, json.dumps(status(code, "X", "the message")), verb="get", kind=DEPLOYMENTS,
                           namespace=NS, name="llm")
        assert type(err) is cls and "\n" not in str(err), code
    assert "the message" in str(status_error(422, b'{"message": "the message"}', verb="create", kind=DEPLOYMENTS,
                                             namespace=NS))


FUTURE = {"rolloutHints": {"surgeProfile": "gentle"}}  # a field newer than the client's models


def test_unknown_fields_and_generation_survive_a_whole_canary(kube_clean):
    """Lease writes never bump generation; each spec write bumps it once; the unknown field stays."""
    kube_clean.create_namespace(NS)
    kube_clean.add_node("gpu-a", gpus=16)  # pods run only where GPUs are free
    dep = planner.sample_deployment(NS, "llm", 4)
    dep["spec"].update(FUTURE)
    dep["spec"]["template"]["spec"]["containers"][0]["futureProbe"] = {"grpc": {"port": 9000}}
    # (the typed client cannot even send it: its models refuse or drop unknown fields)
    kube_clean.serve_newer_fields("apps", "Deployment", "spec.rolloutHints",
                                  "spec.template.spec.containers[].futureProbe")  # the strict emulator drops others
    kube_clean.store.create(lookup("apps", "deployments"), dep, NS)  # as a newer API server would hold it

    kube = Kube(kube_clean.api_client())
    log: list[tuple[str, int, bool, bool]] = []

    class Observed(Cluster):
        def _seen(self, op: str) -> None:
            d = kube.get(DEPLOYMENTS, NS, "llm")
            c0 = d["spec"]["template"]["spec"]["containers"][0]
            log.append((op, d["metadata"]["generation"], d["spec"].get("rolloutHints") == FUTURE["rolloutHints"],
                        "futureProbe" in c0))

        def write_lease(self, state, version):
            super().write_lease(state, version)
            self._seen("lease")

        def scale_target(self, replicas):
            super().scale_target(replicas)
            self._seen(f"scale {replicas}")

        def set_target_template(self, template, replicas):
            super().set_target_template(template, replicas)
            self._seen("template")

    def analysis(verdict: Verdict):
        return lambda weight, n, history, end: IntervalResult(step=weight, interval=n, verdict=verdict,
                                                              metrics=[], reason=str(verdict))

    policy = CanaryPolicy(steps=[25, 50, 100], interval_s=1, intervals_per_step=1, failure_limit=1,
                          readiness_timeout_s=30)
    target = Target(namespace=NS, deployment="llm", image="registry.example/llm:2")
    cluster = Observed(kube, NS, "llm")
    promoted = Rollout(target, policy, cluster, WallClock(), holder="run-1", analyse=analysis(Verdict.passed)).run()
    assert promoted.outcome == "promoted"
    target2 = Target(namespace=NS, deployment="llm", image="registry.example/llm:3")
    rolled = Rollout(target2, policy, cluster, WallClock(), holder="run-2", analyse=analysis(Verdict.failed)).run()
    assert rolled.outcome == "rolled back"

    assert all(field and probe for _, _, field, probe in log), log  # never lost, by any write
    gen = 1
    for op, generation, *_ in log:
        expected = gen if op == "lease" else gen + 1  # metadata writes keep it; each spec change bumps it
        assert generation == expected, (op, log)
        gen = generation
    ops = [op for op, *_ in log if op != "lease"]
    assert ops == ["scale 2", "scale 1", "template", "scale 2", "scale 4"]
    final = kube.get(DEPLOYMENTS, NS, "llm")
    assert final["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/llm:2"
    assert final["metadata"]["generation"] == 6 and final["spec"]["rolloutHints"] == FUTURE["rolloutHints"]
