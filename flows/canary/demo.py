"""`make demo`: the plan of a canary for a typical Triton Deployment (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

from flows.canary.flow import canary_plan
from flows.canary.models import CanaryPolicy
from flows.common.runtime import run_flow


def run(out: Path) -> str:
    plan = run_flow(canary_plan, namespace="inference", deployment="llama-3-70b",
                    image="nvcr.io/nvidia/tritonserver:25.02-py3",
                    model_manifest_uri="s3://inferops-models/llama-3-70b/int8/manifest.json",
                    policy=CanaryPolicy(traffic_mode="gateway-api", interval_s=60), replicas=8,
                    require_approval=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    steps = ", ".join(f"{s['weight']}%" for s in plan["schedule"])
    return f"{len(plan['objects'])} objects, steps {steps}, approval before 100%"
