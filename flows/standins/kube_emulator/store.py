"""The object store: CRUD with the apiserver's semantics, resourceVersions, watch history, GC.

Thread-safe (one ``RLock``): the HTTP server, the controllers and the tests all use it. Objects are
plain JSON dicts; every read returns a deep copy.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.standins.kube_emulator import patch as P
from flows.standins.kube_emulator.errors import ApiError, already_exists, bad_request, conflict, not_found
from flows.standins.kube_emulator.resources import RESOURCES, Resource, lookup
from flows.standins.kube_emulator.validation import validate

Obj = dict[str, Any]
NAMESPACES, PRIORITY_CLASSES = lookup("", "namespaces"), lookup("scheduling.k8s.io", "priorityclasses")
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "managedFields",
                "resourceVersion", "selfLink")
_NAMES = itertools.count()


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    rv: int
    res: Resource
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None = None


@dataclass(eq=False)
class Watcher:
    res: Resource
    namespace: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def push(self, event: Event | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, history: int = 20000) -> None:
        self.lock = threading.RLock()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {r.key: {} for r in RESOURCES}
        self._rv = 0
        self._history: deque[Event] = deque()
        self._history_max = history
        self._compacted = 0
        self._watchers: set[Watcher] = set()

    # ---- reads ----
    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self._objects[res.key].get(self._k(res, namespace, name))
            if obj is None:
                raise not_found(res, name)
            return copy.deepcopy(obj)

    def find(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.get(res, namespace, name)
        except ApiError:
            return None

    def list(self, res: Resource, namespace: str | None = None,
             match: Callable[[Obj], bool] | None = None) -> list[Obj]:
        with self.lock:
            items = [o for (ns, _), o in sorted(self._objects[res.key].items())
                     if (namespace is None or ns == namespace) and (match is None or match(o))]
            return copy.deepcopy(items)

    def page(self, items: list[Obj], limit: int | None, token: str | None) -> tuple[list[Obj], str | None]:
        """``limit``/``continue`` paging over a sorted list; the token is the last key served."""
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token)))
            except ValueError:
                raise bad_request("continue key is not valid") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        if not limit or len(items) <= limit:
            return items, None
        last = items[limit - 1]["metadata"]
        tok = base64.urlsafe_b64encode(json.dumps([last.get("namespace", ""), last["name"]]).encode()).decode()
        return items[:limit], tok

    # ---- writes ----
    def create(self, res: Resource, obj: Obj, namespace: str | None = None, *, manager: str | None = None,
               operation: str = "Update") -> Obj:
        with self.lock:
            obj = copy.deepcopy(obj)
            obj["apiVersion"], obj["kind"] = res.api_version, res.kind
            meta = obj.setdefault("metadata", {})
            if res.namespaced:
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                meta["namespace"] = namespace or meta.get("namespace")
                if meta["namespace"] and self._k(NAMESPACES, None, meta["namespace"]) not in \
                        self._objects[NAMESPACES.key]:
                    raise not_found(NAMESPACES, meta["namespace"])
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            for k in _SYSTEM_META:
                meta.pop(k, None)
            self._default(res, obj, creating=True)
            if res.kind == "Pod":
                self._admit_priority(obj)
            validate(res, obj)
            key = self._k(res, meta.get("namespace"), meta["name"])
            if key in self._objects[res.key]:
                raise already_exists(res, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if res.generation:
                meta["generation"] = 1
            if res.kind == "Job":
                self._job_selector(obj)
            if manager:
                self._own(obj, manager, operation, set(P.leaf_paths(obj)), res)
            meta["resourceVersion"] = str(self._next_rv())
            self._objects[res.key][key] = obj
            self._emit("ADDED", res, obj)
            return copy.deepcopy(obj)

    def update(self, res: Resource, namespace: str | None, name: str, obj: Obj, *,
               subresource: str | None = None, manager: str | None = None) -> Obj:
        """PUT semantics: optimistic concurrency on ``metadata.resourceVersion`` when given."""
        with self.lock:
            current = self.get(res, namespace, name)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if (obj.get("metadata") or {}).get("name", name) != name:
                raise bad_request(f'the name of the object ({obj["metadata"]["name"]}) does not match the name '
                                  f"on the URL ({name})")
            return self._commit(res, current, obj, subresource, manager, "Update")

    def patch(self, res: Resource, namespace: str | None, name: str, content_type: str, body: Any, *,
              subresource: str | None = None, manager: str | None = None, force: bool = False) -> tuple[Obj, bool]:
        """→ (object, created). ``content_type`` picks the patch flavour; apply may create."""
        with self.lock:
            if content_type == "application/apply-patch+yaml":
                return self._apply(res, namespace, name, body, subresource, manager, force)
            if not isinstance(body, dict if content_type != "application/json-patch+json" else list):
                raise bad_request(f"invalid patch body for {content_type}")
            current = self.get(res, namespace, name)
            if content_type == "application/merge-patch+json":
                patched = P.merge_patch(current, body)
            elif content_type == "application/strategic-merge-patch+json":
                if res.custom:
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                   "format - accepted media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/apply-patch+yaml")
                patched = P.strategic_merge(current, body)
            elif content_type == "application/json-patch+json":
                try:
                    patched = P.json_patch(current, body)
                except Exception as exc:  # jsonpatch's errors: a failed "test", a missing path, …
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: {exc}") from None
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                               f"- {content_type}")
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            return self._commit(res, current, patched, subresource, manager, "Update"), False

    def delete(self, res: Resource, namespace: str | None, name: str, *, propagation: str | None = None,
               precondition_rv: str | None = None, precondition_uid: str | None = None) -> Obj:
        """→ the object as it was (or is, when finalizers hold it)."""
        with self.lock:
            current = self.get(res, namespace, name)
            meta = current["metadata"]
            if precondition_rv and precondition_rv != meta["resourceVersion"] or \
                    precondition_uid and precondition_uid != meta["uid"]:
                raise conflict(res, name, "the ResourceVersion/UID in the precondition does not match")
            if meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now()
                    meta["resourceVersion"] = str(self._next_rv())
                    old = self._objects[res.key][self._k(res, namespace, name)]
                    self._objects[res.key][self._k(res, namespace, name)] = current
                    self._emit("MODIFIED", res, current, old)
                return copy.deepcopy(current)
            self._remove(res, current, propagation)
            return current

    def reset(self) -> None:
        """Wipe every object; open watches end and older resourceVersions become 410 Gone."""
        with self.lock:
            for objs in self._objects.values():
                objs.clear()
            self._history.clear()
            self._compacted = self._rv
            for w in self._watchers:
                w.push(None)
            self._watchers.clear()

    # ---- watch ----
    def watch(self, res: Resource, namespace: str | None, since: str | None,
              loop: asyncio.AbstractEventLoop) -> tuple[list[Event], Watcher]:
        """Initial events (a snapshot as ADDED, or history after ``since``) and a live subscription."""
        with self.lock:
            if since in (None, "", "0"):
                initial = [Event(self._rv, res, "ADDED", copy.deepcopy(o))
                           for (ns, _), o in sorted(self._objects[res.key].items())
                           if namespace is None or ns == namespace]
            else:
                try:
                    rv = int(since)
                except ValueError:
                    raise bad_request(f"invalid resourceVersion {since!r}") from None
                if rv < self._compacted:
                    raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._compacted})")
                initial = [e for e in self._history if e.rv > rv and e.res is res and
                           (namespace is None or e.obj["metadata"].get("namespace") == namespace)]
            w = Watcher(res, namespace, loop)
            self._watchers.add(w)
            return initial, w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self._watchers.discard(w)

    # ---- internals ----
    @staticmethod
    def _k(res: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "" if res.namespaced else "", name)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _emit(self, type_: str, res: Resource, obj: Obj, old: Obj | None = None) -> None:
        ev = Event(int(obj["metadata"]["resourceVersion"]), res, type_, copy.deepcopy(obj),
                   copy.deepcopy(old) if old else None)
        self._history.append(ev)
        if len(self._history) > self._history_max:
            self._compacted = self._history.popleft().rv
        for w in self._watchers:
            if w.res is res and (w.namespace is None or obj["metadata"].get("namespace") == w.namespace):
                w.push(ev)

    def _commit(self, res: Resource, current: Obj, new: Obj, subresource: str | None, manager: str | None,
                operation: str, owned: set[P.Path] | None = None) -> Obj:
        name = current["metadata"]["name"]
        if subresource == "status":
            merged = copy.deepcopy(current)
            if "status" in new:
                merged["status"] = copy.deepcopy(new["status"])
            else:
                merged.pop("status", None)
        else:
            merged = copy.deepcopy(new)
            merged["apiVersion"], merged["kind"] = res.api_version, res.kind
            meta = merged.setdefault("metadata", {})
            for k in _SYSTEM_META:
                if k in current["metadata"]:
                    meta[k] = current["metadata"][k]
                else:
                    meta.pop(k, None)
            meta["name"] = name
            if res.namespaced:
                meta["namespace"] = current["metadata"]["namespace"]
            if "status" in res.subresources:
                if "status" in current:
                    merged["status"] = copy.deepcopy(current["status"])
                else:
                    merged.pop("status", None)
            self._default(res, merged, creating=False)
            validate(res, merged, old=current)
            if res.generation and _spec_part(merged) != _spec_part(current):
                merged["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if merged == current:
            return merged  # a no-op write does not bump the resourceVersion, as in Kubernetes
        if manager:
            if owned is None:
                before, after = P.leaf_paths(current), P.leaf_paths(merged)
                owned = {p for p, v in after.items() if before.get(p, P._MISSING) != v}
            self._own(merged, manager, operation, owned, res, replace=operation == "Apply")
        merged["metadata"]["resourceVersion"] = str(self._next_rv())
        self._objects[res.key][self._k(res, current["metadata"].get("namespace"), name)] = merged
        self._emit("MODIFIED", res, merged, current)
        if merged["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers"):
            self._remove(res, merged, None)
        return copy.deepcopy(merged)

    def _apply(self, res: Resource, namespace: str | None, name: str, body: Any, subresource: str | None,
               manager: str | None, force: bool) -> tuple[Obj, bool]:
        if not manager:
            raise bad_request("PATCH /apply requires fieldManager to be specified")
        if not isinstance(body, dict) or body.get("apiVersion") != res.api_version or body.get("kind") != res.kind:
            raise bad_request(f"apply: the body must be a {res.kind} of apiVersion {res.api_version}")
        if (body.get("metadata") or {}).get("name") != name:
            raise bad_request("apply: metadata.name must match the name on the URL")
        current = self.find(res, namespace, name)
        applied = set(P.leaf_paths(body))
        if current is None:
            return self.create(res, body, namespace, manager=manager, operation="Apply"), True
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        values = P.leaf_paths(body)
        existing = P.leaf_paths(current)
        entries = current["metadata"].get("managedFields") or []
        conflicts = []
        for e in entries:
            if e.get("manager") == manager and e.get("operation") == "Apply":
                continue
            theirs = P.from_fields_v1(e.get("fieldsV1") or {})
            for p in applied & theirs:
                if existing.get(p, P._MISSING) != values[p]:
                    conflicts.append((e.get("manager"), p))
        if conflicts and not force:
            desc = "; ".join(f'conflict with "{m}": .{".".join(x[2:] for x in p)}' for m, p in conflicts)
            raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {desc}",
                           {"name": name, "kind": res.plural, "group": res.group,
                            "causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                        "field": ".".join(x[2:] for x in p)} for m, p in conflicts]})
        merged = P.strategic_merge(current, body)
        mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"), None)
        dropped = (P.from_fields_v1(mine.get("fieldsV1") or {}) if mine else set()) - applied
        others = set().union(*(P.from_fields_v1(e.get("fieldsV1") or {}) for e in entries if e is not mine))
        for p in sorted(dropped - others, key=len, reverse=True):
            P.delete_path(merged, p)
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._commit(res, current, merged, subresource, manager, "Apply", owned=applied), False

    def _own(self, obj: Obj, manager: str, operation: str, paths: set[P.Path], res: Resource,
             replace: bool = False) -> None:
        """Give ``paths`` to ``manager``: taken from every other entry; Apply replaces its own set."""
        entries = []
        mine: set[P.Path] = set()
        for e in obj["metadata"].get("managedFields") or []:
            fields = P.from_fields_v1(e.get("fieldsV1") or {})
            if e.get("manager") == manager and e.get("operation") == operation:
                mine = set() if replace else fields
                continue
            fields -= paths
            if fields:
                entries.append({**e, "fieldsV1": P.to_fields_v1(fields)})
        mine |= paths
        if mine:
            entries.append({"manager": manager, "operation": operation, "apiVersion": res.api_version,
                            "time": now(), "fieldsType": "FieldsV1", "fieldsV1": P.to_fields_v1(mine)})
        obj["metadata"]["managedFields"] = entries

    def _remove(self, res: Resource, obj: Obj, propagation: str | None) -> None:
        meta = obj["metadata"]
        key = self._k(res, meta.get("namespace"), meta["name"])
        old = self._objects[res.key].pop(key, None)
        if old is None:
            return
        meta["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", res, obj, old)
        if res is NAMESPACES:
            for r in RESOURCES:
                if r.namespaced:
                    for o in [o for (ns, _), o in self._objects[r.key].items() if ns == meta["name"]]:
                        self._remove(r, copy.deepcopy(o), "Background")
        # batch/v1 Jobs orphan their pods by default over the API (kubectl passes Background)
        policy = propagation or ("Orphan" if res.kind == "Job" else "Background")
        for r in RESOURCES:
            for o in list(self._objects[r.key].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == meta["uid"] for ref in refs):
                    continue
                dep = copy.deepcopy(o)
                if policy == "Orphan":
                    dep["metadata"]["ownerReferences"] = [x for x in refs if x.get("uid") != meta["uid"]]
                    self._commit(r, o, dep, None, None, "Update")
                else:
                    self._remove(r, dep, "Background")

    def _admit_priority(self, pod: Obj) -> None:
        """The Priority admission plugin: ``priorityClassName`` → ``spec.priority``/``preemptionPolicy``."""
        spec = pod.get("spec") or {}
        name = spec.get("priorityClassName")
        if not name:
            spec.setdefault("priority", 0)
            return
        pc = self._objects[PRIORITY_CLASSES.key].get(("", name))
        if pc is None:
            raise ApiError(403, "Forbidden", f'pods "{pod["metadata"].get("name", "")}" is forbidden: no '
                           f"PriorityClass with name {name} was found")
        spec["priority"] = pc["value"]
        spec["preemptionPolicy"] = pc.get("preemptionPolicy", "PreemptLowerPriority")

    def _job_selector(self, job: Obj) -> None:
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        spec = job["spec"]
        labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                  "controller-uid": uid, "job-name": name}
        tmeta = spec["template"].setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}

    def _default(self, res: Resource, obj: Obj, creating: bool) -> None:
        """The few defaults clients commonly read back (as the apiserver sets them on every write)."""
        spec = obj.get("spec")
        _quantities_as_strings(obj)
        if res.kind == "Deployment" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                ru = strategy.setdefault("rollingUpdate", {})
                ru.setdefault("maxUnavailable", "25%")
                ru.setdefault("maxSurge", "25%")
            tspec = (spec.get("template") or {}).get("spec")
            if isinstance(tspec, dict):
                tspec.setdefault("restartPolicy", "Always")
        elif res.kind == "Job" and isinstance(spec, dict):
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("suspend", False)
            spec.setdefault("completionMode", "NonIndexed")
        elif res.kind == "Pod" and creating:
            obj.setdefault("status", {"phase": "Pending"})
        elif res.kind == "Namespace" and creating:
            obj["status"] = {"phase": "Active"}
        elif res.kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            if creating and spec.get("clusterIP") != "None":
                n = next(_NAMES) % 65000 + 1
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        elif res.kind == "PriorityClass":
            obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _quantities_as_strings(obj: Obj) -> None:
    """The apiserver serializes resource quantities as strings (``nvidia.com/gpu: 1`` reads back "1")."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    pod_specs = [spec, (spec.get("template") or {}).get("spec") or {}]
    for pod in pod_specs:
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            for key in ("limits", "requests"):
                values = (c.get("resources") or {}).get(key)
                if isinstance(values, dict):
                    c["resources"][key] = {k: str(v) for k, v in values.items()}
    status = obj.get("status")
    for key in ("capacity", "allocatable"):
        if isinstance(status, dict) and isinstance(status.get(key), dict):
            status[key] = {k: str(v) for k, v in status[key].items()}
