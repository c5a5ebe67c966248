"""Admission of a write: schema (400 / unknown fields), defaults, then the apiserver's validation (422).

Built-in kinds: ``openapi.py`` decodes against the official OpenAPI, then the checks below reproduce
the parts of ``pkg/apis/*/validation`` the product's objects reach (names, labels, pod specs, the
Deployment / Job / Service / HPA / PDB rules, immutable fields). Custom resources: ``crd.py``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from flows.standins.kube_emulator import openapi
from flows.standins.kube_emulator.crd import Validator
from flows.standins.kube_emulator.errors import bad_request, invalid
from flows.standins.kube_emulator.resources import Resource

Obj = dict[str, Any]
Cause = tuple[str, str, str]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QNAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
MSG_1123 = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
            "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
            "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
            "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
MSG_QNAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")

# kind → the name rule of its metadata.name (https://kubernetes.io/docs/concepts/overview/working-with-objects/names/)
NAME_RULES = {"Service": "dns1035", "Namespace": "dns1123label"}
PATH_SEGMENT_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def _q(v: Any) -> str:
    import json

    return json.dumps(v)


def inv(field: str, value: Any, msg: str) -> Cause:
    return (field, "FieldValueInvalid", f"Invalid value: {_q(value)}: {msg}")


def req(field: str) -> Cause:
    return (field, "FieldValueRequired", "Required value")


def unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    return (field, "FieldValueNotSupported", f"Unsupported value: {_q(value)}: supported values: "
            + ", ".join(_q(a) for a in allowed))


def forbidden(field: str, msg: str) -> Cause:
    return (field, "FieldValueForbidden", f"Forbidden: {msg}")


def immutable(field: str, value: Any) -> Cause:
    return inv(field, value if isinstance(value, (str, int)) else "object", "field is immutable")


# ---- names and labels ----

def name_causes(field: str, name: str, rule: str) -> list[Cause]:
    if rule == "dns1035":
        if len(name) > 63:
            return [inv(field, name, "must be no more than 63 characters")]
        return [] if _LABEL_1035.match(name) else [inv(field, name, MSG_1035)]
    if rule == "dns1123label":
        if len(name) > 63:
            return [inv(field, name, "must be no more than 63 characters")]
        return [] if _LABEL_1123.match(name) else [inv(field, name, MSG_1123)]
    if rule == "path":
        if name in (".", "..") or "/" in name or "%" in name:
            return [inv(field, name, "may not contain '/' or '%' or be '.' or '..'")]
        return []
    if len(name) > 253:
        return [inv(field, name, "must be no more than 253 characters")]
    return [] if _SUBDOMAIN.match(name) else [inv(field, name, MSG_SUBDOMAIN)]


def qualified_name_causes(field: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    out = []
    if "/" in prefix:
        return [inv(field, key, "a qualified name must consist of alphanumeric characters, '-', '_' or '.', with "
                    "an optional DNS subdomain prefix and '/'")]
    if key.count("/") and not prefix:
        out.append(inv(field, key, "prefix part must be non-empty"))
    elif prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        out.append(inv(field, key, "prefix part " + MSG_SUBDOMAIN))
    if not name:
        out.append(inv(field, key, "name part must be non-empty"))
    elif len(name) > 63:
        out.append(inv(field, key, "name part must be no more than 63 characters"))
    elif not _QNAME.match(name):
        out.append(inv(field, key, MSG_QNAME))
    return out


def label_causes(field: str, labels: Any) -> list[Cause]:
    out: list[Cause] = []
    for k, v in (labels or {}).items():
        out += qualified_name_causes(field, k)
        v = "" if v is None else str(v)
        if len(v) > 63:
            out.append(inv(f"{field}", v, "must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(v):
            out.append(inv(f"{field}", v, MSG_LABEL_VALUE))
    return out


def selector_causes(field: str, sel: Any) -> list[Cause]:
    if not isinstance(sel, dict):
        return []
    out = label_causes(f"{field}.matchLabels", sel.get("matchLabels"))
    for i, e in enumerate(sel.get("matchExpressions") or []):
        f = f"{field}.matchExpressions[{i}]"
        op = e.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            out.append(inv(f"{f}.operator", op, "not a valid selector operator"))
        elif op in ("In", "NotIn") and not e.get("values"):
            out.append(req(f"{f}.values"))
        elif op in ("Exists", "DoesNotExist") and e.get("values"):
            out.append(forbidden(f"{f}.values", "may not be specified when `operator` is 'Exists' or "
                                 "'DoesNotExist'"))
        out += qualified_name_causes(f"{f}.key", e.get("key") or "")
    return out


def selector_matches(sel: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals or op == "NotIn" and labels.get(k) in vals or \
                op == "Exists" and k not in labels or op == "DoesNotExist" and k in labels:
            return False
    return True


def metadata_causes(res: Resource, meta: Obj) -> list[Cause]:
    out: list[Cause] = []
    name = meta.get("name") or ""
    if not name:
        out.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
    else:
        rule = "path" if res.kind in PATH_SEGMENT_KINDS else NAME_RULES.get(res.kind, "subdomain")
        out += name_causes("metadata.name", name, rule)
    out += label_causes("metadata.labels", meta.get("labels"))
    for k in meta.get("annotations") or {}:
        out += qualified_name_causes("metadata.annotations", k)
    size = sum(len(k) + len(str(v)) for k, v in (meta.get("annotations") or {}).items())
    if size > 256 * 1024:
        out.append(("metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes"))
    return out


# ---- pod specs ----

def _is_extended(resource: str) -> bool:
    return "/" in resource and not resource.startswith(("kubernetes.io/", "requests.")) \
        and not resource.startswith("hugepages-")


def _quantity(v: Any) -> float:
    from flows.standins.kube_emulator.objects import quantity

    return quantity(v)


def _probe_causes(field: str, probe: Any, liveness_like: bool) -> list[Cause]:
    if not isinstance(probe, dict):
        return []
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
    out: list[Cause] = []
    if not handlers:
        out.append((field, "FieldValueRequired", "Required value: must specify a handler type"))
    elif len(handlers) > 1:
        out.append(forbidden(f"{field}.{handlers[1]}", "may not specify more than 1 handler type"))
    if liveness_like and probe.get("successThreshold", 1) != 1:
        out.append(inv(f"{field}.successThreshold", probe["successThreshold"], "must be 1"))
    for k in ("periodSeconds", "timeoutSeconds", "successThreshold", "failureThreshold"):
        if k in probe and probe[k] is not None and probe[k] < 1:
            out.append(inv(f"{field}.{k}", probe[k], "must be greater than or equal to 1"))
    if (probe.get("initialDelaySeconds") or 0) < 0:
        out.append(inv(f"{field}.initialDelaySeconds", probe["initialDelaySeconds"],
                       "must be greater than or equal to 0"))
    return out


def _container_causes(field: str, c: Obj, volumes: set[str]) -> list[Cause]:
    out: list[Cause] = []
    name = c.get("name") or ""
    if not name:
        out.append(req(f"{field}.name"))
    else:
        out += name_causes(f"{field}.name", name, "dns1123label")
    if not c.get("image"):
        out.append(req(f"{field}.image"))
    port_names: set[str] = set()
    for i, p in enumerate(c.get("ports") or []):
        pf = f"{field}.ports[{i}]"
        cp = p.get("containerPort")
        if cp is None:
            out.append(req(f"{pf}.containerPort"))
        elif not 1 <= cp <= 65535:
            out.append(inv(f"{pf}.containerPort", cp, "must be between 1 and 65535, inclusive"))
        if p.get("name"):
            pn = p["name"]
            if len(pn) > 15 or not _IANA.match(pn) or "--" in pn or not re.search("[a-z]", pn):
                out.append(inv(f"{pf}.name", pn, "must contain only alpha-numeric characters (a-z, 0-9), and "
                               "hyphens (-), at most 15 characters, at least one letter"))
            elif pn in port_names:
                out.append((f"{pf}.name", "FieldValueDuplicate", f"Duplicate value: {_q(pn)}"))
            port_names.add(pn)
        if p.get("protocol") not in (None, "TCP", "UDP", "SCTP"):
            out.append(unsupported(f"{pf}.protocol", p["protocol"], ("SCTP", "TCP", "UDP")))
    for i, e in enumerate(c.get("env") or []):
        if not _ENV.match(e.get("name") or ""):
            out.append(inv(f"{field}.env[{i}].name", e.get("name"), "a valid environment variable name must "
                           "consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a "
                           "digit"))
    for i, m in enumerate(c.get("volumeMounts") or []):
        if m.get("name") not in volumes:
            out.append((f"{field}.volumeMounts[{i}].name", "FieldValueNotFound", f"Not found: {_q(m.get('name'))}"))
        if not m.get("mountPath"):
            out.append(req(f"{field}.volumeMounts[{i}].mountPath"))
    res = c.get("resources") or {}
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    for rname, rv in requests.items():
        rf = f"{field}.resources.requests[{rname}]"
        try:
            q = _quantity(rv)
        except ValueError:
            continue
        if _is_extended(rname):
            if rname not in limits:
                out.append(forbidden(rf, "Limit must be set for non overcommitable resources"))
            elif _quantity(limits[rname]) != q:
                out.append(inv(rf, str(rv), f"must be equal to {rname} limit of {limits[rname]}"))
            if q != int(q):
                out.append(inv(rf, str(rv), "must be an integer"))
        elif rname in limits and q > _quantity(limits[rname]):
            out.append(inv(rf, str(rv), f"must be less than or equal to {rname} limit of {limits[rname]}"))
    for rname, rv in limits.items():
        try:
            if _is_extended(rname) and _quantity(rv) != int(_quantity(rv)):
                out.append(inv(f"{field}.resources.limits[{rname}]", str(rv), "must be an integer"))
        except ValueError:
            pass
    out += _probe_causes(f"{field}.livenessProbe", c.get("livenessProbe"), True)
    out += _probe_causes(f"{field}.startupProbe", c.get("startupProbe"), True)
    out += _probe_causes(f"{field}.readinessProbe", c.get("readinessProbe"), False)
    sc = c.get("securityContext") or {}
    for k in ("runAsUser", "runAsGroup"):
        if isinstance(sc.get(k), int) and sc[k] < 0:
            out.append(inv(f"{field}.securityContext.{k}", sc[k], "must be between 0 and 2147483647, inclusive"))
    return out


def pod_spec_causes(field: str, spec: Any, restart_allowed: tuple[str, ...] | None = None) -> list[Cause]:
    if not isinstance(spec, dict):
        return [req(field)]
    out: list[Cause] = []
    volumes: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        n = v.get("name") or ""
        out += name_causes(f"{field}.volumes[{i}].name", n, "dns1123label")
        if n in volumes:
            out.append((f"{field}.volumes[{i}].name", "FieldValueDuplicate", f"Duplicate value: {_q(n)}"))
        volumes.add(n)
    containers = spec.get("containers") or []
    if not containers:
        out.append(req(f"{field}.containers"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            out += _container_causes(f"{field}.{group}[{i}]", c, volumes)
            if c.get("name") in seen:
                out.append((f"{field}.{group}[{i}].name", "FieldValueDuplicate", f"Duplicate value: {_q(c['name'])}"))
            seen.add(c.get("name"))
    restart = spec.get("restartPolicy", "Always")
    if restart not in ("Always", "OnFailure", "Never"):
        out.append(unsupported(f"{field}.restartPolicy", restart, ("Always", "Never", "OnFailure")))
    elif restart_allowed and restart not in restart_allowed:
        out.append(unsupported(f"{field}.restartPolicy", restart, restart_allowed))
    tgp = spec.get("terminationGracePeriodSeconds")
    if isinstance(tgp, int) and tgp < 0:
        out.append(inv(f"{field}.terminationGracePeriodSeconds", tgp, "must be greater than or equal to 0"))
    out += label_causes(f"{field}.nodeSelector", spec.get("nodeSelector"))
    for i, t in enumerate(spec.get("tolerations") or []):
        tf = f"{field}.tolerations[{i}]"
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            out.append(unsupported(f"{tf}.operator", op, ("Equal", "Exists")))
        if op == "Exists" and t.get("value"):
            out.append(inv(f"{tf}.operator", t["value"], "value must be empty when `operator` is 'Exists'"))
        if not t.get("key") and op != "Exists":
            out.append(inv(f"{tf}.operator", op, "operator must be Exists when `key` is empty, which means "
                           "\"match all values and all keys\""))
        if t.get("effect") not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(unsupported(f"{tf}.effect", t["effect"], ("NoExecute", "NoSchedule", "PreferNoSchedule")))
        if t.get("key"):
            out += qualified_name_causes(f"{tf}.key", t["key"])
    for i, tsc in enumerate(spec.get("topologySpreadConstraints") or []):
        tf = f"{field}.topologySpreadConstraints[{i}]"
        if (tsc.get("maxSkew") or 0) <= 0:
            out.append(inv(f"{tf}.maxSkew", tsc.get("maxSkew"), "must be greater than zero"))
        if tsc.get("whenUnsatisfiable") not in ("DoNotSchedule", "ScheduleAnyway"):
            out.append(unsupported(f"{tf}.whenUnsatisfiable", tsc.get("whenUnsatisfiable"),
                                   ("DoNotSchedule", "ScheduleAnyway")))
        if tsc.get("matchLabelKeys") and not tsc.get("labelSelector"):
            out.append(req(f"{tf}.labelSelector"))
    if spec.get("priorityClassName"):
        out += name_causes(f"{field}.priorityClassName", spec["priorityClassName"], "subdomain")
    psc = spec.get("securityContext") or {}
    for k in ("runAsUser", "runAsGroup", "fsGroup"):
        if isinstance(psc.get(k), int) and psc[k] < 0:
            out.append(inv(f"{field}.securityContext.{k}", psc[k], "must be between 0 and 2147483647, inclusive"))
    return out


def _template_causes(field: str, tmpl: Any, restart: tuple[str, ...]) -> list[Cause]:
    if not isinstance(tmpl, dict):
        return [req(field)]
    meta = tmpl.get("metadata") or {}
    return label_causes(f"{field}.metadata.labels", meta.get("labels")) + \
        pod_spec_causes(f"{field}.spec", tmpl.get("spec"), restart)


def _nonneg(spec: Obj, field: str, keys: tuple[str, ...], out: list[Cause], positive: tuple[str, ...] = ()) -> None:
    for k in keys:
        v = spec.get(k)
        if isinstance(v, int) and (v < 0 or (k in positive and v <= 0)):
            out.append(inv(f"{field}.{k}", v, "must be greater than " + ("zero" if k in positive else
                                                                        "or equal to 0")))


def _int_or_percent(v: Any) -> bool:
    return isinstance(v, int) or (isinstance(v, str) and bool(re.fullmatch(r"[0-9]+%", v)))


# ---- per kind ----

def _workload(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    sel = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        out.append(inv("spec.selector", sel or {}, "empty selector is invalid for deployment") if sel is not None
                   else req("spec.selector"))
    else:
        out += selector_causes("spec.selector", sel)
        if not selector_matches(sel, labels):
            out.append(inv("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    _nonneg(spec, "spec", ("replicas", "minReadySeconds", "revisionHistoryLimit"), out)
    out += _template_causes("spec.template", spec.get("template"), ("Always",))
    if obj["kind"] == "Deployment":
        strategy = spec.get("strategy") or {}
        if strategy.get("type") not in (None, "RollingUpdate", "Recreate"):
            out.append(unsupported("spec.strategy.type", strategy["type"], ("Recreate", "RollingUpdate")))
        ru = strategy.get("rollingUpdate")
        if strategy.get("type") == "Recreate" and ru:
            out.append(forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is "
                                 "'Recreate'"))
        if ru:
            for k in ("maxSurge", "maxUnavailable"):
                if k in ru and not _int_or_percent(ru[k]):
                    out.append(inv(f"spec.strategy.rollingUpdate.{k}", ru[k], "a valid percent string must be a "
                                   "numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for "
                                   "validation is '[0-9]+%')"))
            if str(ru.get("maxSurge", 1)) in ("0", "0%") and str(ru.get("maxUnavailable", 1)) in ("0", "0%"):
                out.append(inv("spec.strategy.rollingUpdate.maxUnavailable", ru.get("maxUnavailable"),
                               "may not be 0 when `maxSurge` is 0"))
        pds = spec.get("progressDeadlineSeconds")
        if isinstance(pds, int) and pds <= spec.get("minReadySeconds", 0):
            out.append(inv("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))
    if old is not None and spec.get("selector") != (old.get("spec") or {}).get("selector"):
        out.append(immutable("spec.selector", spec.get("selector")))


POD_FAILURE_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
MUTABLE_SCHEDULING = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _job(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    tmpl = spec.get("template") or {}
    pod = tmpl.get("spec") or {}
    out += _template_causes("spec.template", tmpl, ("OnFailure", "Never"))
    _nonneg(spec, "spec", ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"), out)
    _nonneg(spec, "spec", ("activeDeadlineSeconds",), out, positive=("activeDeadlineSeconds",))
    pfp = spec.get("podFailurePolicy")
    if pfp:
        if pod.get("restartPolicy") != "Never":
            out.append(inv("spec.template.spec.restartPolicy", pod.get("restartPolicy"), 'only "Never" is supported '
                           "when podFailurePolicy is specified"))
        rules = pfp.get("rules") or []
        if len(rules) > 20:
            out.append(("spec.podFailurePolicy.rules", "FieldValueTooMany", f"Too many: {len(rules)}: must have at "
                        "most 20 items"))
        for i, rule in enumerate(rules):
            rf = f"spec.podFailurePolicy.rules[{i}]"
            action = rule.get("action")
            if action not in POD_FAILURE_ACTIONS:
                out.append(unsupported(f"{rf}.action", action, POD_FAILURE_ACTIONS))
            elif action == "FailIndex" and spec.get("completionMode") != "Indexed":
                out.append(forbidden(f"{rf}.action", "The action FailIndex is only supported when completionMode "
                                     "is Indexed"))
            codes, conds = rule.get("onExitCodes"), rule.get("onPodConditions")
            if codes is not None and conds is not None:
                out.append(inv(rf, "object", "specifying both OnExitCodes and OnPodConditions is not supported"))
            elif codes is None and conds is None:
                out.append(inv(rf, "object", "specifying one of OnExitCodes and OnPodConditions is required"))
            if codes is not None:
                op = codes.get("operator")
                if op not in ("In", "NotIn"):
                    out.append(unsupported(f"{rf}.onExitCodes.operator", op, ("In", "NotIn")))
                values = codes.get("values") or []
                if not values:
                    out.append(inv(f"{rf}.onExitCodes.values", values, "at least one value is required"))
                if len(set(values)) != len(values):
                    out.append((f"{rf}.onExitCodes.values", "FieldValueDuplicate", "Duplicate value"))
                if values != sorted(values):
                    out.append(inv(f"{rf}.onExitCodes.values", values, "must be ordered"))
                if op == "In" and 0 in values:
                    out.append(inv(f"{rf}.onExitCodes.values", 0, "must not be 0 for the In operator"))
            for j, pc in enumerate(conds or []):
                if pc.get("status", "True") not in ("True", "False", "Unknown"):
                    out.append(unsupported(f"{rf}.onPodConditions[{j}].status", pc["status"],
                                           ("False", "True", "Unknown")))
                out += qualified_name_causes(f"{rf}.onPodConditions[{j}].type", pc.get("type") or "")
    if old is None:
        return
    ospec = old.get("spec") or {}
    for k in ("selector", "completions", "completionMode", "podFailurePolicy", "manualSelector"):
        if spec.get(k) != ospec.get(k):
            out.append(immutable(f"spec.{k}", spec.get(k)))
    if tmpl != ospec.get("template"):
        never_started = ospec.get("suspend") and not (old.get("status") or {}).get("startTime")
        a, b = dict(tmpl.get("spec") or {}), dict((ospec.get("template") or {}).get("spec") or {})
        for k in MUTABLE_SCHEDULING:
            a.pop(k, None)
            b.pop(k, None)
        if not never_started or a != b:
            out.append(immutable("spec.template", "object"))


POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")


def _pod(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    out += pod_spec_causes("spec", spec)
    if old is None:
        return
    a, b = dict(spec), dict(old.get("spec") or {})
    for k in POD_MUTABLE:
        a.pop(k, None)
        b.pop(k, None)
    for x in (a, b):
        x["containers"] = [{**c, "image": None} for c in x.get("containers") or []]
        x["initContainers"] = [{**c, "image": None} for c in x.get("initContainers") or []]
    if not b.get("nodeName"):
        a.pop("nodeName", None)
        b.pop("nodeName", None)
    if a != b:
        out.append(forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                             "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                             "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                             "set to 1 if it was previously negative)"))


def _service(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    t = spec.get("type", "ClusterIP")
    if t not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        out.append(unsupported("spec.type", t, ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")))
    ports = spec.get("ports") or []
    if not ports and t != "ExternalName" and spec.get("clusterIP") != "None":
        out.append(req("spec.ports"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        pf = f"spec.ports[{i}]"
        if len(ports) > 1 and not p.get("name"):
            out.append(req(f"{pf}.name"))
        if p.get("name"):
            out += name_causes(f"{pf}.name", p["name"], "dns1123label")
            if p["name"] in names:
                out.append((f"{pf}.name", "FieldValueDuplicate", f"Duplicate value: {_q(p['name'])}"))
            names.add(p["name"])
        port = p.get("port")
        if port is None:
            out.append(req(f"{pf}.port"))
        elif not 1 <= port <= 65535:
            out.append(inv(f"{pf}.port", port, "must be between 1 and 65535, inclusive"))
        tp = p.get("targetPort")
        if isinstance(tp, int) and not 1 <= tp <= 65535:
            out.append(inv(f"{pf}.targetPort", tp, "must be between 1 and 65535, inclusive"))
        elif isinstance(tp, str) and (len(tp) > 15 or not _IANA.match(tp) or not re.search("[a-z]", tp)):
            out.append(inv(f"{pf}.targetPort", tp, "must contain only alpha-numeric characters (a-z, 0-9), and "
                           "hyphens (-)"))
        if p.get("protocol") not in (None, "TCP", "UDP", "SCTP"):
            out.append(unsupported(f"{pf}.protocol", p["protocol"], ("SCTP", "TCP", "UDP")))
    out += label_causes("spec.selector", spec.get("selector"))
    if old is not None:
        oip = (old.get("spec") or {}).get("clusterIP")
        if oip and spec.get("clusterIP") not in (oip, None, ""):
            out.append(immutable("spec.clusterIP", spec.get("clusterIP")))


def _hpa(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    for k in ("kind", "name"):
        if not ref.get(k):
            out.append(req(f"spec.scaleTargetRef.{k}"))
    mn, mx = spec.get("minReplicas"), spec.get("maxReplicas")
    if isinstance(mn, int) and mn < 1:
        out.append(inv("spec.minReplicas", mn, "must be greater than or equal to 1"))
    if isinstance(mx, int) and mx < 1:
        out.append(inv("spec.maxReplicas", mx, "must be greater than 0"))
    if isinstance(mn, int) and isinstance(mx, int) and mx < mn:
        out.append(inv("spec.maxReplicas", mx, "must be greater than or equal to `minReplicas`"))
    types = {"Object": "object", "Pods": "pods", "Resource": "resource", "ContainerResource": "containerResource",
             "External": "external"}
    for i, m in enumerate(spec.get("metrics") or []):
        mf = f"spec.metrics[{i}]"
        t = m.get("type")
        if t not in types:
            out.append(unsupported(f"{mf}.type", t, tuple(sorted(types))))
            continue
        body = m.get(types[t])
        if not body:
            out.append(req(f"{mf}.{types[t]}"))
            continue
        target = body.get("target") or {}
        tt = target.get("type")
        if tt not in ("Utilization", "Value", "AverageValue"):
            out.append(unsupported(f"{mf}.{types[t]}.target.type", tt, ("AverageValue", "Utilization", "Value")))
        else:
            field = {"Utilization": "averageUtilization", "Value": "value", "AverageValue": "averageValue"}[tt]
            if target.get(field) is None:
                out.append(req(f"{mf}.{types[t]}.target.{field}"))
        if t in ("Pods", "Object", "External") and not (body.get("metric") or {}).get("name"):
            out.append(req(f"{mf}.{types[t]}.metric.name"))
    for direction in ("scaleUp", "scaleDown"):
        rules = (spec.get("behavior") or {}).get(direction)
        if not rules:
            continue
        bf = f"spec.behavior.{direction}"
        sw = rules.get("stabilizationWindowSeconds")
        if isinstance(sw, int) and not 0 <= sw <= 3600:
            out.append(inv(f"{bf}.stabilizationWindowSeconds", sw, "must be less than or equal to 3600"))
        if rules.get("selectPolicy") not in (None, "Max", "Min", "Disabled"):
            out.append(unsupported(f"{bf}.selectPolicy", rules["selectPolicy"], ("Disabled", "Max", "Min")))
        for j, p in enumerate(rules.get("policies") or []):
            pf = f"{bf}.policies[{j}]"
            if p.get("type") not in ("Pods", "Percent"):
                out.append(unsupported(f"{pf}.type", p.get("type"), ("Percent", "Pods")))
            if (p.get("value") or 0) <= 0:
                out.append(inv(f"{pf}.value", p.get("value"), "must be greater than zero"))
            if not 0 < (p.get("periodSeconds") or 0) <= 1800:
                out.append(inv(f"{pf}.periodSeconds", p.get("periodSeconds"), "must be greater than zero and less "
                               "than or equal to 1800"))


def _pdb(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        out.append(inv("spec", "object", "minAvailable and maxUnavailable cannot be both set"))
    for k in ("minAvailable", "maxUnavailable"):
        v = spec.get(k)
        if v is None:
            continue
        if not _int_or_percent(v):
            out.append(inv(f"spec.{k}", v, "a valid percent string must be a numeric string followed by an ending "
                           "'%'"))
        elif isinstance(v, str) and int(v[:-1]) > 100:
            out.append(inv(f"spec.{k}", v, "must not be greater than 100%"))
        elif isinstance(v, int) and v < 0:
            out.append(inv(f"spec.{k}", v, "must be greater than or equal to 0"))
    pol = spec.get("unhealthyPodEvictionPolicy")
    if pol not in (None, "IfHealthyBudget", "AlwaysAllow"):
        out.append(unsupported("spec.unhealthyPodEvictionPolicy", pol, ("AlwaysAllow", "IfHealthyBudget")))
    out += selector_causes("spec.selector", spec.get("selector"))


def _priority_class(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    v = obj.get("value")
    if not isinstance(v, int):
        out.append(req("value"))
    elif v > 1_000_000_000 and not obj["metadata"]["name"].startswith("system-"):
        out.append(forbidden("value", "maximum allowed value of a user defined priority is 1000000000"))
    if obj.get("preemptionPolicy") not in (None, "Never", "PreemptLowerPriority"):
        out.append(unsupported("preemptionPolicy", obj["preemptionPolicy"], ("Never", "PreemptLowerPriority")))
    if old is not None:
        for k in ("value", "preemptionPolicy"):
            if obj.get(k) != old.get(k):
                out.append(immutable(k, obj.get(k)))


def _binding(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    ref = obj.get("roleRef") or {}
    kinds = ("Role", "ClusterRole") if obj["kind"] == "RoleBinding" else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        out.append(unsupported("roleRef.kind", ref.get("kind"), kinds))
    if ref.get("apiGroup") != "rbac.authorization.k8s.io":
        out.append(unsupported("roleRef.apiGroup", ref.get("apiGroup"), ("rbac.authorization.k8s.io",)))
    for i, s in enumerate(obj.get("subjects") or []):
        if s.get("kind") not in ("ServiceAccount", "User", "Group"):
            out.append(unsupported(f"subjects[{i}].kind", s.get("kind"), ("Group", "ServiceAccount", "User")))
        if s.get("kind") == "ServiceAccount" and obj["kind"] == "ClusterRoleBinding" and not s.get("namespace"):
            out.append(req(f"subjects[{i}].namespace"))
    if old is not None and obj.get("roleRef") != old.get("roleRef"):
        out.append(inv("roleRef", "object", "cannot change roleRef"))


def _cidr(field: str, value: Any, out: list[Cause]) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        out.append(inv(field, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
        return None


def _np_port(field: str, p: Obj, out: list[Cause]) -> None:
    if p.get("protocol") not in (None, "TCP", "UDP", "SCTP"):
        out.append(unsupported(f"{field}.protocol", p["protocol"], ("SCTP", "TCP", "UDP")))
    port, end = p.get("port"), p.get("endPort")
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            out.append(inv(f"{field}.port", port, "must be between 1 and 65535, inclusive"))
        if end is not None:
            if end < port:
                out.append(inv(f"{field}.endPort", port, "must be greater than or equal to `port`"))
            if not 1 <= end <= 65535:
                out.append(inv(f"{field}.endPort", end, "must be between 1 and 65535, inclusive"))
    elif isinstance(port, str):
        if end is not None:
            out.append(inv(f"{field}.endPort", end, "may not be specified when `port` is non-numeric"))
        if len(port) > 15 or not _IANA.match(port) or not re.search("[a-z]", port) or "--" in port:
            out.append(inv(f"{field}.port", port, "must contain only alpha-numeric characters (a-z, 0-9), and "
                           "hyphens (-)"))
    elif end is not None:
        out.append(inv(f"{field}.endPort", end, "may not be specified when `port` is not specified"))


def _np_peer(field: str, peer: Obj, out: list[Cause]) -> None:
    n = 0
    for key in ("podSelector", "namespaceSelector"):
        if peer.get(key) is not None:
            n += 1
            out.extend(selector_causes(f"{field}.{key}", peer[key]))
    block = peer.get("ipBlock")
    if block is not None:
        n += 1
        # ValidateIPBlock: a CIDR, and every `except` a strict subset of it (same family, longer prefix)
        if not block.get("cidr"):
            out.append(req(f"{field}.ipBlock.cidr"))
        else:
            net = _cidr(f"{field}.ipBlock.cidr", block["cidr"], out)
            for i, e in enumerate(block.get("except") or []):
                ef = f"{field}.ipBlock.except[{i}]"
                ex = _cidr(ef, e, out)
                if net is not None and ex is not None and (
                        ex.version != net.version or ex.network_address not in net or ex.prefixlen <= net.prefixlen):
                    out.append(inv(ef, e, "must be a strict subset of `cidr`"))
    if n == 0:
        out.append((field, "FieldValueRequired", "Required value: must specify a peer"))
    elif n > 1 and block is not None:
        out.append(forbidden(field, "may not specify both podSelector/namespaceSelector and ipBlock"))


def _network_policy(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    """pkg/apis/networking/validation ValidateNetworkPolicySpec: selectors, peers, ports, ipBlocks, policyTypes."""
    spec = obj.get("spec") or {}
    out.extend(selector_causes("spec.podSelector", spec.get("podSelector")))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, p in enumerate(rule.get("ports") or []):
                _np_port(f"spec.{direction}[{i}].ports[{j}]", p, out)
            for j, peer in enumerate(rule.get(peers) or []):
                _np_peer(f"spec.{direction}[{i}].{peers}[{j}]", peer, out)
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        out.append(inv("spec.policyTypes", types, "may not specify more than two policyTypes"))
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            out.append(unsupported(f"spec.policyTypes[{i}]", t, ("Egress", "Ingress")))


def _config_map(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    for k in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
        if len(k) > 253 or not _CONFIG_KEY.match(k):
            out.append(inv("data", k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                           "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                           "'[-._a-zA-Z0-9]+')"))


def _crd(obj: Obj, old: Obj | None, out: list[Cause]) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    want = f"{names.get('plural')}.{spec.get('group')}"
    if obj["metadata"].get("name") != want:
        out.append(inv("metadata.name", obj["metadata"].get("name"), "must be spec.names.plural+\".\"+spec.group"))
    versions = spec.get("versions") or []
    if sum(bool(v.get("storage")) for v in versions) != 1:
        out.append(inv("spec.versions", "array", "must have exactly one version marked as storage version"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        out.append(unsupported("spec.scope", spec.get("scope"), ("Cluster", "Namespaced")))
    if old is not None and spec.get("scope") != (old.get("spec") or {}).get("scope"):
        out.append(immutable("spec.scope", spec.get("scope")))


KIND_RULES = {"Deployment": _workload, "ReplicaSet": _workload, "Job": _job, "Pod": _pod, "Service": _service,
              "HorizontalPodAutoscaler": _hpa, "PodDisruptionBudget": _pdb, "PriorityClass": _priority_class,
              "RoleBinding": _binding, "ClusterRoleBinding": _binding, "ConfigMap": _config_map,
              "NetworkPolicy": _network_policy, "CustomResourceDefinition": _crd}


# ---- the pipeline ----

def decode(res: Resource, obj: Obj, version: str, field_validation: str, warnings: list[str],
           status_only: bool = False, newer: frozenset[str] = frozenset()) -> None:
    """Schema step, in place: 400 for undecodable values, unknown fields dropped (Warn/Ignore) or 400 (Strict)."""
    if obj.get("kind") not in (None, res.kind) or obj.get("apiVersion") not in (None, *[
            f"{res.group}/{v}" if res.group else v for v in res.served()]):
        raise bad_request(f"the object provided is unrecognized ({obj.get('apiVersion')}, Kind={obj.get('kind')}): "
                          f"expected {res.api_version}, Kind={res.kind}")
    unknown: list[str] = []
    if res.custom:
        schema = (res.schemas or {}).get(res.version) or {}
        Validator(schema).prepare(obj, unknown)
    else:
        def_name = openapi.definition(version, res.group, res.version, res.kind)
        if def_name:
            findings = openapi.Findings()
            openapi.check(version, def_name, obj, findings, extra=newer)
            if findings.decode:
                raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                                  f"{findings.decode[0]}")
            unknown = findings.unknown
    if status_only:
        unknown = [u for u in unknown if u.startswith("status")]
    if not unknown:
        return
    if field_validation == "Strict":
        msg = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: strict '
                          f"decoding error: {msg}")
    if field_validation != "Ignore":
        warnings.extend(f'unknown field "{u}"' for u in unknown)


def validate(res: Resource, obj: Obj, old: Obj | None, version: str, newer: frozenset[str] = frozenset()) -> None:
    """422 Invalid with every cause, as the apiserver aggregates them."""
    meta = obj.get("metadata") or {}
    causes: list[Cause] = metadata_causes(res, meta)
    if res.namespaced and res.kind != "Event" and not meta.get("namespace"):
        causes.append(req("metadata.namespace"))
    if res.custom:
        schema = (res.schemas or {}).get(res.version) or {}
        causes += Validator(schema).validate(obj)
    else:
        def_name = openapi.definition(version, res.group, res.version, res.kind)
        if def_name:
            findings = openapi.Findings()
            openapi.check(version, def_name, obj, findings, prune=False, extra=newer)
            causes += [req(p) for p in findings.required if not p.startswith("status")]
        rule = KIND_RULES.get(res.kind)
        if rule:
            rule(obj, old, causes)
    if causes:
        seen, unique = set(), []
        for c in causes:
            if c not in seen:
                seen.add(c)
                unique.append(c)
        raise invalid(res, meta.get("name") or "", unique)

