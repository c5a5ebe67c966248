"""``KubeEmulator``: the store + REST server (uvicorn on a thread) + controllers + a kubeconfig."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from flows.standins.kube_emulator.clock import Clock
from flows.standins.kube_emulator.controllers import GPU, NODES, PODS, Controllers, disrupt
from flows.standins.kube_emulator.crd import upstream_crds
from flows.standins.kube_emulator.errors import ApiError
from flows.standins.kube_emulator.openapi import DEFAULT_VERSION
from flows.standins.kube_emulator.resources import lookup
from flows.standins.kube_emulator.server import Api
from flows.standins.kube_emulator.store import CRDS, Store

BASE_NAMESPACES = ("default", "kube-system", "kube-public")


class KubeEmulator:
    """``version``: the Kubernetes version whose OpenAPI validates built-in kinds (default 1.33)."""

    def __init__(self, workdir: Path | None = None, version: str = DEFAULT_VERSION) -> None:
        self.clock = Clock()
        self.store = Store(clock=self.clock, version=version)
        self.controllers = Controllers(self.store)
        self._dir = Path(workdir or tempfile.mkdtemp(prefix="kube-emulator-"))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.kubeconfig = ""

    # controller handles
    @property
    def deployments(self):
        return self.controllers.deployments

    @property
    def jobs(self):
        return self.controllers.jobs

    @property
    def pods(self):
        return self.controllers.pods

    @property
    def hpa(self):
        return self.controllers.hpa

    @property
    def events(self):
        return self.controllers.events

    def start(self, timeout_s: float = 15.0) -> KubeEmulator:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(Api(self.store).app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="kube-emulator-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Kubernetes API emulator did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        self.kubeconfig = str(self._dir / "kubeconfig")
        Path(self.kubeconfig).write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                          "namespace": "default"}}]}))
        self._base_objects()
        self.controllers.start()
        return self

    def stop(self) -> None:
        self.controllers.stop()
        self.clock.stop()
        self.store.reset()  # ends open watch streams so uvicorn can shut down
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def reset(self) -> None:
        """Wipe every object, restore the base namespaces, controllers back to their defaults."""
        with self.controllers.lock:
            self.store.reset()
            self.controllers.reset()
            self.clock.reset()
            self._base_objects()

    def _base_objects(self) -> None:
        for ns in BASE_NAMESPACES:
            self.create_namespace(ns)

    # ---- helpers for tests ----
    def serve_newer_fields(self, group: str, kind: str, *paths: str) -> None:
        """Act as a newer API server that knows these fields of ``kind`` (``spec.rolloutHints``,
        ``spec.template.spec.containers[].futureProbe``): they are stored, not dropped, until ``reset``."""
        key = (group, kind)
        self.store.newer_fields[key] = self.store.newer_fields.get(key, frozenset()) | frozenset(paths)

    def install_crds(self, *names: str, directory: Path | None = None) -> list[str]:
        """Apply upstream CRDs (``httproutes.gateway.networking.k8s.io``, or a group such as
        ``monitoring.coreos.com``; none: all) from ``INFEROPS_K8S_CRDS`` / ``../shared/k8s-crds``."""
        crds = upstream_crds(directory)
        chosen = [n for n in crds if not names or n in names or n.split(".", 1)[1] in names
                  or n.split(".", 1)[0] in names]
        unknown = [n for n in names if not any(c == n or c.split(".", 1)[1] == n or c.split(".", 1)[0] == n
                                               for c in crds)]
        if unknown:
            raise KeyError(f"no CRD {', '.join(unknown)} in the CRD folder (has: {', '.join(sorted(crds))})")
        for name in chosen:
            if self.store.find(CRDS, None, name) is None:
                self.store.create(CRDS, crds[name], manager="kubectl")
        return chosen

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        try:
            return self.store.create(lookup("", "namespaces"), {"metadata": {"name": name, "labels": {
                "kubernetes.io/metadata.name": name, **(labels or {})}}})
        except ApiError as exc:
            if exc.code != 409:
                raise
            return self.store.get(lookup("", "namespaces"), None, name)

    def add_node(self, name: str, gpus: int = 8, product: str = "NVIDIA-A100-SXM4-80GB",
                 labels: dict[str, str] | None = None, cpu: str = "96", memory: str = "1Ti",
                 taints: list[dict] | None = None) -> dict:
        """A Ready node with allocatable ``nvidia.com/gpu`` and the GPU feature-discovery labels."""
        lab = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        if gpus:
            lab.update({"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus),
                        "nvidia.com/gpu.present": "true"})
        resources = {"cpu": cpu, "memory": memory, "pods": "110", **({GPU: str(gpus)} if gpus else {})}
        return self.store.create(NODES, {
            "metadata": {"name": name, "labels": {**lab, **(labels or {})}},
            "spec": {"taints": taints} if taints else {},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status"}],
                       "nodeInfo": {"architecture": "amd64", "bootID": name, "containerRuntimeVersion":
                                    "containerd://2.0.5", "kernelVersion": "6.8.0", "kubeProxyVersion": "v1.33.0",
                                    "kubeletVersion": "v1.33.0", "machineID": name, "operatingSystem": "linux",
                                    "osImage": "Ubuntu 24.04 LTS", "systemUUID": name}}})

    def remove_node(self, name: str) -> None:
        """The node goes away; pod GC fails its pods (``DisruptionTarget``) and deletes them at once."""
        with self.controllers.lock:
            for pod in self.store.list(PODS, None, lambda p: p["spec"].get("nodeName") == name):
                if pod["status"].get("phase") in ("Pending", "Running"):
                    disrupt(self.store, pod, "DeletionByPodGC", "PodGC: node no longer exists")
            self.store.delete(NODES, None, name)
