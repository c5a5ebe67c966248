"""Custom resources against their CRD's structural ``openAPIV3Schema``, as the apiextensions-apiserver does.

https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/

* pruning: fields the schema does not declare are dropped (unless ``x-kubernetes-preserve-unknown-fields``),
  reported as unknown fields (Warning header, or 400 under ``fieldValidation=Strict``);
* ``null`` on a non-nullable field is pruned, then defaults are applied (structural defaulting);
* validation → 422: types, ``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``,
  ``minItems``/``maxItems``, ``required``, ``x-kubernetes-list-type`` map/set uniqueness,
  ``allOf``/``anyOf``/``oneOf``/``not``, and ``x-kubernetes-validations`` CEL rules (``cel-python``; rules
  that use ``oldSelf`` or functions it lacks are skipped and listed in ``SKIPPED_RULES``).

The upstream CRDs are read from ``INFEROPS_K8S_CRDS`` or ``<repo>/../shared/k8s-crds``; parsed once.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from functools import cache
from pathlib import Path
from typing import Any

import yaml

Cause = tuple[str, str, str]  # (field, reason, message)
SKIPPED_RULES: set[str] = set()
_CEL_LOCK = threading.Lock()


def crd_dir() -> Path:
    """Where the upstream CRDs are read from (never copied into the repository).

    ``INFEROPS_K8S_CRDS`` if set; else ``../shared/k8s-crds`` beside the checkout; else, for a clone of a
    local checkout (CI clones ``main`` elsewhere), ``../shared/k8s-crds`` beside the clone's origin.
    """
    env = os.environ.get("INFEROPS_K8S_CRDS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    beside = repo.parent / "shared" / "k8s-crds"
    if beside.is_dir():
        return beside
    origin = _local_origin(repo)
    if origin is not None and (origin.parent / "shared" / "k8s-crds").is_dir():
        return origin.parent / "shared" / "k8s-crds"
    return beside


def _local_origin(repo: Path) -> Path | None:
    """The checkout a local clone was made from (``remote.origin.url`` is a path), or None."""
    import subprocess

    try:
        url = subprocess.run(["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url or ":" in url.split("/")[0]:
        return None  # a remote URL (https://, ssh, host:path): nothing local beside it
    path = (repo / url).resolve() if not url.startswith("/") else Path(url)
    return path if path.is_dir() else None


@cache
def _load(path: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as f:
        return yaml.load(f, Loader=loader)


def upstream_crds(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """``<plural>.<group>`` → the CRD, for every file in the CRD folder."""
    d = directory or crd_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"no CRD folder at {d} (set INFEROPS_K8S_CRDS)")
    out = {}
    for f in sorted(d.glob("*.yaml")):
        crd = _load(str(f))
        if isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition":
            out[crd["metadata"]["name"]] = crd
    return out


def _types_ok(schema: dict, v: Any) -> bool:
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(v, (int, str)) and not isinstance(v, bool)
    if not t:
        return True
    return {"object": isinstance(v, dict), "array": isinstance(v, list), "string": isinstance(v, str),
            "boolean": isinstance(v, bool), "integer": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, (int, float)) and not isinstance(v, bool)}.get(t, True)


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), "null")


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (str, int, float, bool)) or v is None else f'"{_type_name(v)}"'


@cache
def _pattern(p: str) -> re.Pattern:
    return re.compile(p)


class Validator:
    """One CRD version's schema: ``prepare`` prunes and defaults, ``validate`` returns causes."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    # ---- pruning and defaulting ----
    def prune(self, obj: dict[str, Any]) -> None:
        """Pruning alone (server-side apply's applied configuration must not gain defaults)."""
        self._no_defaults = True
        try:
            self.prepare(obj, [])
        finally:
            self._no_defaults = False

    _no_defaults = False

    def prepare(self, obj: dict[str, Any], unknown: list[str]) -> None:
        root = {k: v for k, v in self.schema.items()}
        props = dict(root.get("properties") or {})
        for k in ("apiVersion", "kind", "metadata"):
            props.pop(k, None)
        for key in list(obj):
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                obj[key] = self._prepare(props[key], obj[key], key, unknown, obj, key)
            elif not root.get("x-kubernetes-preserve-unknown-fields"):
                unknown.append(key)
                del obj[key]
        self._defaults(props, obj)

    def _defaults(self, props: dict, obj: dict) -> None:
        if self._no_defaults:
            return
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = self._prepare(sub, copy.deepcopy(sub["default"]), key, [], obj, key)

    def _prepare(self, s: dict, v: Any, path: str, unknown: list[str], parent: Any, key: Any) -> Any:
        if isinstance(v, dict) and (s.get("type") == "object" or "properties" in s):
            props = s.get("properties")
            extra = s.get("additionalProperties")
            preserve = s.get("x-kubernetes-preserve-unknown-fields") or s.get("x-kubernetes-embedded-resource")
            for k in list(v):
                sub = f"{path}.{k}"
                if props and k in props:
                    if v[k] is None and not props[k].get("nullable"):
                        del v[k]
                        continue
                    v[k] = self._prepare(props[k], v[k], sub, unknown, v, k)
                elif isinstance(extra, dict):
                    v[k] = self._prepare(extra, v[k], sub, unknown, v, k)
                elif extra is True or preserve:
                    continue
                else:
                    unknown.append(sub)
                    del v[k]
            if props:
                self._defaults(props, v)
        elif isinstance(v, list) and isinstance(s.get("items"), dict):
            for i, item in enumerate(v):
                v[i] = self._prepare(s["items"], item, f"{path}[{i}]", unknown, v, i)
        return v

    # ---- validation ----
    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        props = {k: v for k, v in (self.schema.get("properties") or {}).items()
                 if k not in ("apiVersion", "kind", "metadata")}
        for key, sub in props.items():
            if key in obj:
                self._check(sub, obj[key], key, causes)
        for req in self.schema.get("required") or ():
            if req not in obj and req not in ("apiVersion", "kind", "metadata"):
                causes.append((req, "FieldValueRequired", "Required value"))
        if not causes:
            self._cel(self.schema, {k: v for k, v in obj.items() if k != "status"}, "", causes)
        return causes

    def _check(self, s: dict, v: Any, path: str, causes: list[Cause]) -> None:
        if v is None:
            if not s.get("nullable"):
                causes.append((path, "FieldValueInvalid", f'Invalid value: "null": {path} in body must be of type '
                               f'{s.get("type", "object")}: "null"'))
            return
        if not _types_ok(s, v):
            causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(_type_name(v))}: {path} in body must "
                           f"be of type {s.get('type')}: {_show(_type_name(v))}"))
            return
        if "enum" in s and v not in s["enum"]:
            causes.append((path, "FieldValueNotSupported", f"Unsupported value: {_show(v)}: supported values: "
                           + ", ".join(_show(e) for e in s["enum"])))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "minimum" in s and (v < s["minimum"] or (s.get("exclusiveMinimum") and v == s["minimum"])):
                causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body should be greater "
                               f"than or equal to {s['minimum']}"))
            if "maximum" in s and (v > s["maximum"] or (s.get("exclusiveMaximum") and v == s["maximum"])):
                causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body should be less "
                               f"than or equal to {s['maximum']}"))
        if isinstance(v, str):
            if "maxLength" in s and len(v) > s["maxLength"]:
                causes.append((path, "FieldValueTooLong", f"Too long: may not be more than {s['maxLength']} bytes"))
            if "minLength" in s and len(v) < s["minLength"]:
                causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body should be at "
                               f"least {s['minLength']} chars long"))
            if "pattern" in s and not _pattern(s["pattern"]).search(v):
                causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body should match "
                               f"'{s['pattern']}'"))
        if isinstance(v, list):
            if "maxItems" in s and len(v) > s["maxItems"]:
                causes.append((path, "FieldValueTooMany", f"Too many: {len(v)}: must have at most {s['maxItems']} "
                               "items"))
            if "minItems" in s and len(v) < s["minItems"]:
                causes.append((path, "FieldValueInvalid", f"Invalid value: {len(v)}: {path} in body should have at "
                               f"least {s['minItems']} items"))
            lt = s.get("x-kubernetes-list-type")
            if lt in ("set", "map"):
                keys = s.get("x-kubernetes-list-map-keys") or []
                seen = set()
                for i, item in enumerate(v):
                    k = json.dumps([item.get(x) for x in keys] if lt == "map" and isinstance(item, dict) else item,
                                   sort_keys=True)
                    if k in seen:
                        causes.append((f"{path}[{i}]", "FieldValueDuplicate", f"Duplicate value: {_show(item)}"))
                    seen.add(k)
            if isinstance(s.get("items"), dict):
                for i, item in enumerate(v):
                    self._check(s["items"], item, f"{path}[{i}]", causes)
        if isinstance(v, dict):
            props = s.get("properties") or {}
            for k, item in v.items():
                if k in props:
                    self._check(props[k], item, f"{path}.{k}", causes)
                elif isinstance(s.get("additionalProperties"), dict):
                    self._check(s["additionalProperties"], item, f"{path}.{k}", causes)
            for req in s.get("required") or ():
                if req not in v:
                    causes.append((f"{path}.{req}", "FieldValueRequired", "Required value"))
            if "maxProperties" in s and len(v) > s["maxProperties"]:
                causes.append((path, "FieldValueTooMany", f"Too many: {len(v)}: must have at most "
                               f"{s['maxProperties']} items"))
            if "minProperties" in s and len(v) < s["minProperties"]:
                causes.append((path, "FieldValueInvalid", f"Invalid value: {len(v)}: {path} in body should have at "
                               f"least {s['minProperties']} properties"))
        for sub in s.get("allOf") or ():
            self._check(sub, v, path, causes)
        if s.get("anyOf") and not any(self._passes(sub, v, path) for sub in s["anyOf"]):
            causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body must match at least "
                           "one schema in anyOf"))
        if s.get("oneOf") and sum(self._passes(sub, v, path) for sub in s["oneOf"]) != 1:
            causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body must match exactly "
                           "one schema in oneOf"))
        if s.get("not") and self._passes(s["not"], v, path):
            causes.append((path, "FieldValueInvalid", f"Invalid value: {_show(v)}: {path} in body must not match "
                           "the schema in not"))

    def _passes(self, s: dict, v: Any, path: str) -> bool:
        causes: list[Cause] = []
        sub = dict(s)
        if "type" not in sub:  # value-validation-only branches (structural schemas forbid types there)
            sub.pop("type", None)
        self._check(sub, v, path, causes)
        return not causes

    # ---- CEL ----
    def _cel(self, s: dict, v: Any, path: str, causes: list[Cause]) -> None:
        if v is None:
            return
        if isinstance(v, dict):
            props = s.get("properties") or {}
            for k, item in v.items():
                sub = props.get(k) if k in props else s.get("additionalProperties") \
                    if isinstance(s.get("additionalProperties"), dict) else None
                if sub:
                    self._cel(sub, item, f"{path}.{k}" if path else k, causes)
        elif isinstance(v, list) and isinstance(s.get("items"), dict):
            for i, item in enumerate(v):
                self._cel(s["items"], item, f"{path}[{i}]", causes)
        for rule in s.get("x-kubernetes-validations") or ():
            ok = _evaluate(rule["rule"], v)
            if ok is False:
                where = rule.get("fieldPath")
                field = f"{path}{where}" if where else path
                causes.append((field or "<root>", rule.get("reason") or "FieldValueInvalid",
                               f"Invalid value: {_show(_type_name(v))}: {rule.get('message') or 'failed rule: ' + rule['rule']}"))


@cache
def _program(rule: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


_RESULTS: dict[tuple[str, str], bool | None] = {}


def _evaluate(rule: str, value: Any) -> bool | None:
    """True/False, or None when the rule cannot be evaluated here (it is then skipped)."""
    if "oldSelf" in rule:
        SKIPPED_RULES.add(rule)
        return None
    key = (rule, json.dumps(value, sort_keys=True))
    if key in _RESULTS:
        return _RESULTS[key]
    with _CEL_LOCK:
        try:
            import celpy

            result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
            out = bool(result) if isinstance(result, (bool, celpy.celtypes.BoolType)) else None
        except Exception:  # a function cel-python lacks, or an error CEL would report: not ours to judge
            out = None
        if out is None:
            SKIPPED_RULES.add(rule)
        if len(_RESULTS) > 50000:
            _RESULTS.clear()
        _RESULTS[key] = out
        return out
