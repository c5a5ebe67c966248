"""A strict Kubernetes API emulator: a real HTTP server with a 1.33 apiserver's semantics, for the tests,
the demo and the benchmarks (no kube-apiserver can be installed here). README.md beside this file lists
what it models, the documentation page of each behaviour, and what it does not model.

* ``server.py``: the REST paths, discovery, ``?watch=true``, ``fieldValidation``, Warning headers.
* ``store.py``: CRUD with resourceVersions, 409s, generation, finalizers, graceful pod deletion, GC.
* ``validation.py`` + ``openapi.py``: built-in kinds against the official OpenAPI (kubernetes-validate), then
  the apiserver's 422 rules; ``crd.py``: custom resources against their CRD's structural schema.
* ``patch.py``: merge, strategic merge, JSON patch, server-side apply. ``selectors.py``: selectors.
* ``controllers.py``: the loop ticking ``deployments.py`` (Deployment/ReplicaSet), ``pods.py`` (scheduler +
  kubelet), ``jobs.py`` (Job + TTL), ``autoscaling.py`` (HPA, PDB); ``objects.py``: what they share, Events.
* ``admission.py``: ServiceAccount and Pod Security admission.
* ``clock.py``: the emulated clock every timer and timestamp reads.

Why not KMock (``kmock`` 0.8, evaluated first): no resourceVersion, selectors, strategic merge,
server-side apply, subresources, validation or controllers.
"""

from flows.standins.kube_emulator.emulator import KubeEmulator

__all__ = ["KubeEmulator"]
