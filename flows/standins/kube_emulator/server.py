"""The REST front: the apiserver's paths, verbs, content types and Status errors, over starlette."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flows.standins.kube_emulator.errors import ApiError, bad_request
from flows.standins.kube_emulator.patch import json_patch, merge_patch, strategic_merge
from flows.standins.kube_emulator.resources import Resource
from flows.standins.kube_emulator.selectors import field_matcher, label_matcher
from flows.standins.kube_emulator.store import Event, Store

VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-inferops-emulator", "gitCommit": "emulator",
           "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24",
           "compiler": "gc", "platform": "linux/amd64"}
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")


def _resource_list(resources: list[Resource], group: str, version: str) -> dict[str, Any]:
    out = []
    for r in resources:
        if r.group != group or version not in r.served():
            continue
        out.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": list(r.verbs), "shortNames": list(r.short_names)})
        for sub in r.subresources:
            if sub == "eviction":
                out.append({"name": f"{r.plural}/eviction", "singularName": "", "namespaced": True, "kind": "Eviction",
                            "group": "policy", "version": "v1", "verbs": ["create"]})
                continue
            kind, grp = ("Scale", "autoscaling") if sub == "scale" else (r.kind, None)
            entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": kind,
                     "verbs": ["get", "patch", "update"]}
            if grp:
                entry.update(group=grp, version="v1")
            out.append(entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    sel = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _field_validation(value: str | None) -> str:
    """The ``fieldValidation`` query parameter; the server's default is Warn."""
    if value in (None, ""):
        return "Warn"
    if value not in ("Ignore", "Warn", "Strict"):
        raise bad_request(f"fieldValidation parameter unsupported: {value}")
    return value


def _versioned(obj: dict[str, Any], res: Resource) -> dict[str, Any]:
    """A custom resource reads back in the version it was asked for (the versions share one schema here)."""
    if res.custom and obj.get("apiVersion") != res.api_version:
        obj["apiVersion"] = res.api_version
    return obj


