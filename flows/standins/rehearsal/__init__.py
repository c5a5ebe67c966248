"""The production rehearsal: the serving stack as it ships, on an emulated GPU fleet, scraped as in a cluster.

:class:`Rehearsal` builds ``kubectl kustomize deploy/k8s/overlays/prod`` and applies it, with
``kubectl apply --server-side``, into the strict Kubernetes emulator (with the Gateway API and
prometheus-operator CRDs it needs) onto a fleet of tainted GPU nodes (8 x 8 by default) and two CPU
nodes. Then:

* the real Prometheus scrapes every serving pod on its own loopback address, with the scrape jobs
  the operator generates from the shipped PodMonitor (:mod:`.operator`): canary and baseline pods are
  scraped only if the PodMonitor selects them;
* :class:`~.dataplane.DataPlane` routes the offered load through the HTTPRoute, the Services and the
  NetworkPolicies to the pods, runs their Triton-like counters, and feeds the HPA its Pods metrics;
* :class:`~.observers.ServingGuard` counts PDB violations and HPA overrides from watches.

The emulator's clock runs ``speed`` times faster than real time (probes, grace periods, HPA sync and
windows, Job deadlines), and stands still while this process is stalled (a garbage collection, a
loaded host: ``Clock.hold_through_stalls``); Prometheus and the canary's analysis intervals run in
real time.
:class:`EmulatedClock` gives a controller (the idle-GPU night) the cluster's time.

Traffic modes: gateway-api is the stack as shipped (the stable Service selects the stable track);
:meth:`Rehearsal.use_traffic_mode` ``("replicas")`` applies the Service of the build with
``deploy/k8s/components/canary-replicas-mode``, as an operator without a Gateway would.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from flows.common.kube import Kube
from flows.standins.kube_emulator import KubeEmulator
from flows.standins.prometheus import PrometheusServer
from flows.standins.rehearsal.dataplane import Behaviour, DataPlane
from flows.standins.rehearsal.observers import PodClock, ServingGuard
from flows.standins.rehearsal.operator import scrape_configs

__all__ = ["Behaviour", "EmulatedClock", "Rehearsal", "kustomize"]

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
NS, APP = "inference", "llm-server"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
REPLICAS_COMPONENT = "canary-replicas-mode"


def kustomize(overlay: str = "prod", components: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay of deploy/k8s, plus components as a user's kustomization adds them."""
    if not shutil.which("kubectl"):
        raise RuntimeError("kubectl is missing (Debian package kubernetes-client; `make setup` installs it)")
    with tempfile.TemporaryDirectory(prefix="rehearsal-kustomize-") as d:
        rel = Path(os.path.relpath(K8S, d))
        (Path(d) / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [str(rel / "overlays" / overlay)], "components": [str(rel / "components" / c)
                                                                          for c in components]}))
        out = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _loopback_net() -> str:
    """A /16 of 127/8 for pod IPs whose metrics port (8002) is free on its first addresses."""
    for _ in range(50):
        net = f"127.{random.randint(64, 250)}.0.0/16"
        ok = True
        for host in (1, 2, 3):
            with socket.socket() as s:
                try:
                    s.bind((f"{net.split('.0.0/')[0]}.0.{host}", 8002))
                except OSError:
                    ok = False
                    break
        if ok:
            return net
    raise RuntimeError("no free loopback /16 for pod IPs")


class EmulatedClock:
    """A :class:`~flows.common.clock.Clock` on the emulator's time: ``sleep`` waits the real time that
    takes at its speed."""

    def __init__(self, kube: KubeEmulator) -> None:
        self.kube = kube

    def now(self) -> float:
        return self.kube.clock.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.kube.clock.speed)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.kube.clock.speed)


