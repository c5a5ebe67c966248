"""Built-in kinds against the official OpenAPI of one Kubernetes version (``kubernetes-validate``).

What the apiserver does when it decodes a request body into its Go types, reproduced on the JSON:

* a value of the wrong JSON type cannot be decoded: 400 BadRequest
  (``json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32``);
* a field the type does not declare is an *unknown field*: dropped, with a ``Warning`` header under
  the default field validation (Warn), a 400 under ``fieldValidation=Strict``, silently under Ignore
  (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation);
* resource quantities must parse (400 otherwise) and are stored in canonical string form;
* the fields the OpenAPI marks required are reported for the 422 validation step.

The parsed definitions are cached per version; only what is written is walked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

DEFAULT_VERSION = "1.33"
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_QTY_DEF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INTSTR_DEF = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@dataclass
class Findings:
    decode: list[str] = field(default_factory=list)  # → 400
    unknown: list[str] = field(default_factory=list)  # dropped paths
    required: list[str] = field(default_factory=list)  # → 422 Required value


@cache
def _defs(version: str) -> dict[str, Any]:
    import importlib.resources

    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    with root.joinpath(f"v{version}.0-local-strict", "_definitions.json").open() as f:
        return json.load(f)["$defs"]


@cache
def _gvk(version: str) -> dict[tuple[str, str, str], str]:
    out = {}
    for name, d in _defs(version).items():
        for g in d.get("x-kubernetes-group-version-kind") or []:
            out[(g["group"], g["version"], g["kind"])] = name
    return out


def definition(version: str, group: str, api_version: str, kind: str) -> str | None:
    return _gvk(version).get((group, api_version, kind))


def check(version: str, def_name: str, obj: dict[str, Any], findings: Findings, prune: bool = True,
          extra: frozenset[str] = frozenset()) -> None:
    """Walk ``obj`` (in place: unknown fields removed when ``prune``) against its definition.

    ``extra``: field paths (list indices written ``[]``) a newer server would know; kept as they are.
    """
    defs = _defs(version)
    _walk(defs, {"$ref": f"#/$defs/{def_name}"}, obj, "", def_name.rsplit(".", 1)[-1], findings, prune, extra)


_INDEX = re.compile(r"\[\d+\]")


def _resolve(defs: dict, schema: dict) -> tuple[dict, str | None]:
    ref = schema.get("$ref")
    if not ref:
        return schema, None
    name = ref.rsplit("/", 1)[-1]
    return defs[name], name


def _types(schema: dict) -> set[str]:
    t = schema.get("type")
    return set(t) if isinstance(t, list) else {t} if t else set()


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_type(defs: dict, schema: dict) -> str:
    s, name = _resolve(defs, schema)
    t = _types(s) - {"null"}
    if name and "object" in t and s.get("properties") is not None:
        parts = name.split(".")
        return f"{parts[-2]}.{parts[-1]}"
    if "integer" in t:
        return s.get("format") or "int64"
    if "number" in t:
        return "float64"
    if "boolean" in t:
        return "bool"
    if "string" in t:
        return "string"
    if "array" in t:
        return "[]" + _go_type(defs, s.get("items") or {})
    if "object" in t and isinstance(s.get("additionalProperties"), dict):
        return "map[string]" + _go_type(defs, s["additionalProperties"])
    return "interface {}"


def canonical_quantity(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == int(value):
            return str(int(value))
        milli = value * 1000
        if milli == int(milli):
            return f"{int(milli)}m"
        return repr(value)
    if isinstance(value, str) and _QUANTITY.match(value.strip()) and value.strip():
        return value.strip()
    raise ValueError


def _walk(defs: dict, schema: dict, value: Any, path: str, owner: str, f: Findings, prune: bool,
          extra: frozenset[str] = frozenset()) -> Any:
    """Returns the value to store (quantities canonicalised); records problems in ``f``."""
    newer = extra
    s, name = _resolve(defs, schema)
    if value is None:
        return None
    if name == _QTY_DEF:
        try:
            return canonical_quantity(value)
        except ValueError:
            f.decode.append(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]"
                            f"?[0-9]*)$' (at {path or '.'}: {value!r})")
            return value
    if name == _INTSTR_DEF:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            f.decode.append(f"json: cannot unmarshal {_json_type(value)} into Go struct field {owner}.{path} of "
                            "type intstr.IntOrString")
        return value
    if name and name.endswith((".JSON", ".RawExtension", ".FieldsV1")):
        return value
    types = _types(s) - {"null"}
    if "oneOf" in s or not types:
        return value  # free-form
    ok = (("object" in types and isinstance(value, dict)) or ("array" in types and isinstance(value, list))
          or ("string" in types and isinstance(value, str)) or ("boolean" in types and isinstance(value, bool))
          or ("integer" in types and isinstance(value, int) and not isinstance(value, bool))
          or ("number" in types and isinstance(value, (int, float)) and not isinstance(value, bool)))
    if not ok:
        f.decode.append(f"json: cannot unmarshal {_json_type(value)} into Go struct field {owner}.{path} of type "
                        f"{_go_type(defs, schema)}")
        return value
    if "integer" in types and s.get("format") == "int32" and not -(2**31) <= value < 2**31:
        f.decode.append(f"json: cannot unmarshal number {value} into Go struct field {owner}.{path} of type int32")
        return value
    if isinstance(value, dict):
        props = s.get("properties")
        extra = s.get("additionalProperties")
        if name and props is not None:
            owner = name.rsplit(".", 1)[-1]
        for key in list(value):
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                value[key] = _walk(defs, props[key], value[key], sub, owner, f, prune, newer)
            elif isinstance(extra, dict):
                value[key] = _walk(defs, extra, value[key], sub, owner, f, prune, newer)
            elif newer and _INDEX.sub("[]", sub) in newer:
                continue
            elif props is not None and extra is False:
                f.unknown.append(sub)
                if prune:
                    del value[key]
        for req in s.get("required") or ():
            if value.get(req) is None:
                f.required.append(f"{path}.{req}" if path else req)
    elif isinstance(value, list) and s.get("items"):
        for i, item in enumerate(value):
            value[i] = _walk(defs, s["items"], item, f"{path}[{i}]", owner, f, prune, newer)
    return value