def _respond(body: Any, warnings: list[str], status_code: int = 200, log: list | None = None) -> Response:
    headers = [("Warning", '299 - "' + w.replace('"', '\\"') + '"') for w in dict.fromkeys(warnings)]
    resp = JSONResponse(body, status_code=status_code)
    if log is not None and warnings:
        meta = body.get("metadata") or {} if isinstance(body, dict) else {}
        log.extend((body.get("kind"), meta.get("namespace"), meta.get("name"), w) for w in dict.fromkeys(warnings))
    for k, v in headers:
        resp.headers.append(k, v)
    return resp


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.app = Starlette(routes=[
            Route("/version", self.version), Route("/version/", self.version),
            Route("/api", self.core_versions), Route("/api/", self.core_versions),
            Route("/apis", self.group_list), Route("/apis/", self.group_list),
            Route("/api/v1", self.core_resources), Route("/api/v1/", self.core_resources),
            Route("/apis/{group}", self.group_info), Route("/apis/{group}/", self.group_info),
            Route("/apis/{group}/{version}", self.group_resources),
            Route("/apis/{group}/{version}/", self.group_resources),
            Route("/api/v1/{rest:path}", self.resource, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/apis/{group}/{version}/{rest:path}", self.resource,
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    # ---- discovery ----
    async def version(self, request: Request) -> Response:
        major, minor = self.store.version.split(".")[:2]
        return JSONResponse({**VERSION, "major": major, "minor": minor,
                             "gitVersion": f"v{major}.{minor}.0-inferops-emulator"})

    async def core_versions(self, request: Request) -> Response:
        return JSONResponse({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.netloc}]})

    async def core_resources(self, request: Request) -> Response:
        return JSONResponse(_resource_list(self.store.registry.all(), "", "v1"))

    async def group_list(self, request: Request) -> Response:
        return JSONResponse({"kind": "APIGroupList", "apiVersion": "v1",
                             "groups": [_group(g, vs) for g, vs in self.store.registry.groups().items()]})

    async def group_info(self, request: Request) -> Response:
        g = request.path_params["group"]
        groups = self.store.registry.groups()
        if g not in groups:
            return _error(ApiError(404, "NotFound", "the server could not find the requested resource"))
        return JSONResponse({"kind": "APIGroup", "apiVersion": "v1", **_group(g, groups[g])})

    async def group_resources(self, request: Request) -> Response:
        g, v = request.path_params["group"], request.path_params["version"]
        if v not in self.store.registry.groups().get(g, []):
            return _error(ApiError(404, "NotFound", "the server could not find the requested resource"))
        return JSONResponse(_resource_list(self.store.registry.all(), g, v))

    # ---- resources ----
    async def resource(self, request: Request) -> Response:
        try:
            return await self._resource(request)
        except ApiError as exc:
            return _error(exc)

    def _route(self, request: Request) -> tuple[Resource, str | None, str | None, str | None]:
        group = request.path_params.get("group", "")
        version = request.path_params.get("version", "v1")
        parts = [p for p in request.path_params["rest"].split("/") if p]
        ns = None
        reg = self.store.registry
        if len(parts) >= 3 and parts[0] == "namespaces" and reg.by_path(group, version, parts[2]) is not None:
            ns, parts = parts[1], parts[2:]
        res = reg.by_path(group, version, parts[0]) if parts else None
        if res is not None and res.version != version:
            res = dataclasses.replace(res, version=version)
        if res is None or len(parts) > 3 or (ns is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is not None and res.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, ns, name, sub

    async def _resource(self, request: Request) -> Response:
        res, ns, name, sub = self._route(request)
        q = request.query_params
        method = request.method
        if q.get("dryRun"):
            raise bad_request("dryRun is not supported by the emulator")
        manager = q.get("fieldManager") or request.headers.get("user-agent", "unknown").split("/")[0]
        fv = _field_validation(q.get("fieldValidation"))
        warnings: list[str] = []
        if method == "GET" and name is None:
            match_l, match_f = label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector"))
            if _flag(q.get("watch")):
                return await self._watch(request, res, ns, lambda o: match_l(o) and match_f(o))
            with self.store.lock:
                items = self.store.list(res, ns, lambda o: match_l(o) and match_f(o))
                rv = self.store.resource_version
            limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
            items, token = self.store.page(items, limit, q.get("continue"))
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if token:
                meta["continue"] = token
            items = [_versioned(o, res) for o in items]
            body = {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}
            if "as=Table" in request.headers.get("accept", ""):
                body = _table(items, meta)
            return JSONResponse(body)
        if method == "GET":
            obj = self.store.get(res, ns, name)
            return JSONResponse(_scale(obj) if sub == "scale" else _versioned(obj, res))
        if method == "POST" and name is None:
            obj = self.store.create(res, await _json(request), ns, manager=manager, field_validation=fv,
                                    warnings=warnings)
            return _respond(_versioned(obj, res), warnings, 201, self.store.warnings)
        if method == "POST" and sub == "eviction":
            return JSONResponse(self._evict(res, ns, name, await _json(request, default={})), status_code=201)
        if method == "PUT" and name is not None:
            body = await _json(request)
            if sub == "scale":
                return JSONResponse(_scale(self._rescale(res, ns, name, body, manager)))
            obj = self.store.update(res, ns, name, body, subresource=sub, manager=manager, field_validation=fv,
                                    warnings=warnings)
            return _respond(_versioned(obj, res), warnings, log=self.store.warnings)
        if method == "PATCH" and name is not None:
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                               f"accepted media types include: {', '.join(PATCH_TYPES)}")
            raw = await request.body()
            try:
                body = yaml.safe_load(raw) if ctype.endswith("yaml") else json.loads(raw)
            except (ValueError, yaml.YAMLError) as exc:
                raise bad_request(f"error decoding patch: {exc}") from None
            if sub == "scale":
                current = _scale(self.store.get(res, ns, name))
                patched = json_patch(current, body) if ctype.startswith("application/json-patch") else \
                    merge_patch(current, body) if "merge-patch" in ctype and "strategic" not in ctype else \
                    strategic_merge(current, body)
                return JSONResponse(_scale(self._rescale(res, ns, name, patched, manager)))
            if ctype == "application/apply-patch+yaml":
                manager = q.get("fieldManager")  # required for apply; no default from the user agent
                if isinstance(body, dict) and res.custom and body.get("apiVersion") in (
                        f"{res.group}/{v}" for v in res.served()):
                    body = {**body, "apiVersion": res.api_version}
            obj, created = self.store.patch(res, ns, name, ctype, body, subresource=sub, manager=manager,
                                            force=_flag(q.get("force")), field_validation=fv, warnings=warnings)
            return _respond(_versioned(obj, res), warnings, 201 if created else 200, self.store.warnings)
        if method == "DELETE":
            opts = await _json(request, default={})
            policy = q.get("propagationPolicy") or opts.get("propagationPolicy")
            grace = q.get("gracePeriodSeconds") or opts.get("gracePeriodSeconds")
            grace = int(grace) if grace is not None and str(grace).lstrip("-").isdigit() else None
            pre = opts.get("preconditions") or {}
            if name is None:
                match_l, match_f = label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector"))
                items = self.store.list(res, ns, lambda o: match_l(o) and match_f(o))
                for o in items:
                    self.store.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], propagation=policy,
                                      grace_period=grace)
                return JSONResponse({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                                     "metadata": {"resourceVersion": str(self.store.resource_version)},
                                     "items": [_versioned(o, res) for o in items]})
            obj = self.store.delete(res, ns, name, propagation=policy, precondition_rv=pre.get("resourceVersion"),
                                    precondition_uid=pre.get("uid"), grace_period=grace)
            if res.kind == "Pod" or obj["metadata"].get("finalizers"):
                return JSONResponse(_versioned(obj, res), status_code=200)
            details = {"name": name, "kind": res.plural, "uid": obj["metadata"]["uid"]}
            if res.group:
                details["group"] = res.group
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                 "details": details})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _evict(self, res: Resource, ns: str | None, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """policy/v1 Eviction: refused with 429 while a PodDisruptionBudget allows no disruption
        (https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/)."""
        from flows.standins.kube_emulator.controllers import PDBS
        from flows.standins.kube_emulator.validation import selector_matches

        with self.store.lock:
            pod = self.store.get(res, ns, name)
            labels = pod["metadata"].get("labels") or {}
            for pdb in self.store.peek(PDBS, ns):
                if not selector_matches(pdb["spec"].get("selector") or {}, labels):
                    continue
                if (pdb.get("status") or {}).get("disruptionsAllowed", 0) <= 0:
                    raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                   "disruption budget.", {"causes": [{"reason": "DisruptionBudget", "message":
                                   f"The disruption budget {pdb['metadata']['name']} needs "
                                   f"{pdb['status'].get('desiredHealthy', 0)} healthy pods and has "
                                   f"{pdb['status'].get('currentHealthy', 0)} currently"}]})
                st = json.loads(json.dumps(pdb["status"]))
                st["disruptionsAllowed"] -= 1
                self.store.update(PDBS, ns, pdb["metadata"]["name"], {**pdb, "status": st}, subresource="status",
                                  internal=True)
            grace = ((body.get("deleteOptions") or {}).get("gracePeriodSeconds"))
            from flows.standins.kube_emulator.controllers import add_condition

            add_condition(self.store, pod, "DisruptionTarget", "EvictionByEvictionAPI",
                          "Eviction API: evicting")
            self.store.delete(res, ns, name, grace_period=grace)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _rescale(self, res: Resource, ns: str | None, name: str, scale: Any, manager: str) -> dict[str, Any]:
        if not isinstance(scale, dict) or not isinstance((scale.get("spec") or {}).get("replicas"), int):
            raise bad_request("a Scale with spec.replicas is required")
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        body = {"metadata": {"resourceVersion": rv} if rv else {}, "spec": {"replicas": scale["spec"]["replicas"]}}
        obj = self.store.get(res, ns, name)
        if not rv:
            body["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
        return self.store.patch(res, ns, name, "application/merge-patch+json", body, manager=manager)[0]

    async def _watch(self, request: Request, res: Resource, ns: str | None, match) -> Response:
        q = request.query_params
        initial, watcher = self.store.watch(res, ns, q.get("resourceVersion"), asyncio.get_running_loop())
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout is not None else None

        async def stream():
            try:
                for ev in initial:
                    line = _watch_line(ev, match, res)
                    if line:
                        yield line
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    try:
                        ev = await asyncio.wait_for(watcher.queue.get(), left)
                    except TimeoutError:
                        return
                    if ev is None:  # the store was reset: end the watch
                        return
                    line = _watch_line(ev, match, res)
                    if line:
                        yield line
            finally:
                self.store.unwatch(watcher)

        return StreamingResponse(stream(), media_type="application/json")


def _watch_line(ev: Event, match, res: Resource) -> bytes | None:
    """A selector-filtered event; an object that starts/stops matching is ADDED/DELETED, as in Kubernetes."""
    now_ok = match(ev.obj)
    was_ok = ev.old is not None and match(ev.old)
    if ev.type == "MODIFIED":
        type_ = "MODIFIED" if now_ok and was_ok else "ADDED" if now_ok else "DELETED" if was_ok else None
    else:
        type_ = ev.type if now_ok else None
    if type_ is None:
        return None
    obj = _versioned(dict(ev.obj), res) if res.custom else ev.obj
    return (json.dumps({"type": type_, "object": obj}) + "\n").encode()


def _table(items: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The ``meta.k8s.io/v1 Table`` kubectl asks for: name and creation time."""
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
                {"name": "Created At", "type": "date", "format": "", "description": "Creation time", "priority": 0}],
            "rows": [{"cells": [o["metadata"]["name"], o["metadata"].get("creationTimestamp")],
                      "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": o["metadata"]}} for o in items]}


async def _json(request: Request, default: Any = None) -> Any:
    raw = await request.body()
    if not raw:
        if default is not None:
            return default
        raise bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding body: {exc}") from None


def _error(exc: ApiError) -> Response:
    return JSONResponse(exc.status(), status_code=exc.code)