class Rehearsal:
    """The prod build on an emulated fleet, scraped and served (see the module doc). ``model_load_s``:
    emulated seconds a serving pod takes to load its model after starting (startup probe)."""

    def __init__(self, *, nodes: int = 8, gpus: int = 8, speed: float = 20.0, model_load_s: float = 40.0,
                 base_rps: float = 12000.0, workdir: Path | None = None) -> None:
        self.nodes, self.gpus, self.speed, self.model_load_s, self.base_rps = nodes, gpus, speed, model_load_s, base_rps
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="rehearsal-"))
        self.kube: KubeEmulator | None = None
        self.prom: PrometheusServer | None = None
        self.dataplane: DataPlane | None = None
        self.guard: ServingGuard | None = None
        self.docs: list[dict[str, Any]] = []
        self.traffic_mode = "gateway-api"
        self.applied: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Rehearsal:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        (self.workdir / "kube").mkdir(parents=True, exist_ok=True)
        kube = self.kube = KubeEmulator(self.workdir / "kube").start()
        kube.pods.pod_cidr = _loopback_net()
        kube.install_crds("gateway.networking.k8s.io", "monitoring.coreos.com")
        for ns in ("monitoring", "gateway-system"):  # the prerequisites deploy/k8s/README.md lists
            kube.create_namespace(ns)
        for i in range(self.nodes):
            kube.add_node(f"gpu-{i}", gpus=self.gpus, product="NVIDIA-H100-80GB-HBM3", taints=[GPU_TAINT],
                          labels={"topology.kubernetes.io/zone": f"zone-{'abc'[i % 3]}"})
        for i in range(2):
            kube.add_node(f"cpu-{i}", gpus=0, labels={"topology.kubernetes.io/zone": f"zone-{'abc'[i % 3]}"})
        for name in (APP, f"{APP}-canary", f"{APP}-baseline"):  # Triton loads its engines before it is ready
            kube.pods.ready_after(NS, name, self.model_load_s)
        kube.clock.speed = self.speed
        kube.clock.hold_through_stalls()  # at 20x a 0.5 s GC pause here would be 10 s the cluster lost
        self.docs = kustomize("prod")
        self.apply(self.docs)
        self.wait(lambda: (self.stable().get("status") or {}).get("availableReplicas") == 3, "llm-server 3/3", 60)
        monitor = next(d for d in self.docs if d["kind"] == "PodMonitor" and d["metadata"]["name"] == APP)
        sd_file = self.workdir / "pods.json"
        sd_file.write_text("[]")
        self.prom = PrometheusServer(self.workdir / "prometheus",
                                     scrape_configs=scrape_configs(monitor, str(sd_file))).start()
        self.dataplane = DataPlane(kube, sd_file, NS)
        self.dataplane.stable_rps = self.base_rps
        self.dataplane.start()
        self.guard = ServingGuard(self.client(), NS, APP, APP, kube.clock.iso).start()

    def stop(self) -> None:
        for part in (self.guard, self.dataplane):
            if part is not None:
                part.stop()
        if self.prom is not None:
            self.prom.stop()
        if self.kube is not None:
            self.kube.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Rehearsal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the stack -------------------------------------------------------------------------------
    def apply(self, docs: list[dict[str, Any]]) -> str:
        """``kubectl apply --server-side`` (the emulator serves no OpenAPI document: ``--validate=false``;
        the server validates). Fails on any error or pruned field."""
        assert self.kube is not None
        out = subprocess.run(["kubectl", "--kubeconfig", self.kube.kubeconfig, "apply", "--server-side",
                              "--validate=false", "-f", "-"], input=yaml.safe_dump_all(docs), capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0 or "unknown field" in out.stderr:
            raise RuntimeError(f"kubectl apply: {out.stderr.strip()}")
        self.applied.append(out.stdout)
        return out.stdout

    def use_traffic_mode(self, mode: str) -> None:
        """gateway-api: the Service as shipped; replicas: the Service of the canary-replicas-mode build,
        applied alone (the rest of the stack, the Deployment's count included, is left as it is)."""
        docs = kustomize("prod", (REPLICAS_COMPONENT,) if mode == "replicas" else ())
        self.apply([d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == APP])
        self.traffic_mode = mode

    def client(self) -> Kube:
        assert self.kube is not None
        return Kube(self.kube.api_client())

    def env(self) -> dict[str, str]:
        """What a pipeline needs to reach this cluster and its Prometheus (``INFEROPS_*`` settings)."""
        assert self.kube is not None and self.prom is not None
        return {"INFEROPS_KUBE__KUBECONFIG": self.kube.kubeconfig, "INFEROPS_PROMETHEUS__URL": self.prom.url}

    def stable(self) -> dict[str, Any]:
        from flows.standins.kube_emulator.resources import lookup

        assert self.kube is not None
        return self.kube.store.get(lookup("apps", "deployments"), NS, APP)

    def hpa(self) -> dict[str, Any]:
        from flows.standins.kube_emulator.resources import lookup

        assert self.kube is not None
        return self.kube.store.get(lookup("autoscaling", "horizontalpodautoscalers"), NS, APP)

    def free_gpus(self) -> int:
        """GPUs on the nodes that no pod holds (requests of every bound, unfinished pod)."""
        from flows.common.kube import NODES, PODS

        kube = self.client()
        total = sum(int((n.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", 0))
                    for n in kube.list(NODES))
        held = sum(int((c.get("resources") or {}).get("requests", {}).get("nvidia.com/gpu", 0))
                   for p in kube.list(PODS) if p["spec"].get("nodeName")
                   and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                   for c in p["spec"].get("containers") or [])
        return total - held

    def pod_clock(self, namespace: str = NS, labels: str = f"app.kubernetes.io/name={APP}") -> PodClock:
        return PodClock(self.client(), namespace, labels).start()

    def load_for(self, stable_pods: float) -> float:
        """Offered load (rps) at which the HPA wants ``stable_pods`` (its target: 5000 rps a pod)."""
        return 5000.0 * stable_pods * 0.95

    def problems(self) -> list[str]:
        """What went wrong underneath: controller exceptions, data-plane and watch errors, pruned fields."""
        assert self.kube is not None
        out = list(self.kube.controllers.errors)
        out += (self.dataplane.errors if self.dataplane else []) + (self.guard.errors if self.guard else [])
        out += [f"dropped field: {w}" for w in self.kube.store.warnings if "unknown field" in w[3]]
        return out

    @staticmethod
    def wait(check: Any, what: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"rehearsal: timed out waiting for {what}")
