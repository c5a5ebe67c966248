"""Render the `k8s` and `a100` work-pool base job templates from Prefect's default.

A custom base job template replaces the default whole, so we start from
`prefect work-pool get-default-base-job-template --type kubernetes` (saved as kubernetes-default.json;
refresh it when upgrading prefect-kubernetes) and change only what we need:

* both: our flow-runner image, the least-privilege `inferops-flows` ServiceAccount (whose setting
  decides whether the token is mounted; a deployment may name `inferops-flows-no-kube`), the `inferops`
  namespace, `INFEROPS_HOME`, a hardened pod (non-root, no privilege escalation, all caps dropped,
  RuntimeDefault seccomp), and `completions`/`parallelism` moved from the pod spec (where the default
  template wrongly puts them) to the Job spec;
* a100: a GPU nodeSelector, the `nvidia.com/gpu` toleration and `nvidia.com/gpu` limits, the GPU image.

Run: python deploy/prefect/render_templates.py   (writes k8s.json and a100.json beside this file)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE = "ghcr.io/inferops/flow-runner:0.1.0"
GPU_IMAGE = "ghcr.io/inferops/flow-runner-gpu:0.1.0"
FLOW_RUN_GRACE_S = 1860  # > READINESS_TIMEOUT_MAX_S (1800) of the canary policy


def _base(default: dict, image: str) -> dict:
    t = copy.deepcopy(default)
    props = t["variables"]["properties"]
    props["image"]["default"] = image
    props["namespace"]["default"] = "inferops"
    props["service_account_name"]["default"] = "inferops-flows"
    props["image_pull_policy"]["default"] = "IfNotPresent"
    # the worker never deletes a finished Job: Kubernetes does, an hour after it ends (the default
    # template's null keeps every flow run's Job and pod for ever)
    props["finished_job_ttl"]["default"] = 3600
    # the root filesystem is read-only: local state (drbd severities, builds) goes to the /tmp emptyDir
    # and no telemetry from Prefect's SDK or onnxruntime (which uploads from Linux unless told not to)
    props["env"]["default"] = {"INFEROPS_HOME": "/opt/inferops", "INFEROPS_STATE_DIR": "/tmp/inferops",
                               "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1", "ORT_DISABLE_TELEMETRY": "1"}
    for k, v in {"cpu_request": "500m", "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "4Gi"}.items():
        if k in props:
            props[k]["default"] = v

    job = t["job_configuration"]["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    for field in ("completions", "parallelism"):
        if field in pod:
            job["spec"][field] = pod.pop(field)
    pod["securityContext"] = {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # no automountServiceAccountToken here: the ServiceAccount decides (deploy/k8s/base/rbac.yaml).
    # inferops-flows (canary, idle-gpu) mounts its token; inferops-flows-no-kube, which prefect.yaml
    # gives the flows that never call the Kubernetes API, has none to mount.
    # a cancelled or evicted canary run rolls back in its crash hook, waiting for stable up to the
    # policy's readiness timeout (at most 1800 s, flows/canary/models.py): SIGTERM must not cut it short
    pod["terminationGracePeriodSeconds"] = FLOW_RUN_GRACE_S
    c = pod["containers"][0]
    c["securityContext"] = {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    c["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    pod["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}]
    return t


def k8s_template(default: dict) -> dict:
    return _base(default, IMAGE)


def a100_template(default: dict) -> dict:
    t = _base(default, GPU_IMAGE)
    props = t["variables"]["properties"]
    props["gpu_count"] = {"title": "GPUs", "description": "nvidia.com/gpu per flow run", "type": "integer",
                          "default": 1, "minimum": 1, "maximum": 8}
    props["gpu_product"] = {"title": "GPU product", "description": "value of the nvidia.com/gpu.product node label",
                            "type": "string", "default": "NVIDIA-A100-SXM4-80GB"}
    props["memory_limit"]["default"] = "32Gi"
    props["memory_request"]["default"] = "16Gi"
    props["cpu_limit"]["default"] = "8"
    props["cpu_request"]["default"] = "4"
    pod = t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"nvidia.com/gpu.product": "{{ gpu_product }}"}
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod["priorityClassName"] = "offline-batch"  # builds yield GPUs to inference (deploy/k8s PriorityClass)
    res = pod["containers"][0]["resources"]
    res["limits"]["nvidia.com/gpu"] = "{{ gpu_count }}"
    res["requests"]["nvidia.com/gpu"] = "{{ gpu_count }}"
    pod["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
    pod["containers"][0]["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    return t


def main() -> None:
    default = json.loads((HERE / "kubernetes-default.json").read_text())
    for name, fn in (("k8s", k8s_template), ("a100", a100_template)):
        (HERE / f"{name}.json").write_text(json.dumps(fn(default), indent=2) + "\n")
        print(f"wrote {HERE / (name + '.json')}")


if __name__ == "__main__":
    main()
