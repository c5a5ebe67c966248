"""Minimal validation the apiserver would do: required fields, names, immutable fields → 422 Invalid."""

from __future__ import annotations

import re
from typing import Any

from flows.standins.kube_emulator.errors import invalid
from flows.standins.kube_emulator.resources import Resource

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _pod_spec(spec: Any, field: str, causes: list[tuple[str, str]]) -> None:
    containers = (spec or {}).get("containers") if isinstance(spec, dict) else None
    if not containers:
        causes.append((f"{field}.containers", "Required value"))
        return
    for i, c in enumerate(containers):
        name = c.get("name", "")
        if not _LABEL.match(name) or len(name) > 63:
            causes.append((f"{field}.containers[{i}].name", f"Invalid value: {name!r}: must be a DNS-1123 label"))
        if not c.get("image"):
            causes.append((f"{field}.containers[{i}].image", "Required value"))


def validate(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        causes.append(("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist "
                       "of lower case alphanumeric characters, '-' or '.'"))
    if res.namespaced and res.plural != "events" and not meta.get("namespace"):
        causes.append(("metadata.namespace", "Required value"))
    spec = obj.get("spec")
    if res.kind == "Deployment":
        spec = spec if isinstance(spec, dict) else {}
        sel = (spec.get("selector") or {}).get("matchLabels")
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not spec.get("selector"):
            causes.append(("spec.selector", "Required value"))
        elif sel and any(tmpl_labels.get(k) != v for k, v in sel.items()):
            causes.append(("spec.template.metadata.labels", "Invalid value: `selector` does not match "
                           "template `labels`"))
        if (spec.get("replicas") or 0) < 0:
            causes.append(("spec.replicas", "Invalid value: must be greater than or equal to 0"))
        _pod_spec((spec.get("template") or {}).get("spec"), "spec.template.spec", causes)
        if old is not None and spec.get("selector") != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", "Invalid value: field is immutable"))
    elif res.kind == "Job":
        spec = spec if isinstance(spec, dict) else {}
        pod = (spec.get("template") or {}).get("spec") or {}
        _pod_spec(pod, "spec.template.spec", causes)
        restart = pod.get("restartPolicy", "Always")
        if restart not in ("Never", "OnFailure"):
            causes.append(("spec.template.spec.restartPolicy", f'Unsupported value: "{restart}": supported '
                           'values: "OnFailure", "Never"'))
        if spec.get("podFailurePolicy") and restart != "Never":
            causes.append(("spec.template.spec.restartPolicy", "Invalid value: only \"Never\" is supported "
                           "when podFailurePolicy is specified"))
        if old is not None:
            old_tmpl = (old.get("spec") or {}).get("template")
            if spec.get("template") != old_tmpl:
                causes.append(("spec.template", "Invalid value: field is immutable"))
    elif res.kind == "Pod":
        _pod_spec(spec, "spec", causes)
    elif res.kind == "PriorityClass":
        if not isinstance(obj.get("value"), int):
            causes.append(("value", "Required value"))
        if old is not None and obj.get("value") != old.get("value"):
            causes.append(("value", "Invalid value: field is immutable"))
    if causes:
        raise invalid(res, name, causes)

