"""``inferops``: one subcommand group per pipeline, plus ``doctor`` and ``demo``.

Start-up: ``inferops --help`` imports no pipeline (each group is a placeholder with its help line), and
``inferops <group> ...`` imports only that group's ``flows/<room>/cli.py`` (which exposes
``app = typer.Typer()``). Offline, no Prefect is imported (:mod:`flows.common.runtime`).

The error boundary (:func:`main`), the one place every command's failures go through:

* an :class:`~flows.common.errors.InferopsError` becomes ``inferops: <one line>`` on stderr and its
  exit code (:class:`~flows.common.errors.BadInput`: 2);
* a usage error (unknown flag, bad value, missing option) is bad input: one line, exit 2;
* a pydantic ``ValidationError`` that escapes a command is bad input naming the fields; an
  ``OSError`` on a path the user gave is bad input naming the path;
* anything else is a bug: ``inferops: internal error: ...``, exit 1 (``INFEROPS_DEBUG=1`` re-raises it);
* with ``--json``, a command that failed before printing its JSON gets ``{"error": ..., "exit_code": ...}``
  on stdout, so a script always has JSON to read;
* everything the command prints, on stdout and stderr, is redacted (:func:`flows.common.redact.redact`).

A group may have its own contract (:data:`CONTRACTS`): ``drbd`` is a Nagios check, so every failure,
usage errors included, is UNKNOWN (exit 3), with a ``DRBD UNKNOWN - ...`` status line on stdout.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

import typer

from flows.common.errors import BackendUnavailable, BadInput, InferopsError
from flows.common.redact import redact

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
BUILTINS = ("doctor", "demo")


@dataclass(frozen=True)
class Contract:
    """How a group reports failures: the exit code of every failure (None: the error's own code),
    the JSON printed with ``--json``, and an optional status line on stdout for monitors."""

    failure_code: int | None = None
    error_json: Callable[[str, int], dict[str, Any]] = field(
        default=lambda msg, code: {"error": msg, "exit_code": code})
    status_line: Callable[[str], str] | None = None


NAGIOS = Contract(failure_code=3,
                  error_json=lambda msg, code: {"severity": "unknown", "resources": [], "error": msg},
                  status_line=lambda msg: f"DRBD UNKNOWN - {msg}")
CONTRACTS: dict[str, Contract] = {"drbd": NAGIOS}
DEFAULT = Contract()

# OSError numbers that mean "the path you gave is wrong", not "the machine is in trouble"
_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS, errno.EINVAL}


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="inferops",
        help="Ops automation for self-hosted LLM inference fleets.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        # click's plain help, inherited by every group: rich's help rendering took 0.4-0.7 s of each
        # --help on a 2-core worker (benchmarks/cli_startup.py)
        rich_markup_mode=None,
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
    """The CLI with only ``wanted``'s group imported; every other group is a placeholder that keeps
    ``--help`` complete (``wanted=None``: nothing imported, for the top-level help)."""
    app = _new_app()
    _add_builtin(app)
    for name, (module, help_text) in GROUPS.items():
        if wanted != name:
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


class _Tracked:
    """stdout/stderr for one command: every write redacted (no URL userinfo reaches a terminal, a log
    collector or a --json consumer), and whether anything was written (then the command owns its
    JSON or status line)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.wrote = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes with b"": a text stream must refuse bytes
            return self.inner.write(text)
        if text:
            self.wrote = True
            self.inner.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _click_exc(name: str) -> tuple[type, ...]:
    """Click's exception class ``name``: typer vendors click (``typer._click``; ``Abort`` and ``Exit`` in
    ``typer.exceptions``); older typers use click."""
    found = [getattr(m, name) for m in (sys.modules.get("typer._click.exceptions"), sys.modules.get("typer.exceptions"),
                                        sys.modules.get("click.exceptions"))
             if m is not None and hasattr(m, name)]
    return tuple(found)


def _catch_sigint(seen: list[bool]) -> Any:
    """Note Ctrl-C before typer sees it: typer turns KeyboardInterrupt into a silent ``return 130``. Returns
    the previous handler to restore (None: left alone, e.g. SIGINT ignored in a background job)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None

    def on_sigint(signum: int, frame: Any) -> None:
        seen.append(True)
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_sigint)


def _aborted(contract: Contract, json_out: bool, out: _Tracked) -> int:
    print("inferops: aborted", file=sys.stderr)
    if json_out and not out.wrote:
        print(json.dumps(contract.error_json("aborted", 130)), file=out.inner)
    return 130


def _command_words(argv: list[str]) -> list[str]:
    """``["drbd", "check"]`` for ``drbd check --input x``: the words that name the command."""
    words = []
    for a in argv:
        if a.startswith("-") or len(words) == 2:
            break
        words.append(a)
    return words


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def classify(exc: BaseException, command: str) -> InferopsError:
    """The typed error for anything a command raised: what the boundary prints and exits with."""
    if isinstance(exc, InferopsError):
        return exc
    if isinstance(exc, _click_exc("UsageError")):
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else "inferops"
        where = path.removeprefix("inferops ") if path != "inferops" else "usage"
        return BadInput(f"{where}: {_one_line(exc.format_message())} (see {path} --help)")
    if isinstance(exc, _click_exc("ClickException")):  # e.g. click.FileError: a path we were given
        return BadInput(f"{command}: {_one_line(exc.format_message())}")
    if "pydantic_core" in sys.modules:
        from pydantic_core import ValidationError

        if isinstance(exc, ValidationError):
            from flows.common.errors import bad_input_from

            return bad_input_from(exc, command)
    if isinstance(exc, OSError) and exc.filename is not None:
        what = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        reason = exc.strerror or type(exc).__name__
        if exc.errno in _PATH_ERRNOS:
            return BadInput(f"{what}: {reason}")
        return InferopsError(f"{what}: {reason}", exit_code=1)
    msg = _one_line(str(exc)) or "(no message)"
    if "botocore" in sys.modules:  # an AWS call that no adapter wrapped: the backend's answer, not our bug
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, (BotoCoreError, ClientError)):
            return BackendUnavailable(f"{command}: AWS: {msg}")
    return InferopsError(f"internal error: {type(exc).__name__}: {msg} (INFEROPS_DEBUG=1 for a traceback)",
                         exit_code=1)


def _report(err: InferopsError, contract: Contract, json_out: bool, out: _Tracked) -> int:
    code = contract.failure_code if contract.failure_code is not None else err.exit_code
    msg = redact(str(err))
    print(f"inferops: {msg}", file=sys.stderr)
    if not out.wrote:
        if json_out:
            print(json.dumps(contract.error_json(msg, code)), file=out.inner)
        elif contract.status_line is not None:
            print(contract.status_line(msg), file=out.inner)
    return code


def run(argv: list[str]) -> int:
    """Run one command; returns its exit code (never raises, unless ``INFEROPS_DEBUG=1``)."""
    words = _command_words(argv)
    group = words[0] if words and words[0] in GROUPS else None
    contract = CONTRACTS.get(group or "", DEFAULT)
    json_out = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    debug = os.environ.get("INFEROPS_DEBUG", "").lower() in ("1", "true")
    if not argv or argv[0] in ("-h", "--help"):
        group = None
    elif group is None and words and words[0] in BUILTINS:
        group = "__builtin__"
    out, err = _Tracked(sys.stdout), _Tracked(sys.stderr)
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    interrupted: list[bool] = []
    previous = _catch_sigint(interrupted)
    try:
        app = build_app(group)
        rv = app(args=argv, prog_name="inferops", standalone_mode=False)
        if interrupted:  # Ctrl-C, which typer answers with a bare 130
            return _aborted(contract, json_out, out)
        return rv if isinstance(rv, int) else 0
    except KeyboardInterrupt:
        return _aborted(contract, json_out, out)
    except Exception as exc:
        if isinstance(exc, _click_exc("NoArgsIsHelpError")):  # `inferops drbd`: its help, as a usage error
            sys.stdout = sys.stderr  # typer's rich help prints itself (to stdout); the help goes to stderr
            try:
                text = exc.ctx.get_help()  # type: ignore[attr-defined]
            finally:
                sys.stdout = out
            if text.strip():
                print(text, file=sys.stderr)
            return contract.failure_code if contract.failure_code is not None else 2
        if isinstance(exc, _click_exc("Abort")) or interrupted:  # a prompt got EOF or ^C
            return _aborted(contract, json_out, out)
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:  # `inferops ... | head`
            return 1
        if debug:
            raise
        return _report(classify(exc, " ".join(words) or "inferops"), contract, json_out, out)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGINT, previous)
        sys.stdout, sys.stderr = out.inner, err.inner
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


def main(argv: list[str] | None = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Prefect's SDK telemetry phones home from interactive terminals on import; an ops tool on a
    # locked-down host must not. An explicit DO_NOT_TRACK (even "0") is respected.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
