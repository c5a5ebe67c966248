"""The resource types the emulator serves: where they live in the REST tree and how they behave."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    generation: bool = False  # metadata.generation tracks spec changes
    custom: bool = False  # a CRD: no strategic merge patch (415), like the real apiserver
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

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


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, subresources=("status",), short_names=("ns",)),
    Resource("", "v1", "nodes", "Node", namespaced=False, subresources=("status",), short_names=("no",)),
    Resource("", "v1", "pods", "Pod", subresources=("status",), short_names=("po",)),
    Resource("", "v1", "services", "Service", subresources=("status",), short_names=("svc",)),
    Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    Resource("", "v1", "events", "Event", short_names=("ev",)),
    Resource("apps", "v1", "deployments", "Deployment", subresources=("status", "scale"), generation=True,
             short_names=("deploy",)),
    Resource("batch", "v1", "jobs", "Job", subresources=("status",), generation=True),
    Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False, short_names=("pc",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", subresources=("status",),
             generation=True, custom=True),
    Resource("kueue.x-k8s.io", "v1beta1", "localqueues", "LocalQueue", subresources=("status",),
             generation=True, custom=True, short_names=("queue", "queues", "lq")),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KEY: dict[tuple[str, str], Resource] = {r.key: r for r in RESOURCES}


def lookup(group: str, plural: str) -> Resource:
    return BY_KEY[(group, plural)]


def groups() -> dict[str, list[str]]:
    """group → its versions (the core group excluded)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out
