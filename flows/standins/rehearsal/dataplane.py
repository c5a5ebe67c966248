"""The serving data plane of the rehearsal cluster: what the Gateway, kube-proxy, NetworkPolicies, the
serving processes and prometheus-adapter do, for the pods the Kubernetes emulator runs.

Every ``sync`` (a few times a second) reads the emulator's objects and:

* **serves each pod's metrics on its own address**: every Running pod of the namespace whose
  container declares a ``metrics`` port gets a Prometheus endpoint on ``podIP:port`` (the emulator
  hands out loopback pod IPs, see ``pods.pod_cidr``), with Triton's counters
  (:class:`~flows.standins.traffic.TrackTraffic`); Prometheus finds it through :mod:`.operator`. A pod
  the NetworkPolicies do not open to the ``monitoring`` namespace on that port gets no endpoint
  (the scrape would be dropped), nor does one whose image is registered as ``silent``;
* **routes the offered load** (``load_rps``) as a Gateway would: by the HTTPRoute's backend weights
  to Services, then evenly over each Service's endpoints, i.e. the Ready, not terminating pods its
  selector matches *and* the NetworkPolicies open to the Gateway's namespace on the target port.
  A backend without endpoints loses its share (``unserved_rps``); that is what a Gateway answers 503
  for. Each pod's exporter counts its requests, with the error ratio and latency of its image's
  :class:`Behaviour`;
* **serves the HPA's Pods metrics**, as prometheus-adapter would from those series: per target
  Deployment, the requests per second per pod (``inference_requests_per_second``) and the GPU
  utilisation they cause (``dcgm_gpu_utilization``), averaged over the target's pods (pods not
  serving yet count as 0, as the HPA assumes for missing pods when scaling up).

Counters are generated at ``rps_sample`` of the real rate (5000 rps a pod would cost the CPU a real
pod has): ratios, error rates and latencies are what the canary analysis judges, and they are kept.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from flows.common.kube import selector_matches
from flows.standins.kube_emulator.resources import lookup
from flows.standins.rehearsal.operator import pod_targets
from flows.standins.traffic import TrackTraffic

log = logging.getLogger("inferops.standins.rehearsal")

PODS, SERVICES, NAMESPACES = lookup("", "pods"), lookup("", "services"), lookup("", "namespaces")
DEPLOYMENTS, HPAS = lookup("apps", "deployments"), lookup("autoscaling", "horizontalpodautoscalers")
NETWORK_POLICIES = lookup("networking.k8s.io", "networkpolicies")
ROUTE_GROUP, ROUTES = "gateway.networking.k8s.io", "httproutes"


@dataclass(frozen=True)
class Behaviour:
    """How an image serves: its error ratio and mean latency; ``silent`` serves no metrics at all."""

    error_rate: float = 0.001
    latency_s: float = 0.1
    silent: bool = False


HEALTHY = Behaviour()


class PodEndpoint:
    """One pod's metrics port: a registry served on ``ip:port`` (what TrackTraffic expects of an exporter)."""

    def __init__(self, ip: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.ip, self.port = ip, port
        self._httpd, self._thread = start_http_server(port, addr=ip, registry=self.registry)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _ports(pod: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for c in pod["spec"].get("containers") or []
            for p in c.get("ports") or [] if p.get("name")}


def ingress_allowed(pod: dict[str, Any], policies: list[dict[str, Any]], source_namespace: dict[str, Any],
                    port: int, port_name: str = "") -> bool:
    """NetworkPolicy ingress semantics, for a source that is any pod of ``source_namespace``.

    No policy selecting the pod for Ingress: allowed. Otherwise some rule of a selecting policy must
    allow the port (number or named port) from that namespace (``namespaceSelector``; a peer with a
    non-empty ``podSelector`` matches only what we cannot see: no).
    """
    labels = pod["metadata"].get("labels") or {}
    src = source_namespace["metadata"]
    selecting = []
    for np in policies:
        spec = np.get("spec") or {}
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" in types and selector_matches(spec.get("podSelector") or {}, labels):
            selecting.append(spec)
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports") or []
            if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port, port_name)
                                 for p in ports):
                continue
            peers = rule.get("from") or []
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer or (peer.get("podSelector") or {}):
                    continue
                if "namespaceSelector" in peer:
                    if selector_matches(peer["namespaceSelector"], src.get("labels") or {}):
                        return True
                elif src["name"] == pod["metadata"]["namespace"]:
                    return True
    return False


