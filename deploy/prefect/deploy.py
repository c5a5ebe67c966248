"""`make deploy`: work pools, every deployment of prefect.yaml, locked parameter schemas, and automations.

    deploy.py                 against $PREFECT_API_URL: the `k8s`/`a100` Kubernetes pools from
                              k8s.json/a100.json, `ops` a process pool
    deploy.py --local STACK   the local stack (`make up`): prefect.yaml with the overlay local.yaml,
                              rendered to STACK/prefect.local.yaml; every pool a local process pool

Steps, each idempotent (safe to re-run):

1. the work pools;
2. ``prefect --no-prompt deploy --all`` of the (rendered) prefect file;
3. each deployment's parameter schema gets ``additionalProperties: false``, so that with
   ``enforce_parameter_schema`` the server rejects an unknown top-level parameter when the run is
   created, not when it starts;
4. the automations of ``deploy/prefect/automations/*.yaml`` and ``flows/*/automations/*.yaml``, each
   sending to its own notification block ``inferops-<automation name>``. A missing block is created
   as a webhook to a closed loopback port (nothing leaves the machine) for users to fill in with
   their own URL in the UI; an existing one, filled in or not, is left as it is.

Exit codes: 0 done, 2 no Prefect API configured or a bad file, 1 a step failed (its output is shown).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLACEHOLDER_URL = "http://127.0.0.1:9/inferops-notification-not-configured"  # discard port: refused locally
PRODUCTION_POOLS = {"ops": ("process", None), "k8s": ("kubernetes", HERE / "k8s.json"),
                    "a100": ("kubernetes", HERE / "a100.json")}


class DeployError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def prefect_bin() -> str:
    explicit = os.environ.get("PREFECT")
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def _prefect(*args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run([prefect_bin(), "--no-prompt", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise DeployError(f"prefect {' '.join(args[:3])} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}")
    return p.stdout


# ---- the prefect file ---------------------------------------------------------------------------

def _substitute(value: Any, stack: str) -> Any:
    if isinstance(value, str):
        return value.replace("${STACK}", stack)
    if isinstance(value, list):
        return [_substitute(v, stack) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, stack) for k, v in value.items()}
    return value


def render_local(spec: dict[str, Any], overlay: dict[str, Any], stack: Path,
                 now: datetime | None = None) -> dict[str, Any]:
    """prefect.yaml's deployments with the local overlay: local parameters, every schedule active.
    A deployment whose overlay sets ``first_run_after_s`` has its interval schedules anchored so that
    the first run comes that long after ``now`` (the interval is kept: in production the anchor keeps
    runs on the clock; locally nobody should wait up to a whole interval to see the first one)."""
    now = now or datetime.now(UTC)
    out = copy.deepcopy(spec)
    changes = _substitute(overlay.get("deployments") or {}, str(stack))
    names = {d["name"] for d in out["deployments"]}
    unknown = set(changes) - names
    if unknown:
        raise DeployError(f"local.yaml names deployments that prefect.yaml lacks: {sorted(unknown)}", 2)
    for d in out["deployments"]:
        local = changes.get(d["name"]) or {}
        d["parameters"] = {**(d.get("parameters") or {}), **(local.get("parameters") or {})}
        for s in d.get("schedules") or []:
            s["active"] = True
            if "interval" in s and local.get("first_run_after_s") is not None:
                first = now + timedelta(seconds=float(local["first_run_after_s"]))
                s["anchor_date"] = (first - timedelta(seconds=float(s["interval"]))).isoformat()
        for t in d.get("triggers") or []:
            t["parameters"] = {**(t.get("parameters") or {}), **(local.get("trigger_parameters") or {})}
    return out


# ---- steps ----------------------------------------------------------------------------------------

def create_pools(client, pools: dict[str, tuple[str, Path | None]], local: bool) -> None:
    """Create or update each pool through the API with its template (ours, else the worker type's
    default from the installed worker class). Not through `prefect work-pool create`: that asks the
    server for Prefect's worker catalogue, which the server fetches from GitHub first."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.base import BaseWorker

    for name, (kind, template_file) in pools.items():
        worker = BaseWorker.get_worker_class_from_type(kind)
        if worker is None:
            raise DeployError(f"work pool {name!r}: no installed worker for type {kind!r} "
                              f"(prefect-kubernetes provides 'kubernetes')", 2)
        template = (json.loads(template_file.read_text()) if template_file is not None
                    else worker.get_default_base_job_template())
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.type != kind:
            if not local:
                raise DeployError(f"work pool {name!r} is of type {existing.type!r}, not {kind!r}: "
                                  f"delete it (prefect work-pool delete {name}) or point at another server", 2)
            client.delete_work_pool(name)  # the local stack's own server: make it a local pool
            existing = None
        if existing is None:
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
        else:
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
        print(f"deploy: work pool {name} ({kind})", flush=True)


