"""A Kubernetes API emulator for the tests: a real HTTP server with the apiserver's semantics.

Why not KMock (``kmock`` 0.8, evaluated first, as DESIGN.md asks): its ``KubernetesEmulator`` keeps
objects as plain dicts merged on every write. It has no resourceVersion (lists answer ``'...'``),
so no optimistic concurrency (no 409 Conflict on a stale write) and no watch resume; no label or
field selectors; every PATCH is a naive dict merge (no strategic merge by patch merge key, no JSON
patch, no server-side apply); no ``generation``/``observedGeneration``, no status/scale
subresources, no validation (422), no ``timeoutSeconds`` on watches, and no controllers.

What this one serves (see ``resources.py``) and how:

* ``store.py``: create/update/patch/delete with 201, 409 AlreadyExists, 404 NotFound, 409 Conflict
  on a stale ``metadata.resourceVersion``, a global monotonically increasing resourceVersion, uid,
  creationTimestamp, ``generation`` bumped on spec changes only, finalizers + deletionTimestamp,
  owner-reference garbage collection (``propagationPolicy``; Jobs orphan their pods by default),
  namespace existence and cascade, PriorityClass admission, a watch history (410 Gone when compacted).
* ``patch.py``: merge, strategic merge, JSON patch, server-side apply with managedFields.
* ``selectors.py``: label and field selectors. ``validation.py``: 422 Invalid for bad bodies.
* ``server.py``: the REST paths, discovery (``/api``, ``/apis``, ``/version``), ``?watch=true``.
* ``controllers.py``: Deployment rollout status, pod scheduling/preemption/running, Jobs.

Not emulated: RBAC/authn (every request is allowed), admission webhooks, graceful pod termination
(deletes are immediate unless finalizers hold them), the Job retry backoff delay, node affinity,
protobuf, and server-side apply's removal of fields inside atomic lists.
"""

from flows.standins.kube_emulator.emulator import KubeEmulator

__all__ = ["KubeEmulator"]
