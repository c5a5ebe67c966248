"""What the Prometheus operator and Prometheus's Kubernetes service discovery do with a PodMonitor,
for a Prometheus that cannot talk to the Kubernetes API itself.

Debian's ``prometheus`` 2.42 is built without ``kubernetes_sd_configs``, so discovery is split in two:

* :func:`pod_targets` is ``kubernetes_sd_configs`` with ``role: pod``: one target per declared container
  port of every pod that has an IP, labelled with the same ``__meta_kubernetes_*`` labels
  (https://prometheus.io/docs/prometheus/latest/configuration/configuration/#pod). The rehearsal writes
  them to a file that Prometheus reads with ``file_sd_configs``.
* :func:`scrape_configs` is the prometheus-operator (v0.93) turning a PodMonitor into scrape jobs: the
  ``keep``/``drop`` rules of its selector, the port filter, the ``namespace``/``container``/``pod``/
  ``job``/``endpoint`` labels, then the PodMonitor's own ``relabelings``
  (https://prometheus-operator.dev/docs/developer/getting-started/#using-podmonitors).

So a pod is scraped only if the PodMonitor selects it, and its series carry the labels the
PodMonitor's relabelling gives them, as in a cluster.
"""

from __future__ import annotations

import re
from typing import Any

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitize(name: str) -> str:
    """A Kubernetes label or annotation name as a Prometheus label name suffix (``strutil.SanitizeLabelName``)."""
    return _INVALID.sub("_", name)


def pod_targets(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """File SD target groups for one pod, as ``kubernetes_sd_configs`` ``role: pod`` discovers it."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip:
        return []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    common = {
        "__meta_kubernetes_namespace": meta["namespace"],
        "__meta_kubernetes_pod_name": meta["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_uid": meta.get("uid", ""),
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_ready": str(ready).lower(),
    }
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner:
        common["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
        common["__meta_kubernetes_pod_controller_name"] = owner["name"]
    for k, v in (meta.get("labels") or {}).items():
        common[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
        common[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    for k, v in (meta.get("annotations") or {}).items():
        common[f"__meta_kubernetes_pod_annotation_{sanitize(k)}"] = v
        common[f"__meta_kubernetes_pod_annotationpresent_{sanitize(k)}"] = "true"
    groups = []
    for init, containers in ((False, spec.get("containers") or []), (True, spec.get("initContainers") or [])):
        for c in containers:
            labels = {**common, "__meta_kubernetes_pod_container_name": c["name"],
                      "__meta_kubernetes_pod_container_image": c.get("image", ""),
                      "__meta_kubernetes_pod_container_init": str(init).lower()}
            ports = c.get("ports") or []
            if not ports and not init:
                groups.append({"targets": [ip], "labels": labels})
            for p in ports:
                groups.append({"targets": [f"{ip}:{p['containerPort']}"], "labels": {
                    **labels, "__meta_kubernetes_pod_container_port_name": p.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(p["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": p.get("protocol", "TCP")}})
    return groups


def _selector_rules(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's keep/drop rules for a label selector."""
    rules = []
    for k, v in sorted((selector.get("matchLabels") or {}).items()):
        s = sanitize(k)
        rules.append({"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{s}",
                                                         f"__meta_kubernetes_pod_labelpresent_{s}"],
                      "regex": f"({re.escape(v)});true"})
    for e in selector.get("matchExpressions") or []:
        s, op = sanitize(e["key"]), e["operator"]
        values = "|".join(re.escape(v) for v in e.get("values") or [])
        both = [f"__meta_kubernetes_pod_label_{s}", f"__meta_kubernetes_pod_labelpresent_{s}"]
        if op == "In":
            rules.append({"action": "keep", "source_labels": both, "regex": f"({values});true"})
        elif op == "NotIn":
            rules.append({"action": "drop", "source_labels": both, "regex": f"({values});true"})
        elif op == "Exists":
            rules.append({"action": "keep", "source_labels": [both[1]], "regex": "true"})
        elif op == "DoesNotExist":
            rules.append({"action": "drop", "source_labels": [both[1]], "regex": "true"})
    return rules


_RELABEL_FIELDS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
                   "regex": "regex", "replacement": "replacement", "modulus": "modulus", "action": "action"}


def _relabel(r: dict[str, Any]) -> dict[str, Any]:
    out = {_RELABEL_FIELDS[k]: v for k, v in r.items() if k in _RELABEL_FIELDS}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def scrape_configs(pod_monitor: dict[str, Any], sd_file: str, *, refresh_s: int = 5) -> list[dict[str, Any]]:
    """The scrape jobs the operator generates for ``pod_monitor``, discovering pods from ``sd_file``
    (written with :func:`pod_targets`) instead of the Kubernetes API."""
    meta, spec = pod_monitor["metadata"], pod_monitor["spec"]
    ns = meta["namespace"]
    names = (spec.get("namespaceSelector") or {}).get("matchNames") or [ns]
    jobs = []
    for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
        relabel = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            {"action": "keep", "source_labels": ["__meta_kubernetes_namespace"],
             "regex": "|".join(re.escape(n) for n in names)},
            *_selector_rules(spec.get("selector") or {}),
        ]
        if ep.get("port"):
            relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                            "regex": re.escape(ep["port"])})
        elif ep.get("portNumber"):
            relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                            "regex": str(ep["portNumber"])})
        relabel += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{ns}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": ep.get("port") or str(ep.get("portNumber", ""))},
            *(_relabel(r) for r in ep.get("relabelings") or []),
        ]
        job: dict[str, Any] = {
            "job_name": f"podMonitor/{ns}/{meta['name']}/{i}",
            "honor_labels": bool(ep.get("honorLabels", False)),
            "metrics_path": ep.get("path", "/metrics"),
            "scheme": ep.get("scheme", "http"),
            "file_sd_configs": [{"files": [sd_file], "refresh_interval": f"{refresh_s}s"}],
            "relabel_configs": relabel,
        }
        if ep.get("interval"):
            job["scrape_interval"] = ep["interval"]
        if ep.get("scrapeTimeout"):
            job["scrape_timeout"] = ep["scrapeTimeout"]
        if ep.get("metricRelabelings"):
            job["metric_relabel_configs"] = [_relabel(r) for r in ep["metricRelabelings"]]
        jobs.append(job)
    return jobs
