"""Simulated serving pods for the local stack and the loop test: Triton-like metrics for every serving
Deployment the Kubernetes emulator runs, scraped by the local Prometheus.

The emulator runs the Deployments (stable, and the canary's ``-canary``/``-baseline`` copies); this
simulator reads them over the Kubernetes API and gives each one a :class:`~flows.standins.traffic.TrackTraffic`
exporter labelled the way the PodMonitor in ``deploy/k8s/base/podmonitor.yaml`` relabels pod series:
``namespace``, ``deployment`` (the ``inferops.io/rollout-of`` label, else ``app.kubernetes.io/name``, else
the name) and ``track`` (the ``inferops.io/track`` label, else ``stable``). One exporter stands for all
the ready pods of a Deployment (the canary analysis sums them): its request rate scales with
``readyReplicas``.

A Deployment whose first container runs an image tagged ``broken`` (e.g. ``registry.local/digits-cnn:broken``)
misbehaves: 20% of its requests fail and they take four times as long. Every other image serves well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from flows.standins.traffic import TrackTraffic

log = logging.getLogger("inferops.standins.serving")

TRACK_LABEL, ROLLOUT_OF_LABEL, NAME_LABEL = "inferops.io/track", "inferops.io/rollout-of", "app.kubernetes.io/name"
BROKEN_TAG = "broken"
# Healthy: one failure in 2000. At 200 requests per second per pod, even a 4 s rate() window of a
# one-pod canary holds ~800 requests, so a single failure (0.125%) never looks like an error rate above
# the canary's usual 1% threshold; a broken image's 20% always does.
HEALTHY = {"error_rate": 0.0005, "latency_s": 0.05}
BROKEN = {"error_rate": 0.2, "latency_s": 0.2}


def is_broken(image: str) -> bool:
    """``…:broken`` (the tag, not a registry port or a path segment)."""
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.split("@", 1)[0].rsplit(":", 1)[1] == BROKEN_TAG


def series_labels(dep: dict[str, Any]) -> tuple[dict[str, str], str, int]:
    """(labels of the series, image, ready replicas) for a Deployment in the API's JSON shape."""
    meta, spec = dep["metadata"], dep.get("spec") or {}
    template = spec.get("template") or {}
    pod_labels = (template.get("metadata") or {}).get("labels") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    deployment = pod_labels.get(ROLLOUT_OF_LABEL) or pod_labels.get(NAME_LABEL) or meta["name"]
    labels = {"namespace": meta["namespace"], "deployment": deployment,
              "track": pod_labels.get(TRACK_LABEL, "stable")}
    ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
    return labels, containers[0].get("image", ""), ready


class ServingSimulator:
    """Polls the Deployments of ``namespace`` every ``interval_s`` and keeps one exporter per ready one.

    ``make_exporter(labels)`` returns an exporter the local Prometheus scrapes
    (:meth:`flows.standins.prometheus.PrometheusServer.exporter`). ``rps_per_replica`` is each ready
    pod's request rate.
    """

    def __init__(self, api_client: Any, make_exporter: Callable[[dict[str, str]], Any], namespace: str = "inference",
                 *, interval_s: float = 0.5, rps_per_replica: float = 200.0, seed: int = 0) -> None:
        from kubernetes import client

        self._apps = client.AppsV1Api(api_client)
        self._api = api_client
        self.namespace, self.interval_s, self.rps = namespace, interval_s, rps_per_replica
        self._make_exporter, self._seed = make_exporter, seed
        self.tracks: dict[str, TrackTraffic] = {}  # by Deployment uid
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="serving-simulator")

    def start(self) -> ServingSimulator:
        self.sync()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # the emulator restarting, a slow scrape: try again next tick
                if len(self.errors) < 100:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                log.debug("serving simulator: %s", exc)

    def sync(self) -> None:
        """One pass: start, retune or stop exporters to match the Deployments now."""
        items = self._api.sanitize_for_serialization(
            self._apps.list_namespaced_deployment(self.namespace, _request_timeout=5))["items"]
        seen = set()
        for dep in items:
            labels, image, ready = series_labels(dep)
            uid = dep["metadata"]["uid"]
            if ready <= 0:
                continue
            seen.add(uid)
            behaviour = BROKEN if is_broken(image) else HEALTHY
            t = self.tracks.get(uid)
            if t is None:
                self._seed += 1
                t = self.tracks[uid] = TrackTraffic(lambda _labels, labels=labels: self._make_exporter(labels),
                                                    labels["namespace"], labels["deployment"], labels["track"],
                                                    rps=self.rps * ready, seed=self._seed, **behaviour)
                log.info("serving %s/%s (%s, %s): %d ready", labels["namespace"], dep["metadata"]["name"],
                         labels["track"], image, ready)
            t.rps, t.error_rate, t.latency_s = self.rps * ready, behaviour["error_rate"], behaviour["latency_s"]
        for uid in set(self.tracks) - seen:
            self.tracks.pop(uid).stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for t in self.tracks.values():
            t.stop()
        self.tracks.clear()
