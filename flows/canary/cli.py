"""``inferops canary run | plan | abort | status``."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from flows.canary.models import CanaryPolicy

app = typer.Typer(help="Canary rollouts with Prometheus analysis and rollback", no_args_is_help=True)

_D = CanaryPolicy()
_STEPS = ",".join(map(str, _D.steps))
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Kubernetes namespace")]
DeploymentName = Annotated[str, typer.Option("--deployment", "-d", help="target (stable) Deployment")]
Image = Annotated[str, typer.Option(help="new container image")]
Manifest = Annotated[str, typer.Option("--model-manifest-uri", help="model manifest URI from model-build")]
Steps = Annotated[str, typer.Option(help="canary weights in percent, comma-separated, ending with 100")]
Mode = Annotated[str, typer.Option("--traffic-mode", help="gateway-api | replicas")]
Route = Annotated[str, typer.Option(help="HTTPRoute name (gateway-api); default: the Deployment's")]
Service = Annotated[str, typer.Option(help="stable Service name (gateway-api); default: the Deployment's")]
Container = Annotated[str, typer.Option(help="container to update; default: the first")]
Interval = Annotated[int, typer.Option("--interval", help="analysis interval, seconds")]
PerStep = Annotated[int, typer.Option(help="passed intervals needed per step")]
Scrape = Annotated[int, typer.Option("--scrape-interval", help="Prometheus scrape interval of the pods, seconds "
                                     "(rate windows span at least 4)")]
Preset = Annotated[str, typer.Option("--preset", help="metrics preset: triton | vllm | http")]
ErrQ = Annotated[str, typer.Option(help="custom error-ratio PromQL ({{namespace}} {{deployment}} {{interval}} {{track}})")]
LatQ = Annotated[str, typer.Option(help="custom latency PromQL in seconds (same placeholders)")]
MaxErr = Annotated[float, typer.Option(help="error-ratio threshold (0-1)")]
MaxLat = Annotated[float, typer.Option("--max-latency", help="latency threshold, seconds")]
Tol = Annotated[float, typer.Option(help="Mann-Whitney tolerance, relative to baseline")]
Limit = Annotated[int, typer.Option(help="failed intervals that fail a step")]
ILimit = Annotated[int, typer.Option(help="inconclusive intervals that end a step")]
OnInc = Annotated[str, typer.Option(help="rollback | pause (needs a Prefect API)")]
Ready = Annotated[int, typer.Option("--readiness-timeout", help="progress deadline, seconds")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def make_policy(**fields: Any) -> CanaryPolicy:
    try:
        steps = [int(s) for s in str(fields.pop("steps")).split(",") if s.strip()]
    except ValueError:
        raise _bad("--steps must be comma-separated integers, e.g. 5,25,50,100") from None
    try:
        return CanaryPolicy(steps=steps, **fields)
    except ValidationError as exc:
        raise _bad("; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())) from None


def _bad(msg: str) -> Exception:
    from flows.common.errors import BadInput

    return BadInput(msg)


def _policy_fields(steps, traffic_mode, httproute, service, container, interval, intervals_per_step, preset,
                   error_rate_query, latency_query, max_error_rate, max_latency, tolerance, failure_limit,
                   inconclusive_limit, on_inconclusive, readiness_timeout) -> dict[str, Any]:
    return dict(steps=steps, traffic_mode=traffic_mode, httproute=httproute, service=service, container=container,
                interval_s=interval, intervals_per_step=intervals_per_step, metrics_preset=preset,
                error_rate_query=error_rate_query, latency_query=latency_query, max_error_rate=max_error_rate,
                max_latency_s=max_latency, tolerance=tolerance, failure_limit=failure_limit,
                inconclusive_limit=inconclusive_limit, on_inconclusive=on_inconclusive,
                readiness_timeout_s=readiness_timeout)


def _check_names(namespace: str, deployment: str) -> None:
    from flows.canary.models import check_dns_label, check_dns_subdomain

    try:
        check_dns_label(namespace, "namespace")
        check_dns_subdomain(deployment, "deployment")
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _print(obj: Any, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(obj, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = obj.get("intervals") or []
    if rows:
        table = Table(title=f"canary {obj['namespace']}/{obj['deployment']}")
        for col in rows[-1]:
            table.add_column(col)
        for r in rows:
            table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()))
        console.print(table)
    console.print({k: v for k, v in obj.items() if k != "intervals"})


@app.command()
def run(
    namespace: Namespace, deployment: DeploymentName, image: Image = "", model_manifest_uri: Manifest = "",
    steps: Steps = _STEPS, traffic_mode: Mode = _D.traffic_mode, httproute: Route = "",
    service: Service = "", container: Container = "", interval: Interval = _D.interval_s,
    scrape_interval: Scrape = _D.scrape_interval_s, intervals_per_step: PerStep = _D.intervals_per_step,
    preset: Preset = _D.metrics_preset.value,
    error_rate_query: ErrQ = "", latency_query: LatQ = "", max_error_rate: MaxErr = _D.max_error_rate,
    max_latency: MaxLat = _D.max_latency_s, tolerance: Tol = _D.tolerance, failure_limit: Limit = _D.failure_limit,
    inconclusive_limit: ILimit = _D.inconclusive_limit, on_inconclusive: OnInc = _D.on_inconclusive,
    readiness_timeout: Ready = _D.readiness_timeout_s,
    approval: Annotated[bool, typer.Option("--approval/--no-approval", help="ask before 100% (needs a Prefect API)")] = False,
    approval_timeout: Annotated[int, typer.Option(help="seconds to wait for approval, then roll back")] = _D.approval_timeout_s,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read the cluster, change nothing, print the plan")] = False,
    json_out: JsonOut = False,
) -> None:
    """Run a canary: exit 0 promoted, 3 rolled back, 4 another rollout holds the target."""
    from flows.canary.flow import canary_rollout
    from flows.common.runtime import run_flow

    policy = make_policy(**_policy_fields(steps, traffic_mode, httproute, service, container, interval,
                                          intervals_per_step, preset, error_rate_query, latency_query,
                                          max_error_rate, max_latency, tolerance, failure_limit,
                                          inconclusive_limit, on_inconclusive, readiness_timeout),
                         approval_timeout_s=approval_timeout, scrape_interval_s=scrape_interval)
    result = run_flow(canary_rollout, namespace=namespace, deployment=deployment, image=image,
                      model_manifest_uri=model_manifest_uri, policy=policy, require_approval=approval,
                      dry_run=dry_run)
    _print(result, json_out)


def _load_manifest(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    from flows.common.documents import load_document, require_mapping

    return require_mapping(load_document(path, what), f"{what} {path} (a Kubernetes object)", "metadata", "spec")


@app.command()
def plan(
    namespace: Namespace, deployment: DeploymentName, image: Image = "", model_manifest_uri: Manifest = "",
    steps: Steps = _STEPS, traffic_mode: Mode = _D.traffic_mode, httproute: Route = "",
    service: Service = "", container: Container = "", interval: Interval = _D.interval_s,
    scrape_interval: Scrape = _D.scrape_interval_s, intervals_per_step: PerStep = _D.intervals_per_step,
    preset: Preset = _D.metrics_preset.value,
    error_rate_query: ErrQ = "", latency_query: LatQ = "", max_error_rate: MaxErr = _D.max_error_rate,
    max_latency: MaxLat = _D.max_latency_s, tolerance: Tol = _D.tolerance, failure_limit: Limit = _D.failure_limit,
    inconclusive_limit: ILimit = _D.inconclusive_limit, on_inconclusive: OnInc = _D.on_inconclusive,
    readiness_timeout: Ready = _D.readiness_timeout_s,
    approval: Annotated[bool, typer.Option("--approval/--no-approval")] = False,
    stable_manifest: Annotated[Path | None, typer.Option(help="the stable Deployment (YAML/JSON, e.g. kubectl get -o yaml)")] = None,
    service_manifest: Annotated[Path | None, typer.Option(help="the stable Service (gateway-api)")] = None,
    route_manifest: Annotated[Path | None, typer.Option(help="the HTTPRoute (gateway-api)")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="stable replicas when no --stable-manifest")] = 4,
) -> None:
    """Print, as JSON, the objects a canary would create or patch and its step schedule. No cluster needed."""
    from flows.canary.flow import make_target
    from flows.canary.planner import render_plan, sample_deployment
    from flows.canary.promql import queries

    target = make_target(namespace, deployment, image, model_manifest_uri)
    policy = make_policy(**_policy_fields(steps, traffic_mode, httproute, service, container, interval,
                                          intervals_per_step, preset, error_rate_query, latency_query,
                                          max_error_rate, max_latency, tolerance, failure_limit,
                                          inconclusive_limit, on_inconclusive, readiness_timeout),
                         scrape_interval_s=scrape_interval)
    queries(policy)
    stable = _load_manifest(stable_manifest, "stable manifest") or sample_deployment(namespace, deployment, replicas)
    try:
        out = render_plan(target, policy, stable, _load_manifest(service_manifest, "service manifest"),
                          _load_manifest(route_manifest, "route manifest"), require_approval=approval)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:  # a manifest of the wrong shape
        raise _bad(f"cannot plan: {exc}") from None
    if stable_manifest is None:
        out["stable_source"] = f"sample Deployment with {replicas} replicas (pass --stable-manifest for yours)"
    typer.echo(json.dumps(out, indent=2))


@app.command()
def abort(namespace: Namespace, deployment: DeploymentName, json_out: JsonOut = False) -> None:
    """Roll back by hand: weights to stable, stable to full size, canary and baseline removed. Idempotent."""
    from flows.canary.actuator import Cluster, rollback
    from flows.common.kube import from_settings

    _check_names(namespace, deployment)
    cluster = Cluster(from_settings(), namespace, deployment)
    state = cluster.read_state()
    done = rollback(cluster, state)
    if state is not None or done:
        from flows.canary.models import EVENT_ROLLED_BACK, resource_id
        from flows.common.artifacts import emit
        from flows.common.runtime import api_configured, offline

        # without a Prefect API the event is only logged (no temporary server for a CLI call)
        with nullcontext() if api_configured() else offline():
            emit(EVENT_ROLLED_BACK, resource_id(namespace, deployment),
                 {"reason": "inferops canary abort", "namespace": namespace, "deployment": deployment})
    out = {"namespace": namespace, "deployment": deployment, "had_rollout": state is not None, "actions": done}
    _print(out, json_out)


@app.command()
def status(namespace: Namespace, deployment: DeploymentName, json_out: JsonOut = False) -> None:
    """Show the rollout in flight (lease, step) and the canary/baseline Deployments."""
    import time

    from flows.canary import planner
    from flows.canary.actuator import Cluster, readiness
    from flows.common.kube import from_settings

    _check_names(namespace, deployment)
    cluster = Cluster(from_settings(), namespace, deployment)
    state = cluster.read_state()
    out: dict[str, Any] = {"namespace": namespace, "deployment": deployment,
                           "rollout": json.loads(state.model_dump_json()) if state else None}
    if state:
        out["lease_expires_in_s"] = round(state.expires - time.time(), 1)
    for name in [deployment] + [planner.track_name(deployment, t) for t in planner.TRACKS]:
        dep = cluster.read_deployment(name, missing_ok=True)
        out[name] = None if dep is None else {
            "replicas": dep["spec"].get("replicas"),
            "ready": (dep.get("status") or {}).get("readyReplicas", 0),
            "images": [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]],
            "rolled_out": readiness(dep) is None,
        }
    _print(out, json_out)
