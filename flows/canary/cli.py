"""``inferops canary run | plan | abort | status | preset``.

``run`` and ``plan`` take the same policy options, declared once in :data:`POLICY_OPTIONS` and
added to both commands by :func:`policy_options`, which hands them a built :class:`CanaryPolicy`.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from flows.canary.models import CanaryPolicy, MetricsPreset
from flows.common.errors import BadInput, bad_input_from

app = typer.Typer(help="Canary rollouts with Prometheus analysis and rollback", no_args_is_help=True)

_D = CanaryPolicy()
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Kubernetes namespace")]
DeploymentName = Annotated[str, typer.Option("--deployment", "-d", help="target (stable) Deployment")]
Image = Annotated[str, typer.Option(help="new container image")]
Manifest = Annotated[str, typer.Option("--model-manifest-uri", help="model manifest URI from model-build")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def _opt(name: str, field: str | None, annotation: Any, default: Any, help_text: str, *flags: str,
         **kw: Any) -> tuple[str, str | None, inspect.Parameter]:
    option = typer.Option(*flags, help=help_text, **kw) if flags else typer.Option(help=help_text, **kw)
    return name, field, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                          annotation=Annotated[annotation, option])


# (parameter, CanaryPolicy field or None for special handling, the typer parameter): the one option
# set of `canary run` and `canary plan`
POLICY_OPTIONS = [
    _opt("steps", "steps", str, ",".join(map(str, _D.steps)),
         "canary weights in percent, comma-separated, ending with 100"),
    _opt("traffic_mode", "traffic_mode", str, _D.traffic_mode, "gateway-api | replicas", "--traffic-mode"),
    _opt("httproute", "httproute", str, "", "HTTPRoute name (gateway-api); default: the Deployment's"),
    _opt("service", "service", str, "", "stable Service name (gateway-api); default: the Deployment's"),
    _opt("container", "container", str, "", "container to update; default: the first"),
    _opt("interval", "interval_s", int, _D.interval_s, "analysis interval, seconds", "--interval"),
    _opt("scrape_interval", "scrape_interval_s", int, _D.scrape_interval_s,
         "Prometheus scrape interval of the pods, seconds (rate windows span at least 4)", "--scrape-interval"),
    _opt("intervals_per_step", "intervals_per_step", int, _D.intervals_per_step, "passed intervals needed per step"),
    _opt("analysis", None, Path | None, None, "analysis file: YAML with a metrics list (copy one from "
         "`inferops canary preset NAME`); replaces --preset and the two-metric options below"),
    _opt("preset", "metrics_preset", str, _D.metrics_preset.value, "metrics preset: triton | vllm | http",
         "--preset"),
    _opt("error_rate_query", "error_rate_query", str, "",
         "custom error-ratio PromQL ({{namespace}} {{deployment}} {{interval}} {{track}})"),
    _opt("latency_query", "latency_query", str, "", "custom latency PromQL in seconds (same placeholders)"),
    _opt("max_error_rate", "max_error_rate", float, _D.max_error_rate, "error-ratio threshold (0-1)"),
    _opt("max_latency", "max_latency_s", float, _D.max_latency_s, "latency threshold, seconds", "--max-latency"),
    _opt("tolerance", "tolerance", float, _D.tolerance, "Mann-Whitney tolerance, relative to baseline"),
    _opt("failure_limit", "failure_limit", int, _D.failure_limit, "failed intervals that fail a step"),
    _opt("inconclusive_limit", "inconclusive_limit", int, _D.inconclusive_limit,
         "inconclusive intervals that end a step"),
    _opt("on_inconclusive", "on_inconclusive", str, _D.on_inconclusive, "rollback | pause (needs a Prefect API)"),
    _opt("readiness_timeout", "readiness_timeout_s", int, _D.readiness_timeout_s, "progress deadline, seconds",
         "--readiness-timeout"),
    _opt("approval", None, bool, False, "ask before 100% (needs a Prefect API)", "--approval/--no-approval"),
    _opt("approval_timeout", "approval_timeout_s", int, _D.approval_timeout_s,
         "seconds to wait for approval, then roll back"),
]


def make_policy(**fields: Any) -> CanaryPolicy:
    """A policy from option values (``steps`` comma-separated); bad values are one-line BadInput."""
    try:
        steps = [int(s) for s in str(fields.pop("steps")).split(",") if s.strip()]
    except ValueError:
        raise BadInput("--steps must be comma-separated integers, e.g. 5,25,50,100") from None
    try:
        return CanaryPolicy(steps=steps, **fields)
    except ValidationError as exc:
        raise bad_input_from(exc, "policy") from None


def read_analysis(path: Path) -> list[Any]:
    from flows.canary.models import load_metrics
    from flows.common.documents import read_text

    return load_metrics(read_text(path, "analysis"), str(path))


def policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the shared policy options; it receives ``policy`` and ``approval`` instead."""
    sig = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # resolve this module's string annotations
    own = [p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items()
           if n not in ("policy", "approval")]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _ in POLICY_OPTIONS}
        fields = {field: values[name] for name, field, _ in POLICY_OPTIONS if field is not None}
        if values["analysis"] is not None:
            fields["metrics"] = read_analysis(values["analysis"])
        return command(policy=make_policy(**fields), approval=values["approval"], **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    wrapper.__signature__ = sig.replace(parameters=[*params, *(p for _, _, p in POLICY_OPTIONS)])  # type: ignore[attr-defined]
    return wrapper


def _check_names(namespace: str, deployment: str) -> None:
    from flows.canary.models import check_dns_label, check_dns_subdomain

    try:
        check_dns_label(namespace, "namespace")
        check_dns_subdomain(deployment, "deployment")
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _print(obj: Any, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(obj, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False)  # names and reasons from the cluster are never markup
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
@policy_options
def run(
    namespace: Namespace, deployment: DeploymentName, image: Image = "", model_manifest_uri: Manifest = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read the cluster, change nothing, print the plan")] = False,
    json_out: JsonOut = False, *, policy: CanaryPolicy, approval: bool,
) -> None:
    """Run a canary: exit 0 promoted, 3 rolled back, 4 another rollout holds the target."""
    from flows.canary.flow import canary_rollout
    from flows.common.runtime import run_flow

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
@policy_options
def plan(
    namespace: Namespace, deployment: DeploymentName, image: Image = "", model_manifest_uri: Manifest = "",
    stable_manifest: Annotated[Path | None, typer.Option(help="the stable Deployment (YAML/JSON, e.g. kubectl get -o yaml)")] = None,
    service_manifest: Annotated[Path | None, typer.Option(help="the stable Service (gateway-api)")] = None,
    route_manifest: Annotated[Path | None, typer.Option(help="the HTTPRoute (gateway-api)")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="stable replicas when no --stable-manifest")] = 4,
    *, policy: CanaryPolicy, approval: bool,
) -> None:
    """Print, as JSON, the objects a canary would create or patch and its step schedule. No cluster needed."""
    from flows.canary.flow import make_target
    from flows.canary.planner import render_plan, sample_deployment

    target = make_target(namespace, deployment, image, model_manifest_uri)
    stable = _load_manifest(stable_manifest, "stable manifest") or sample_deployment(namespace, deployment, replicas)
    try:
        out = render_plan(target, policy, stable, _load_manifest(service_manifest, "service manifest"),
                          _load_manifest(route_manifest, "route manifest"), require_approval=approval)
    # the planner's own refusal (a selector that would take the track pods) or a manifest of the wrong shape
    except (BadInput, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise BadInput(f"cannot plan: {exc}") from None
    if stable_manifest is None:
        out["stable_source"] = f"sample Deployment with {replicas} replicas (pass --stable-manifest for yours)"
    typer.echo(json.dumps(out, indent=2))


@app.command()
def preset(name: Annotated[str, typer.Argument(help="triton | vllm | http")]) -> None:
    """Print a shipped analysis preset (YAML): copy it, edit it, pass it with --analysis."""
    from flows.canary.models import PRESETS_DIR

    try:
        typer.echo((PRESETS_DIR / f"{MetricsPreset(name)}.yaml").read_text(), nl=False)
    except ValueError:
        raise BadInput(f"unknown preset {name!r} (triton | vllm | http)") from None


def _cluster(namespace: str, deployment: str) -> Any:
    from flows.canary.actuator import Cluster
    from flows.common.kube import client_from_settings

    _check_names(namespace, deployment)
    return Cluster(client_from_settings(), namespace, deployment)


@app.command()
def abort(namespace: Namespace, deployment: DeploymentName, json_out: JsonOut = False) -> None:
    """Roll back by hand: weights to stable, stable to full size, canary and baseline removed. Idempotent.

    Waits for stable up to the rollout policy's readiness timeout (kept in the lease) before the
    baseline goes."""
    import logging

    from flows.canary.controller import rollback
    from flows.common.clock import WallClock

    cluster = _cluster(namespace, deployment)
    state = cluster.read_state()
    done = rollback(cluster, state, WallClock(), logger=logging.getLogger("inferops"))
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
    from flows.canary.controller import readiness

    cluster = _cluster(namespace, deployment)
    state = cluster.read_state()
    out: dict[str, Any] = {"namespace": namespace, "deployment": deployment,
                           "rollout": json.loads(state.model_dump_json()) if state else None}
    if state:
        out["lease_expires_in_s"] = round(state.expires - time.time(), 1)
    for name in [deployment] + [planner.track_name(deployment, t) for t in planner.TRACKS]:
        dep = cluster.read_deployment(name)
        out[name] = None if dep is None else {
            "replicas": dep["spec"].get("replicas"),
            "ready": (dep.get("status") or {}).get("readyReplicas", 0),
            "images": [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]],
            "rolled_out": readiness(dep) is None,
        }
    _print(out, json_out)
