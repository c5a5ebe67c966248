"""``inferops``: one subcommand group per pipeline, plus ``doctor`` and ``demo``.

Groups are imported lazily (only the one you call), so a cron job does not pay for every
pipeline's imports. Each pipeline room exposes ``app = typer.Typer()`` in ``flows/<room>/cli.py``.
Errors: an :class:`~flows.common.errors.InferopsError` becomes one line on stderr and its exit code;
never a traceback (``INFEROPS_DEBUG=1`` shows it).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from flows.common.errors import InferopsError

# group name -> (module, help)
GROUPS: dict[str, tuple[str, str]] = {
    "model": ("flows.model_build.cli", "Build FP16/INT8 models with an accuracy gate"),
    "canary": ("flows.canary.cli", "Canary rollouts with Prometheus analysis and rollback"),
    "idle-gpu": ("flows.idle_gpu.cli", "Nightly preemptible jobs on idle GPUs"),
    "backup": ("flows.log_backup.cli", "Cross-region log backup to S3, and restore"),
    "drbd": ("flows.drbd_health.cli", "DRBD health checks (Nagios exit codes)"),
    "cost": ("flows.cost_report.cli", "GPU cost reports from AWS CUR"),
    "bootstrap": ("flows.host_bootstrap.cli", "Bootstrap GPU/storage hosts with Ansible"),
}


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="inferops",
        help="Ops automation for self-hosted LLM inference fleets.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


def _add_builtin(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        json_out: bool = typer.Option(False, "--json", help="print JSON on stdout"),
        timeout: float = typer.Option(5.0, help="seconds per check"),
    ) -> None:
        """Check every configured backend; exit 1 if any check fails."""
        from flows.common.doctor import main as doctor_main

        raise typer.Exit(doctor_main(json_out=json_out, timeout=timeout))

    @app.command("demo")
    def demo(
        out: str = typer.Option("demo-output", help="output folder"),
        only: list[str] = typer.Option([], help="run only these pipelines"),
    ) -> None:
        """Run every pipeline once on embedded local defaults (what `make demo` calls)."""
        from flows.common.demo import main as demo_main

        raise typer.Exit(demo_main(out=out, only=only))


def build_app(wanted: str | None) -> typer.Typer:
    app = _new_app()
    _add_builtin(app)
    for name, (module, help_text) in GROUPS.items():
        if wanted not in (None, name):
            # keep --help complete without importing: a placeholder that loads on use
            app.add_typer(typer.Typer(help=help_text), name=name, help=help_text)
            continue
        try:
            sub = importlib.import_module(module).app
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("flows."):
                sub = typer.Typer(help=f"{help_text} (not built yet)")
            else:
                raise
        app.add_typer(sub, name=name, help=help_text)
    return app


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Prefect's SDK telemetry phones home from interactive terminals on import; an ops tool on a
    # locked-down host must not. An explicit DO_NOT_TRACK (even "0") is respected.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    if wanted not in GROUPS:
        wanted = None if not argv or argv[0].startswith("-") else "__builtin__"
    debug = os.environ.get("INFEROPS_DEBUG") in ("1", "true")
    try:
        app = build_app(wanted)
        # standalone mode: click/typer print usage errors (exit 2) and turn Exit into SystemExit
        app(args=argv, prog_name="inferops")
    except KeyboardInterrupt:
        print("inferops: aborted", file=sys.stderr)
        sys.exit(130)
    except InferopsError as exc:
        if debug:
            raise
        print(f"inferops: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line unless debugging
        if debug:
            raise
        print(f"inferops: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(INFEROPS_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
