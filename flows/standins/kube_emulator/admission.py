"""Admission plugins a pod meets on a real 1.33 apiserver, besides Priority (in ``store.py``):

* ServiceAccount (https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#serviceaccount-admission-controller):
  ``serviceAccountName`` defaults to ``default`` and must exist, else 403 Forbidden;
* Pod Security Admission (https://kubernetes.io/docs/concepts/security/pod-security-admission/): the
  namespace's ``pod-security.kubernetes.io/enforce`` level refuses pods (403); its ``warn`` level
  answers with Warning headers, for pods and for the pod templates of workloads. The checks are the
  Pod Security Standards' baseline and restricted policies
  (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _containers(spec: Obj) -> list[Obj]:
    return [c for k in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(k) or []]


def violations(level: str, spec: Obj) -> list[str]:
    """The Pod Security Standards checks ``spec`` fails at ``level``, in the apiserver's words."""
    if level not in ("baseline", "restricted"):
        return []
    out: list[str] = []
    cs = _containers(spec)
    psc = spec.get("securityContext") or {}
    host = [k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        out.append(f"host namespaces ({', '.join(f'{k}=true' for k in host)})")
    priv = [c["name"] for c in cs if (c.get("securityContext") or {}).get("privileged")]
    if priv:
        out.append(f"privileged ({_who('container', priv)} must not set securityContext.privileged=true)")
    added = {c["name"]: sorted(set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or [])
                               - BASELINE_CAPS) for c in cs}
    added = {k: v for k, v in added.items() if v}
    if added:
        out.append("non-default capabilities (" + "; ".join(f'container "{k}" must not include {", ".join(v)} in '
                                                            "securityContext.capabilities.add" for k, v in
                                                            added.items()) + ")")
    hostpath = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if hostpath:
        out.append(f"hostPath volumes ({_who('volume', hostpath)})")
    ports = [c["name"] for c in cs if any(p.get("hostPort") for p in c.get("ports") or [])]
    if ports:
        out.append(f"hostPort ({_who('container', ports)} uses hostPort)")
    if level != "restricted":
        return out
    vols = [v["name"] for v in spec.get("volumes") or [] if not (set(v) - {"name"}) & RESTRICTED_VOLUMES
            and "hostPath" not in v]
    if vols:
        out.append(f"restricted volume types ({_who('volume', vols)} uses a restricted volume type)")
    esc = [c["name"] for c in cs if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False]
    if esc:
        out.append(f"allowPrivilegeEscalation != false ({_who('container', esc)} must set "
                   "securityContext.allowPrivilegeEscalation=false)")
    drop = [c["name"] for c in cs if "ALL" not in (((c.get("securityContext") or {}).get("capabilities") or {})
                                                   .get("drop") or [])]
    extra = [c["name"] for c in cs if set(((c.get("securityContext") or {}).get("capabilities") or {})
                                          .get("add") or []) - {"NET_BIND_SERVICE"}]
    if drop or extra:
        parts = []
        if drop:
            parts.append(f'{_who("container", drop)} must set securityContext.capabilities.drop=["ALL"]')
        if extra:
            parts.append(f"{_who('container', extra)} must not include capabilities other than NET_BIND_SERVICE in "
                         "securityContext.capabilities.add")
        out.append(f"unrestricted capabilities ({'; '.join(parts)})")
    if psc.get("runAsNonRoot") is not True:
        bad = [c["name"] for c in cs if (c.get("securityContext") or {}).get("runAsNonRoot") is not True]
        if bad:
            out.append(f"runAsNonRoot != true (pod or {_who('container', bad)} must set "
                       "securityContext.runAsNonRoot=true)")
    root = [c["name"] for c in cs if (c.get("securityContext") or {}).get("runAsUser") == 0]
    if psc.get("runAsUser") == 0 or root:
        out.append("runAsUser=0 (pod and/or container must not set runAsUser=0)")
    seccomp_ok = ("RuntimeDefault", "Localhost")
    if (psc.get("seccompProfile") or {}).get("type") not in seccomp_ok:
        bad = [c["name"] for c in cs if ((c.get("securityContext") or {}).get("seccompProfile") or {})
               .get("type") not in seccomp_ok]
        if bad:
            out.append(f'seccompProfile (pod or {_who("container", bad)} must set securityContext.seccompProfile.type '
                       'to "RuntimeDefault" or "Localhost")')
    return out


def _who(kind: str, names: list[str]) -> str:
    """``container "a"`` / ``containers "a", "b"``, as the Pod Security messages name them."""
    return f"{kind}{'s' if len(names) > 1 else ''} " + ", ".join(f'"{n}"' for n in names)


def namespace_levels(ns: Obj | None) -> tuple[str, str]:
    """(enforce, warn) levels of a namespace; ``privileged`` when unlabelled."""
    labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
    enforce = labels.get("pod-security.kubernetes.io/enforce", "privileged")
    warn = labels.get("pod-security.kubernetes.io/warn", "privileged")  # each mode is set on its own
    return (enforce if enforce in LEVELS else "privileged", warn if warn in LEVELS else "privileged")


def message(level: str, problems: list[str]) -> str:
    return f'violates PodSecurity "{level}:latest": ' + ", ".join(problems)


def pod_template(obj: Obj) -> Obj | None:
    """The pod spec inside a workload (Deployment, ReplicaSet, Job), if any."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else None
    return tmpl.get("spec") if tmpl and isinstance(tmpl.get("spec"), dict) else None