def lock_parameters(client, names: list[str]) -> None:
    """``additionalProperties: false`` on each deployment's parameter schema (unknown params → 409)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deployments = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)))
    for d in deployments:
        schema = dict(d.parameter_openapi_schema or {"type": "object", "properties": {}})
        if schema.get("additionalProperties") is False:
            continue
        schema["additionalProperties"] = False
        client.request("PATCH", "/deployments/{id}", path_params={"id": d.id},
                       json={"parameter_openapi_schema": schema})
    missing = set(names) - {d.name for d in deployments}
    if missing:
        raise DeployError(f"deployments missing after `prefect deploy`: {sorted(missing)}")


def automation_files() -> list[Path]:
    return sorted(HERE.glob("automations/*.yaml")) + sorted(ROOT.glob("flows/*/automations/*.yaml"))


def notification_block(name: str):
    """The block ``name``: the existing one (as the user filled it in), else a new loopback placeholder."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.exceptions import ObjectNotFound

    try:
        return CustomWebhookNotificationBlock.load(name)
    except (ObjectNotFound, ValueError):
        block = CustomWebhookNotificationBlock(
            name=name, url=PLACEHOLDER_URL, json_data={"subject": "{{subject}}", "body": "{{body}}"})
        block.save(name)
        return CustomWebhookNotificationBlock.load(name)


def create_automations(client) -> list[str]:
    from prefect.events.schemas.automations import AutomationCore

    made = []
    for path in automation_files():
        for raw in (yaml.safe_load(path.read_text()) or {}).get("automations") or []:
            block = notification_block(f"inferops-{raw['name']}")
            spec = copy.deepcopy(raw)
            for action in spec.get("actions") or []:
                if action.get("type") == "send-notification":
                    action["block_document_id"] = str(block._block_document_id)
            automation = AutomationCore.model_validate(spec)
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:  # an earlier hand-made duplicate
                    client.delete_automation(extra.id)
            else:
                client.create_automation(automation)
            made.append(automation.name)
            print(f"deploy: automation {automation.name} -> notification block inferops-{raw['name']}", flush=True)
    return made


def deploy(local_stack: Path | None = None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    if not api:
        raise DeployError("PREFECT_API_URL is not set; point it at your Prefect server "
                          "(`make up` serves http://127.0.0.1:4200/api and deploys into it itself)", 2)
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    env = {**os.environ, "PREFECT_API_URL": api}
    env.setdefault("INFEROPS_HOME", str(ROOT))
    if local_stack is not None:
        overlay = yaml.safe_load((HERE / "local.yaml").read_text())
        spec = render_local(spec, overlay, local_stack)
        pools = {name: (kind, None) for name, kind in overlay["work_pools"].items()}
        local_stack.mkdir(parents=True, exist_ok=True)
        prefect_file = local_stack / "prefect.local.yaml"
        prefect_file.write_text("# generated by deploy/prefect/deploy.py --local from prefect.yaml and "
                                "deploy/prefect/local.yaml: do not edit\n" + yaml.safe_dump(spec, sort_keys=False))
    else:
        pools, prefect_file = PRODUCTION_POOLS, ROOT / "prefect.yaml"
    names = [d["name"] for d in spec["deployments"]]
    with get_client(sync_client=True) as client:
        create_pools(client, pools, local=local_stack is not None)
        print(f"deploy: {len(names)} deployments from {prefect_file.relative_to(ROOT) if prefect_file.is_relative_to(ROOT) else prefect_file}",
              flush=True)
        _prefect("deploy", "--all", "--prefect-file", str(prefect_file), env=env)
        lock_parameters(client, names)
        print(f"deploy: {', '.join(names)} (unknown parameters rejected at submit)", flush=True)
        create_automations(client)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="deploy.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--local", metavar="STACK", type=Path, help="deploy the local stack's variant (make up)")
    args = ap.parse_args(argv)
    try:
        deploy(args.local.resolve() if args.local else None)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
