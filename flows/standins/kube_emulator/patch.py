"""The four PATCH flavours and server-side apply's field ownership.

* JSON merge patch (RFC 7386): maps merge, ``null`` deletes, lists are replaced.
* Strategic merge patch: like merge patch, but lists of objects merge by their patch merge key
  (containers/env/volumes by ``name``, container ports by ``containerPort``, …); ``$patch: delete`` /
  ``$patch: replace``, ``$deleteFromPrimitiveList/…`` and ``$setElementOrder/…`` are understood.
  Lists without a merge key (``tolerations``, ``args``, …) are replaced, as in Kubernetes.
* JSON patch (RFC 6902) via ``jsonpatch``.
* Server-side apply: the applied config is merged strategically; ``metadata.managedFields`` records
  which manager owns which leaf (in real ``FieldsV1`` form) and a change to a field another
  manager owns is a 409 Conflict unless ``force``. Fields a manager stops applying are removed
  when nobody else owns them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "conditions": "type", "hostAliases": "ip", "topologySpreadConstraints": "topologyKey",
    "ownerReferences": "uid", "resourceClaims": "name", "readinessGates": "conditionType",
}
PRIMITIVE_SETS = {"finalizers"}  # lists of scalars with patchStrategy=merge
_CONTAINERS = {"containers", "initContainers", "ephemeralContainers"}


def merge_key(field: str, parent: str | None) -> str | None:
    if field == "ports":
        return "containerPort" if parent in _CONTAINERS else "port"
    return MERGE_KEYS.get(field)


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge(target: Any, patch: Any, parent: str | None = None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith(("$setElementOrder/", "$retainKeys")):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, k, parent)
        else:
            merged = strategic_merge(out.get(k), v, k)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
    return out


def _merge_list(current: Any, patch: list, field: str, parent: str | None) -> list:
    current = current if isinstance(current, list) else []
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    if field in PRIMITIVE_SETS:
        return current + [x for x in patch if x not in current]
    key = merge_key(field, parent)
    if key is None or not all(isinstance(x, dict) for x in patch):
        return copy.deepcopy(patch)
    out = [copy.deepcopy(x) for x in current]
    for item in patch:
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge({}, item, field))
        else:
            out[idx] = strategic_merge(out[idx], item, field)
    return out


def json_patch(target: dict, ops: list) -> dict:
    """Raises ``jsonpatch.JsonPatchException`` / ``JsonPointerException`` on a bad or failed patch."""
    return jsonpatch.apply_patch(target, ops)


# ---- server-side apply: leaf paths ↔ FieldsV1 ----

Path = tuple[str, ...]
_IGNORED_META = {"managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
                 "deletionTimestamp", "selfLink"}


def leaf_paths(obj: Any, field: str | None = None, holder: str | None = None,
               prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf of ``obj`` as a FieldsV1-style path (``f:spec``, ``k:{"name":"x"}``) → its value.

    ``field`` is the name ``obj`` sits under, ``holder`` the name of the object holding that field.
    """
    out: dict[Path, Any] = {}
    key = merge_key(field, holder) if field else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix == ("f:metadata",) and k in _IGNORED_META or prefix == () and k in ("apiVersion", "kind"):
                continue
            out.update(leaf_paths(v, k, field, (*prefix, f"f:{k}")))
        if not obj and prefix:
            out[prefix] = {}
    elif isinstance(obj, list) and key and all(isinstance(x, dict) for x in obj):
        for item in obj:
            kp = f"k:{json.dumps({key: item.get(key)}, separators=(',', ':'))}"
            out.update(leaf_paths(item, field, holder, (*prefix, kp)))
    else:
        out[prefix] = obj
    return out


def to_fields_v1(paths: set[Path] | list[Path]) -> dict:
    root: dict = {}
    for p in sorted(paths):
        node = root
        for part in p:
            node = node.setdefault(part, {})
        node["."] = {}
    return root


def from_fields_v1(fields: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in fields.items():
        if k == ".":
            out.add(prefix)
        else:
            out |= from_fields_v1(v, (*prefix, k))
    return out


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    cur = obj
    for part in path:
        kind, name = part[:2], part[2:]
        if kind == "f:" and isinstance(cur, dict) and name in cur:
            cur = cur[name]
        elif kind == "k:" and isinstance(cur, list):
            (k, v), = json.loads(name).items()
            cur = next((x for x in cur if isinstance(x, dict) and x.get(k) == v), _MISSING)
            if cur is _MISSING:
                return False, None
        else:
            return False, None
    return True, cur


def delete_path(obj: Any, path: Path) -> None:
    if not path:
        return
    ok, parent = get_path(obj, path[:-1])
    if not ok:
        return
    kind, name = path[-1][:2], path[-1][2:]
    if kind == "f:" and isinstance(parent, dict):
        parent.pop(name, None)
    elif kind == "k:" and isinstance(parent, list):
        (k, v), = json.loads(name).items()
        parent[:] = [x for x in parent if not (isinstance(x, dict) and x.get(k) == v)]


_MISSING = object()
