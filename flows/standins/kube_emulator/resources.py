"""The resource types the emulator serves: where they live in the REST tree and how they behave.

Built-in kinds are fixed (the ones the product and ``deploy/k8s`` use). Custom resources exist only
while their CustomResourceDefinition does (``Registry.add_crd`` / ``remove_crd``): without it their
paths answer 404, as a real apiserver does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    generation: bool = False  # metadata.generation tracks spec changes
    custom: bool = False  # a CRD: no strategic merge patch (415), validated by its openAPIV3Schema
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    versions: tuple[str, ...] = ()  # every served version (CRDs); objects are stored once per group/plural
    schemas: Any = field(default=None, compare=False, hash=False)  # version -> openAPIV3Schema (CRDs)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: how the apiserver names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def served(self) -> tuple[str, ...]:
        return self.versions or (self.version,)


_R = Resource
BUILTIN: tuple[Resource, ...] = (
    _R("", "v1", "namespaces", "Namespace", namespaced=False, subresources=("status",), short_names=("ns",)),
    _R("", "v1", "nodes", "Node", namespaced=False, subresources=("status",), short_names=("no",)),
    _R("", "v1", "pods", "Pod", subresources=("status", "eviction"), short_names=("po",)),
    _R("", "v1", "services", "Service", subresources=("status",), short_names=("svc",)),
    _R("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _R("", "v1", "secrets", "Secret"),
    _R("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _R("", "v1", "events", "Event", short_names=("ev",)),
    _R("apps", "v1", "deployments", "Deployment", subresources=("status", "scale"), generation=True,
       short_names=("deploy",)),
    _R("apps", "v1", "replicasets", "ReplicaSet", subresources=("status", "scale"), generation=True,
       short_names=("rs",)),
    _R("batch", "v1", "jobs", "Job", subresources=("status",), generation=True),
    _R("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", subresources=("status",),
       short_names=("hpa",)),
    _R("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", subresources=("status",), generation=True,
       short_names=("pdb",)),
    _R("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", generation=True, short_names=("netpol",)),
    _R("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _R("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _R("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _R("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _R("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False, short_names=("pc",)),
    _R("coordination.k8s.io", "v1", "leases", "Lease"),
    _R("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False,
       subresources=("status",), generation=True, short_names=("crd", "crds")),
)
_BY_KEY = {r.key: r for r in BUILTIN}


def lookup(group: str, plural: str) -> Resource:
    """A built-in resource (custom ones come from ``Registry.get``)."""
    return _BY_KEY[(group, plural)]


def crd_resource(crd: dict[str, Any]) -> Resource:
    """The ``Resource`` a CustomResourceDefinition defines (its storage version first)."""
    spec = crd["spec"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    storage = next((v for v in served if v.get("storage")), served[0])
    names = spec["names"]
    return Resource(spec["group"], storage["name"], names["plural"], names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    subresources=tuple(s for s in ("status", "scale") if s in (storage.get("subresources") or {})),
                    generation=True, custom=True, short_names=tuple(names.get("shortNames") or ()),
                    versions=tuple(v["name"] for v in served),
                    schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") or {} for v in served})


class Registry:
    """Built-ins plus the custom resources whose CRD is established."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._custom: dict[tuple[str, str], Resource] = {}

    def all(self) -> list[Resource]:
        with self._lock:
            return [*BUILTIN, *self._custom.values()]

    def get(self, group: str, plural: str) -> Resource | None:
        return _BY_KEY.get((group, plural)) or self._custom.get((group, plural))

    def by_path(self, group: str, version: str, plural: str) -> Resource | None:
        res = self.get(group, plural)
        return res if res is not None and version in res.served() else None

    def add_crd(self, crd: dict[str, Any]) -> Resource:
        res = crd_resource(crd)
        with self._lock:
            self._custom[res.key] = res
        return res

    def remove_crd(self, crd: dict[str, Any]) -> Resource | None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        with self._lock:
            return self._custom.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._custom.clear()

    def groups(self) -> dict[str, list[str]]:
        """group → its versions (the core group excluded)."""
        out: dict[str, list[str]] = {}
        for r in self.all():
            if r.group:
                for v in r.served():
                    if v not in out.setdefault(r.group, []):
                        out[r.group].append(v)
        return out
