"""The object store: CRUD with the apiserver's semantics, resourceVersions, watch history, GC.

Thread-safe (one ``RLock``): the HTTP server, the controllers and the tests all use it. Objects are
plain JSON dicts; every read returns a deep copy (controllers use ``peek``, which does not copy, and
never mutate what it returns). Every write goes through admission (``validation.py``) unless a
controller writes it (``internal``). Pods bound to a node are deleted gracefully
(https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.standins.kube_emulator import admission
from flows.standins.kube_emulator import patch as P
from flows.standins.kube_emulator.clock import Clock
from flows.standins.kube_emulator.errors import ApiError, already_exists, bad_request, conflict, not_found
from flows.standins.kube_emulator.openapi import DEFAULT_VERSION
from flows.standins.kube_emulator.resources import Registry, Resource, lookup
from flows.standins.kube_emulator.validation import decode, validate

Obj = dict[str, Any]
NAMESPACES, PRIORITY_CLASSES = lookup("", "namespaces"), lookup("scheduling.k8s.io", "priorityclasses")
PODS, CRDS = lookup("", "pods"), lookup("apiextensions.k8s.io", "customresourcedefinitions")
SERVICE_ACCOUNTS = lookup("", "serviceaccounts")
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
                "managedFields", "resourceVersion", "selfLink")
_NAMES = itertools.count()


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
    def __init__(self, history: int = 20000, clock: Clock | None = None, version: str = DEFAULT_VERSION) -> None:
        self.lock = threading.RLock()
        self.clock = clock or Clock()
        self.version = version  # the Kubernetes version whose OpenAPI validates built-in kinds
        self.registry = Registry()
        self.changes = 0  # bumped on every write: controllers skip idle ticks
        self.warnings: list[tuple[str, str | None, str, str]] = []  # (kind, namespace, name, Warning) served
        self.newer_fields: dict[tuple[str, str], frozenset[str]] = {}  # (group, kind) → paths a newer server knows
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = defaultdict(dict)
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

    def peek(self, res: Resource, namespace: str | None = None) -> list[Obj]:
        """The stored objects themselves (no copy): for controllers, which must not mutate them."""
        with self.lock:
            objs = self._objects.get(res.key) or {}
            return [o for (ns, _), o in objs.items() if namespace is None or ns == namespace]

    def now(self) -> str:
        return self.clock.iso()

    # ---- writes ----
    def create(self, res: Resource, obj: Obj, namespace: str | None = None, *, manager: str | None = None,
               operation: str = "Update", field_validation: str = "Warn", warnings: list[str] | None = None,
               internal: bool = False) -> Obj:
        with self.lock:
            obj = copy.deepcopy(obj)
            if not isinstance(obj, dict):
                raise bad_request(f"the body of the request is not a {res.kind} object")
            if not internal:
                decode(res, obj, self.version, field_validation, warnings if warnings is not None else [],
                       newer=self._newer(res))
            obj["apiVersion"], obj["kind"] = res.api_version, res.kind
            meta = obj.setdefault("metadata", {})
            if res.namespaced:
                if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                    raise bad_request("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
                meta["namespace"] = namespace or meta.get("namespace")
                if meta["namespace"] and ("", meta["namespace"]) not in self._objects[NAMESPACES.key]:
                    raise not_found(NAMESPACES, meta["namespace"])
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            for k in _SYSTEM_META:
                meta.pop(k, None)
            if "status" in res.subresources and res.kind not in ("Node", "Pod", "Namespace"):
                obj.pop("status", None)
            self._default(res, obj, creating=True)
            if res.kind == "Pod":
                self._admit_priority(obj)
                self._admit_service_account(obj)
            if not internal:
                validate(res, obj, None, self.version, self._newer(res))
            if res.kind == "Pod":
                self._admit_pod_security(obj, warnings)
            elif not internal and admission.pod_template(obj) is not None and warnings is not None:
                self._warn_pod_security(meta.get("namespace"), admission.pod_template(obj), warnings)
            key = self._k(res, meta.get("namespace"), meta["name"])
            if key in self._objects[res.key]:
                raise already_exists(res, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self.now()
            if res.generation:
                meta["generation"] = 1
            if res.kind == "Job":
                self._job_selector(obj)
            if res is CRDS:
                self._establish(obj)
            if manager:
                self._own(obj, manager, operation, set(P.leaf_paths(obj)), res)
            meta["resourceVersion"] = str(self._next_rv())
            self._objects[res.key][key] = obj
            self._emit("ADDED", res, obj)
            if res is NAMESPACES:  # the ServiceAccount controller's "default" account
                self.create(SERVICE_ACCOUNTS, {"metadata": {"name": "default"}}, meta["name"], internal=True)
            return copy.deepcopy(obj)

    def update(self, res: Resource, namespace: str | None, name: str, obj: Obj, *,
               subresource: str | None = None, manager: str | None = None, field_validation: str = "Warn",
               warnings: list[str] | None = None, internal: bool = False) -> Obj:
        """PUT semantics: optimistic concurrency on ``metadata.resourceVersion`` when given."""
        with self.lock:
            if not isinstance(obj, dict):
                raise bad_request(f"the body of the request is not a {res.kind} object")
            current = self.get(res, namespace, name)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if (obj.get("metadata") or {}).get("name", name) != name:
                raise bad_request(f'the name of the object ({obj["metadata"]["name"]}) does not match the name '
                                  f"on the URL ({name})")
            if not internal:
                obj = copy.deepcopy(obj)
                decode(res, obj, self.version, field_validation, warnings if warnings is not None else [],
                       status_only=subresource == "status", newer=self._newer(res))
            return self._commit(res, current, obj, subresource, manager, "Update", internal=internal)

    def patch(self, res: Resource, namespace: str | None, name: str, content_type: str, body: Any, *,
              subresource: str | None = None, manager: str | None = None, force: bool = False,
              field_validation: str = "Warn", warnings: list[str] | None = None,
              internal: bool = False) -> tuple[Obj, bool]:
        """→ (object, created). ``content_type`` picks the patch flavour; apply may create."""
        with self.lock:
            warnings = warnings if warnings is not None else []
            if content_type == "application/apply-patch+yaml":
                return self._apply(res, namespace, name, body, subresource, manager, force, field_validation,
                                   warnings)
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
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if not internal:
                decode(res, patched, self.version, field_validation, warnings, status_only=subresource == "status",
                       newer=self._newer(res))
            return self._commit(res, current, patched, subresource, manager, "Update", internal=internal), False

    def delete(self, res: Resource, namespace: str | None, name: str, *, propagation: str | None = None,
               precondition_rv: str | None = None, precondition_uid: str | None = None,
               grace_period: int | None = None) -> Obj:
        """→ the object as it was (or is, while finalizers or a pod's grace period hold it)."""
        with self.lock:
            current = self.get(res, namespace, name)
            meta = current["metadata"]
            if precondition_rv and precondition_rv != meta["resourceVersion"] or \
                    precondition_uid and precondition_uid != meta["uid"]:
                raise conflict(res, name, "the ResourceVersion/UID in the precondition does not match")
            if res.kind == "Pod":
                grace = self._pod_grace(current, grace_period)
                if grace > 0 or meta.get("finalizers"):
                    return self._mark_deleted(res, current, grace, propagation)
                self._remove(res, current, propagation)
                return current
            if meta.get("finalizers"):
                return self._mark_deleted(res, current, 0, propagation)
            self._remove(res, current, propagation)
            return current

    def _newer(self, res: Resource) -> frozenset[str]:
        return self.newer_fields.get((res.group, res.kind), frozenset())

    def _pod_grace(self, pod: Obj, requested: int | None) -> int:
        """Graceful for a pod a kubelet runs; immediate for an unbound or finished one (or grace 0)."""
        phase = (pod.get("status") or {}).get("phase")
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        grace = requested if requested is not None else pod["spec"].get("terminationGracePeriodSeconds", 30)
        old = pod["metadata"].get("deletionGracePeriodSeconds")
        return max(0, min(grace, old) if old is not None else grace)

    def _mark_deleted(self, res: Resource, current: Obj, grace: int, propagation: str | None) -> Obj:
        meta = current["metadata"]
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", 0) <= grace:
            return copy.deepcopy(current)
        key = self._k(res, meta.get("namespace"), meta["name"])
        old = self._objects[res.key][key]
        meta["deletionTimestamp"] = self.clock.iso(self.clock.time() + grace)
        meta["deletionGracePeriodSeconds"] = grace
        meta["resourceVersion"] = str(self._next_rv())
        self._objects[res.key][key] = current
        self._emit("MODIFIED", res, current, old)
        if res.kind == "Pod" and grace == 0 and not meta.get("finalizers"):
            self._remove(res, current, propagation)
        return copy.deepcopy(current)

    def reset(self) -> None:
        """Wipe every object; open watches end and older resourceVersions become 410 Gone."""
        with self.lock:
            for objs in self._objects.values():
                objs.clear()
            self.registry.clear()
            self.warnings.clear()
            self.newer_fields.clear()
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
                           for (ns, _), o in sorted((self._objects.get(res.key) or {}).items())
                           if namespace is None or ns == namespace]
            else:
                try:
                    rv = int(since)
                except ValueError:
                    raise bad_request(f"invalid resourceVersion {since!r}") from None
                if rv < self._compacted:
                    raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._compacted})")
                initial = [e for e in self._history if e.rv > rv and e.res.key == res.key and
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
        self.changes += 1
        self._history.append(ev)
        if len(self._history) > self._history_max:
            self._compacted = self._history.popleft().rv
        for w in self._watchers:
            if w.res.key == res.key and (w.namespace is None or obj["metadata"].get("namespace") == w.namespace):
                w.push(ev)

    def _commit(self, res: Resource, current: Obj, new: Obj, subresource: str | None, manager: str | None,
                operation: str, owned: set[P.Path] | None = None, internal: bool = False) -> Obj:
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
            if not internal:
                validate(res, merged, current, self.version, self._newer(res))
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
        if res is CRDS:
            self._establish(merged)
        merged["metadata"]["resourceVersion"] = str(self._next_rv())
        self._objects[res.key][self._k(res, current["metadata"].get("namespace"), name)] = merged
        self._emit("MODIFIED", res, merged, current)
        if merged["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers") and \
                (res.kind != "Pod" or not merged["metadata"].get("deletionGracePeriodSeconds")):
            self._remove(res, merged, None)
        return copy.deepcopy(merged)

    def _apply(self, res: Resource, namespace: str | None, name: str, body: Any, subresource: str | None,
               manager: str | None, force: bool, field_validation: str, warnings: list[str]) -> tuple[Obj, bool]:
        if not manager:
            raise bad_request("PATCH /apply requires fieldManager to be specified")
        if not isinstance(body, dict) or body.get("apiVersion") != res.api_version or body.get("kind") != res.kind:
            raise bad_request(f"apply: the body must be a {res.kind} of apiVersion {res.api_version}")
        if (body.get("metadata") or {}).get("name") != name:
            raise bad_request("apply: metadata.name must match the name on the URL")
        current = self.find(res, namespace, name)
        if current is None:
            return self.create(res, body, namespace, manager=manager, operation="Apply",
                               field_validation=field_validation, warnings=warnings), True
        body = copy.deepcopy(body)
        if res.custom:  # pruning only: defaults must not count as applied fields
            decode(res, copy.deepcopy(body), self.version, field_validation, warnings)
            from flows.standins.kube_emulator.crd import Validator

            Validator((res.schemas or {}).get(res.version) or {}).prune(body)
        else:
            decode(res, body, self.version, field_validation, warnings, newer=self._newer(res))
        applied = set(P.leaf_paths(body))
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
                            "time": self.now(), "fieldsType": "FieldsV1", "fieldsV1": P.to_fields_v1(mine)})
        obj["metadata"]["managedFields"] = entries

    def _remove(self, res: Resource, obj: Obj, propagation: str | None) -> None:
        meta = obj["metadata"]
        key = self._k(res, meta.get("namespace"), meta["name"])
        old = (self._objects.get(res.key) or {}).pop(key, None)
        if old is None:
            return
        meta["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", res, obj, old)
        if res is NAMESPACES:
            for r in self.registry.all():
                if r.namespaced:
                    for o in [o for (ns, _), o in (self._objects.get(r.key) or {}).items() if ns == meta["name"]]:
                        self._remove(r, copy.deepcopy(o), "Background")
        if res is CRDS:  # its custom resources go with it, and their paths 404 again
            gone = self.registry.remove_crd(obj)
            if gone is not None:
                for o in list((self._objects.get(gone.key) or {}).values()):
                    self._remove(gone, copy.deepcopy(o), "Background")
        # batch/v1 Jobs orphan their pods by default over the API (kubectl passes Background)
        policy = propagation or ("Orphan" if res.kind == "Job" else "Background")
        for r in self.registry.all():
            for o in list((self._objects.get(r.key) or {}).values()):
                refs = o["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == meta["uid"] for ref in refs):
                    continue
                dep = copy.deepcopy(o)
                if policy == "Orphan":
                    dep["metadata"]["ownerReferences"] = [x for x in refs if x.get("uid") != meta["uid"]]
                    self._commit(r, o, dep, None, None, "Update", internal=True)
                elif r is PODS:  # the garbage collector deletes dependents gracefully
                    self.delete(r, o["metadata"].get("namespace"), o["metadata"]["name"])
                else:
                    self._remove(r, dep, "Background")

    def _establish(self, crd: Obj) -> None:
        """A CRD is served at once (the real one takes a moment): Established, NamesAccepted."""
        self.registry.add_crd(crd)
        names = crd["spec"]["names"]
        t = self.now()
        crd["status"] = {"acceptedNames": {k: v for k, v in names.items() if k != "categories"},
                         "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
                         "conditions": [{"type": t_, "status": "True", "reason": r, "message": m,
                                         "lastTransitionTime": t} for t_, r, m in (
                             ("NamesAccepted", "NoConflicts", "no conflicts found"),
                             ("Established", "InitialNamesAccepted", "the initial names have been accepted"))]}

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

    def _admit_service_account(self, pod: Obj) -> None:
        """The ServiceAccount admission plugin (``admission.py``)."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns = meta.get("namespace") or ""
        name = meta.get("name") or meta.get("generateName") or ""
        sa = spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec["serviceAccount"] = sa
        if (ns, sa) not in self._objects[SERVICE_ACCOUNTS.key]:
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: error looking up service account '
                           f'{ns}/{sa}: serviceaccount "{sa}" not found', {"name": name, "kind": "pods"})

    def _admit_pod_security(self, pod: Obj, warnings: list[str] | None) -> None:
        """Pod Security admission: the namespace's enforce level refuses, its warn level warns."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns = meta.get("namespace") or ""
        name = meta.get("name") or ""
        enforce, _ = admission.namespace_levels(self._objects[NAMESPACES.key].get(("", ns)))
        problems = admission.violations(enforce, spec)
        if problems:
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: {admission.message(enforce, problems)}',
                           {"name": name, "kind": "pods"})
        if warnings is not None:
            self._warn_pod_security(ns, spec, warnings)

    def _warn_pod_security(self, ns: str | None, spec: Obj, warnings: list[str]) -> None:
        _, warn = admission.namespace_levels(self._objects[NAMESPACES.key].get(("", ns or "")))
        problems = admission.violations(warn, spec)
        if problems:
            warnings.append(f'would violate PodSecurity "{warn}:latest": ' + ", ".join(problems))

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
        """The defaults clients read back (``pkg/apis/*/v1/defaults.go``), set on every write."""
        spec = obj.get("spec")
        _quantities_as_strings(obj)
        if res.kind in ("Deployment", "ReplicaSet") and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            if res.kind == "Deployment":
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
                if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                    strategy.setdefault("type", "RollingUpdate")
                    ru = strategy.setdefault("rollingUpdate", {})
                    ru.setdefault("maxUnavailable", "25%")
                    ru.setdefault("maxSurge", "25%")
            _default_pod_spec((spec.get("template") or {}).get("spec"))
        elif res.kind == "Job" and isinstance(spec, dict):
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("suspend", False)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else
                            "TerminatingOrFailed")
            for rule in ((spec.get("podFailurePolicy") or {}).get("rules") or []) if isinstance(
                    spec.get("podFailurePolicy"), dict) else []:
                for pattern in rule.get("onPodConditions") or [] if isinstance(rule, dict) else []:
                    if isinstance(pattern, dict):
                        pattern.setdefault("status", "True")
            _default_pod_spec((spec.get("template") or {}).get("spec"))
        elif res.kind == "Pod" and isinstance(spec, dict):
            _default_pod_spec(spec)
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                r = c.get("resources")
                if isinstance(r, dict) and isinstance(r.get("limits"), dict):  # requests default to limits
                    r["requests"] = {**r["limits"], **(r.get("requests") or {})}
            if creating:
                obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
        elif res.kind == "Namespace" and creating:
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif res.kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            if creating and spec.get("clusterIP") not in ("None",) and spec.get("type") != "ExternalName":
                n = next(_NAMES) % 65000 + 1
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))
        elif res.kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
            spec.setdefault("minReplicas", 1)
            if not spec.get("metrics"):
                spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": 80}}}]
        elif res.kind == "PriorityClass":
            obj.setdefault("preemptionPolicy", "PreemptLowerPriority")
        elif res.kind == "NetworkPolicy" and isinstance(spec, dict):
            if "policyTypes" not in spec:
                spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        image = str(c.get("image") or "")
        tag = image.rsplit("/", 1)[-1]
        c.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(probe)
            if isinstance(pr, dict):
                for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                             ("failureThreshold", 3)):
                    pr.setdefault(k, v)
                if isinstance(pr.get("httpGet"), dict):
                    pr["httpGet"].setdefault("scheme", "HTTP")
                    pr["httpGet"].setdefault("path", "/")


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