class DataPlane:
    """Gateway, endpoints, serving pods and the HPA's metrics for one namespace (see the module doc)."""

    def __init__(self, kube: Any, sd_file: Path, namespace: str = "inference", *, route: str = "llm-server",
                 service: str = "llm-server", gateway_namespace: str = "gateway-system",
                 monitoring_namespace: str = "monitoring", metrics_port: str = "metrics", rps_sample: float = 0.01,
                 pod_capacity_rps: float = 5000 / 0.7, interval_s: float = 0.25) -> None:
        self.kube, self.store, self.sd_file, self.namespace = kube, kube.store, Path(sd_file), namespace
        self.route, self.service = route, service
        self.gateway_namespace, self.monitoring_namespace = gateway_namespace, monitoring_namespace
        self.metrics_port, self.rps_sample, self.pod_capacity_rps = metrics_port, rps_sample, pod_capacity_rps
        self.interval_s = interval_s
        self.load_rps = 0.0
        # set: the offered load follows the traffic split so that the stable track serves this much
        # (how a test holds the HPA's demand steady while a canary takes a share)
        self.stable_rps: float | None = None
        self.behaviours: dict[str, Behaviour] = {}
        self.pod_rps: dict[str, float] = {}  # pod name -> requests per second it serves now
        self.track_share: dict[str, float] = {}  # inferops.io/track -> share of the load its pods serve
        self.unserved_rps = 0.0
        self.errors: list[str] = []
        self._traffic: dict[str, TrackTraffic] = {}  # pod uid -> its serving process
        self._targets = ""
        self._seed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rehearsal-dataplane", daemon=True)

    # -- controls --------------------------------------------------------------------------------
    def behave(self, image: str, **behaviour: Any) -> None:
        """Pods running ``image`` serve like this (default: healthy)."""
        self.behaviours[image] = Behaviour(**behaviour)

    def start(self) -> DataPlane:
        self.sync()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for t in self._traffic.values():
            t.stop()
        self._traffic.clear()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # kept for the caller to assert on; the loop goes on
                if len(self.errors) < 50:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("data plane: %s", exc)

    # -- one pass --------------------------------------------------------------------------------
    def sync(self) -> None:
        with self.store.lock:
            pods = list(self.store.peek(PODS, self.namespace))
            services = {s["metadata"]["name"]: s for s in self.store.peek(SERVICES, self.namespace)}
            policies = list(self.store.peek(NETWORK_POLICIES, self.namespace))
            namespaces = {n["metadata"]["name"]: n for n in self.store.peek(NAMESPACES)}
            deployments = {d["metadata"]["name"]: d for d in self.store.peek(DEPLOYMENTS, self.namespace)}
            hpas = list(self.store.peek(HPAS, self.namespace))
            res = self.store.registry.get(ROUTE_GROUP, ROUTES)
            routes = {r["metadata"]["name"]: r for r in self.store.peek(res, self.namespace)} if res else {}
        self._write_targets(pods)
        rps = self._route(pods, services, policies, namespaces, routes)
        self._serve(pods, rps, policies, namespaces)
        self._adapter(pods, rps, deployments, hpas)

    def _write_targets(self, pods: list[dict[str, Any]]) -> None:
        groups = [g for p in sorted(pods, key=lambda p: p["metadata"]["name"]) for g in pod_targets(p)]
        text = json.dumps(groups, sort_keys=True)
        if text != self._targets:
            tmp = self.sd_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.rename(self.sd_file)  # atomic: Prometheus never reads half a file
            self._targets = text

    def _endpoints(self, svc: dict[str, Any] | None, port: dict[str, Any] | None, pods: list[dict[str, Any]],
                   policies: list[dict[str, Any]], gateway: dict[str, Any] | None) -> list[dict[str, Any]]:
        sel = ((svc or {}).get("spec") or {}).get("selector")
        if not sel:
            return []
        out = []
        for p in pods:
            if p["metadata"].get("deletionTimestamp") or not _ready(p) or \
                    not selector_matches({"matchLabels": sel}, p["metadata"].get("labels") or {}):
                continue
            target = (port or {}).get("targetPort", (port or {}).get("port"))
            named = _ports(p)
            number = named.get(target) if isinstance(target, str) else target
            if number is None:
                continue
            if gateway is not None and not ingress_allowed(p, policies, gateway, int(number),
                                                           target if isinstance(target, str) else ""):
                continue
            out.append(p)
        return out

    def _route(self, pods, services, policies, namespaces, routes) -> dict[str, float]:
        """Requests per second per pod uid, and what no endpoint could take."""
        gateway = namespaces.get(self.gateway_namespace)
        route = routes.get(self.route)
        backends: list[tuple[str, Any, int]] = []
        if route is not None:
            rule = (route["spec"].get("rules") or [{}])[0]
            backends = [(b["name"], b.get("port"), int(b.get("weight", 1))) for b in rule.get("backendRefs") or []
                        if b.get("kind", "Service") == "Service"]
        else:
            backends = [(self.service, None, 1)]
        total = sum(w for _, _, w in backends)
        frac: dict[str, float] = {}  # pod uid -> share of the load
        lost = 0.0
        for name, port_no, weight in backends:
            if weight <= 0 or total <= 0:
                continue
            share = weight / total
            svc = services.get(name)
            port = next((p for p in ((svc or {}).get("spec") or {}).get("ports") or []
                         if port_no is None or p.get("port") == port_no), None)
            eps = self._endpoints(svc, port, pods, policies, gateway)
            if not eps:
                lost += share
                continue
            for p in eps:
                uid = p["metadata"]["uid"]
                frac[uid] = frac.get(uid, 0.0) + share / len(eps)
        tracks: dict[str, float] = {}
        for p in pods:
            track = (p["metadata"].get("labels") or {}).get("inferops.io/track", "")
            tracks[track] = tracks.get(track, 0.0) + frac.get(p["metadata"]["uid"], 0.0)
        if self.stable_rps is not None and tracks.get("stable", 0.0) > 0:
            self.load_rps = self.stable_rps / tracks["stable"]
        rps = {uid: f * self.load_rps for uid, f in frac.items()}
        self.track_share, self.unserved_rps = tracks, lost * self.load_rps
        self.pod_rps = {p["metadata"]["name"]: rps.get(p["metadata"]["uid"], 0.0) for p in pods}
        return rps

    def _serve(self, pods, rps, policies, namespaces) -> None:
        monitoring = namespaces.get(self.monitoring_namespace)
        live = set()
        for p in pods:
            uid, status = p["metadata"]["uid"], p.get("status") or {}
            port = _ports(p).get(self.metrics_port)
            image = (p["spec"].get("containers") or [{}])[0].get("image", "")
            behaviour = self.behaviours.get(image, HEALTHY)
            if status.get("phase") != "Running" or not status.get("podIP") or port is None or behaviour.silent:
                continue
            if monitoring is None or not ingress_allowed(p, policies, monitoring, port, self.metrics_port):
                continue
            live.add(uid)
            t = self._traffic.get(uid)
            if t is None:
                try:
                    endpoint = PodEndpoint(status["podIP"], port)
                except OSError as exc:
                    self.errors.append(f"pod {p['metadata']['name']}: cannot serve {status['podIP']}:{port}: {exc}")
                    continue
                self._seed += 1
                labels = p["metadata"].get("labels") or {}
                t = self._traffic[uid] = TrackTraffic(lambda _labels, e=endpoint: e, p["metadata"]["namespace"],
                                                      labels.get("app.kubernetes.io/name", ""),
                                                      labels.get("inferops.io/track", ""), rps=0.0, seed=self._seed,
                                                      error_rate=behaviour.error_rate, latency_s=behaviour.latency_s)
            t.rps = rps.get(uid, 0.0) * self.rps_sample
        for uid in set(self._traffic) - live:
            self._traffic.pop(uid).stop()

    def _adapter(self, pods, rps, deployments, hpas) -> None:
        for hpa in hpas:
            ref = hpa["spec"]["scaleTargetRef"]
            dep = deployments.get(ref["name"]) if ref.get("kind") == "Deployment" else None
            if dep is None:
                continue
            mine = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                    and selector_matches(dep["spec"]["selector"], p["metadata"].get("labels") or {})]
            if not mine:
                continue
            per_pod = sum(rps.get(p["metadata"]["uid"], 0.0) for p in mine) / len(mine)
            name = hpa["metadata"]["name"]
            self.kube.hpa.set_metric(self.namespace, name, "inference_requests_per_second", per_pod,
                                     evaluate_now=False)
            self.kube.hpa.set_metric(self.namespace, name, "dcgm_gpu_utilization",
                                     min(100.0, 100.0 * per_pod / self.pod_capacity_rps), evaluate_now=False)
