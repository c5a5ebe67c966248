"""The thin Prefect shell: the one place that decides between a Prefect run and an offline run.

Deployments and ``inferops`` subcommands run the *same* flow functions. Flow modules decorate with
this module's :func:`flow` and :func:`task` (never ``prefect.flow``/``prefect.task``), use
:data:`NO_CACHE`, :func:`get_logger`, :func:`current_run_id`, :func:`can_pause` and
:func:`pause_for_input`, and the CLI calls :func:`run_flow`. Offline runs call the flow's
``on_failure``/``on_crashed`` hooks as a Prefect run would (:func:`run_offline`).

* **Prefect needed** (a Prefect API is configured, or Prefect is already imported, as in a worker,
  the flow engine, ``prefect deploy`` or the test harness): the decorators build real ``prefect.Flow``
  and ``prefect.Task`` objects, so workers load deployments from their ``prefect.yaml`` entrypoints and
  runs are recorded as usual.
* **Offline** (no API configured: cron, CI, a laptop): the decorators build light objects and Prefect
  is never imported. A flow call runs its function inline; tasks run inline with the same retries,
  delays and ``retry_condition_fn`` as a Prefect run; logs go to stderr (redacted); artifacts and
  events are logged locally (:mod:`flows.common.artifacts`).

A light object turns into the real Prefect object on first need (called inside a Prefect run, with an
API configured, or asked for a Prefect-only attribute such as ``.deploy``), so the decision at import
time is never a trap. The API is detected without importing Prefect: :func:`configured_api_url`
reads what Prefect reads (the environment, ``.env``, ``prefect.toml``, ``pyproject.toml`` and the
active profile of ``$PREFECT_HOME/profiles.toml``); once Prefect is imported its own settings decide.
``INFEROPS_OFFLINE=1`` forces offline runs.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flows.common.redact import redact

R = TypeVar("R")

_OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("inferops_offline", default=False)
log = logging.getLogger("inferops")


# ------------------------------------------------------------------ is a Prefect API configured?
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def forced_offline() -> bool:
    return _truthy(os.environ.get("INFEROPS_OFFLINE"))


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError):  # unreadable or not TOML: Prefect ignores it too (with a warning)
        return {}


def _dotenv(path: Path, key: str) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError):
        return None
    for line in lines:
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and name.strip() == key:
            return value.strip().strip("'\"") or None
    return None


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect resolves it, read without importing Prefect.

    Sources in Prefect's order: the environment, ``./.env``, ``./prefect.toml`` (``[api] url``),
    ``./pyproject.toml`` (``[tool.prefect.api] url``), then the active profile (``PREFECT_PROFILE``
    or the file's ``active``) of ``PREFECT_PROFILES_PATH`` (default ``$PREFECT_HOME/profiles.toml``,
    ``PREFECT_HOME`` defaulting to ``~/.prefect``).
    """
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"] or None
    found = _dotenv(Path(".env"), "PREFECT_API_URL")
    if found:
        return found
    for doc in (_toml(Path("prefect.toml")), _toml(Path("pyproject.toml")).get("tool", {}).get("prefect", {})):
        api = doc.get("api") if isinstance(doc, dict) else None
        if isinstance(api, dict) and api.get("url"):
            return str(api["url"])
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = _toml(Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser())
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    profile = (profiles.get("profiles") or {}).get(active) if isinstance(active, str) else None
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(url) if url else None


def prefect_loaded() -> bool:
    return "prefect" in sys.modules


def api_configured() -> bool:
    """True when a Prefect API URL is configured (environment, files, profile or test harness)."""
    if prefect_loaded():  # its settings context (the test harness, a worker) is the authority
        from prefect.settings import get_current_settings

        return bool(get_current_settings().api.url)
    return bool(configured_api_url())


def prefect_wanted() -> bool:
    """Whether decorators build real Prefect objects now (Prefect loaded, or an API to record runs in)."""
    return prefect_loaded() or (not forced_offline() and api_configured())


# ------------------------------------------------------------------ offline context
def is_offline() -> bool:
    return _OFFLINE.get()


@contextmanager
def offline() -> Iterator[None]:
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def in_prefect_run() -> bool:
    """Inside a Prefect flow or task run (never true offline, never imports Prefect)."""
    if is_offline() or "prefect.context" not in sys.modules:
        return False
    from prefect.context import FlowRunContext, TaskRunContext

    return bool(FlowRunContext.get() or TaskRunContext.get())


def flow_run_id() -> str | None:
    """The id of the Prefect flow run we are in, None offline."""
    if not in_prefect_run():
        return None
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("inferops_run_id", default=None)


def current_run_id() -> str:
    """The id of the run in progress: the Prefect flow run's id, else the offline run's own id
    (``cli-<uuid>``, the same for the whole run and for its failure hooks)."""
    run_id = flow_run_id() or _RUN_ID.get()
    if run_id is None:  # a bare flow.fn() call outside run_flow: one id from now on in this context
        run_id = f"cli-{uuid.uuid4()}"
        _RUN_ID.set(run_id)
    return run_id


def can_pause() -> bool:
    """True inside a recorded Prefect flow run, where a run can pause for a human (:func:`pause_for_input`)."""
    return flow_run_id() is not None


# ------------------------------------------------------------------ options shared by both worlds
class _NoCache:
    """Stands for ``prefect.cache_policies.NO_CACHE`` until a real Prefect task is built."""

    def __repr__(self) -> str:
        return "NO_CACHE"


NO_CACHE: Any = _NoCache()


def _prefect_options(options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    if isinstance(opts.get("cache_policy"), _NoCache):
        from prefect.cache_policies import NO_CACHE as PREFECT_NO_CACHE

        opts["cache_policy"] = PREFECT_NO_CACHE
    return opts


class OfflineState:
    """What a state hook or a ``retry_condition_fn`` gets offline, in place of a Prefect ``State``
    (``name`` Failed or Crashed, ``data`` the exception, ``result()`` raising it)."""

    def __init__(self, name: str, exc: BaseException) -> None:
        self.name, self.type, self.data = name, name.upper(), exc
        self.message = f"Task run encountered unexpected exception: {exc!r}" if name == "Failed" \
            else f"{type(exc).__name__}: {exc}"

    def is_failed(self) -> bool:
        return self.name == "Failed"

    def is_crashed(self) -> bool:
        return self.name == "Crashed"

    def is_completed(self) -> bool:
        return False

    def result(self, raise_on_failure: bool = True, **_: Any) -> Any:
        if raise_on_failure:
            raise self.data
        return self.data


class _TaskRunInfo:
    """The ``task_run`` argument of ``retry_condition_fn`` offline (no id: nothing is recorded)."""

    def __init__(self, name: str) -> None:
        self.id = None
        self.name = name
        self.run_count = 0


def _delays(retry_delay_seconds: Any, retries: int) -> list[float]:
    d = retry_delay_seconds
    if callable(d):  # prefect.tasks.exponential_backoff(...) and friends
        d = d(retries)
    if isinstance(d, list | tuple):
        return [float(x) for x in d] or [0.0]
    return [float(d or 0)]


def offline_retry_ok(task: Any, exc: BaseException, *, condition: Callable[..., Any] | None = None,
                     task_run: Any = None) -> bool:
    """A task's ``retry_condition_fn`` asked offline the way Prefect asks it: (task, task_run, state)."""
    fn = condition or task.retry_condition_fn
    try:
        return bool(fn(task, task_run, OfflineState("Failed", exc)))
    except Exception:  # like Prefect: a predicate that raises means "do not retry"
        log.exception("retry_condition_fn of task %s raised; not retrying", getattr(task, "name", task))
        return False


def _run_inline(task_obj: Any, fn: Callable[..., Any], options: dict[str, Any], args: tuple, kwargs: dict) -> Any:
    """Run a task's function now, retried the way Prefect retries it."""
    retries = int(options.get("retries") or 0)
    delays = _delays(options.get("retry_delay_seconds"), retries)
    condition = options.get("retry_condition_fn")
    name = options.get("name") or fn.__name__
    info = _TaskRunInfo(name)
    while True:
        info.run_count += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            attempt = info.run_count
            retry = attempt <= retries
            if retry and callable(condition):
                retry = offline_retry_ok(task_obj, exc, condition=condition, task_run=info)
            if not retry:
                raise
            delay = delays[min(attempt - 1, len(delays) - 1)]
            log.warning("task %s failed (%s); retry %d/%d in %gs", name, exc, attempt, retries, delay)
            time.sleep(delay)


class _DoneFuture:
    """What ``.submit()`` returns offline: the work already ran inline."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._exc: BaseException | None = None
        self._value: Any = None
        try:
            self._value = fn()
        except Exception as exc:  # surfaced on .result(), like a PrefectFuture
            self._exc = exc

    def result(self, raise_on_failure: bool = True, timeout: float | None = None) -> Any:
        if self._exc is not None and raise_on_failure:
            raise self._exc
        return self._exc if self._exc is not None else self._value

    def wait(self, timeout: float | None = None) -> None:
        return None


def _map_inline(run_one: Callable[[tuple, dict], Any], args: tuple, kwargs: dict) -> list[_DoneFuture]:
    keys = list(kwargs)
    n = len(args[0]) if args else len(kwargs[keys[0]])
    return [_DoneFuture(lambda i=i: run_one(tuple(a[i] for a in args), {k: kwargs[k][i] for k in keys}))
            for i in range(n)]


# ------------------------------------------------------------------ tasks
@functools.cache
def _ops_task_class() -> type:
    """A ``prefect.Task`` that runs inline (same retries) inside an offline run; built on first use."""
    from prefect import Task

    class OpsTask(Task):
        def _inline(self, args: tuple, kwargs: dict) -> Any:
            opts = {"name": self.name, "retries": self.retries, "retry_delay_seconds": self.retry_delay_seconds,
                    "retry_condition_fn": self.retry_condition_fn}
            return _run_inline(self, self.fn, opts, args, kwargs)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if is_offline():
                return self._inline(args, kwargs)
            return super().__call__(*args, **kwargs)

        def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if is_offline():
                return _DoneFuture(lambda: self._inline(args, kwargs))
            return super().submit(*args, **kwargs)

        def map(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if is_offline():
                return _map_inline(self._inline, args, kwargs)
            return super().map(*args, **kwargs)

    return OpsTask


class LightTask:
    """An offline task: inline with retries; the real Prefect task inside a Prefect run."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn, self.options = fn, dict(options)
        self.name = options.get("name") or fn.__name__
        self.retries = int(options.get("retries") or 0)
        self.retry_delay_seconds = options.get("retry_delay_seconds", 0)
        self.retry_condition_fn = options.get("retry_condition_fn")
        self._real: Any = None
        functools.update_wrapper(self, fn)

    def to_prefect(self) -> Any:
        if self._real is None:
            self._real = _ops_task_class()(fn=self.fn, **_prefect_options(self.options))
        return self._real

    def _inline(self, args: tuple, kwargs: dict) -> Any:
        return _run_inline(self, self.fn, self.options, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_prefect_run():
            return self.to_prefect()(*args, **kwargs)
        return self._inline(args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        if in_prefect_run():
            return self.to_prefect().submit(*args, **kwargs)
        return _DoneFuture(lambda: self._inline(args, kwargs))

    def map(self, *args: Any, **kwargs: Any) -> Any:
        if in_prefect_run():
            return self.to_prefect().map(*args, **kwargs)
        return _map_inline(self._inline, args, kwargs)

    def with_options(self, **options: Any) -> LightTask:
        return LightTask(self.fn, {**self.options, **options})

    def __getattr__(self, name: str) -> Any:  # Prefect-only API (e.g. .delay): the real task
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.to_prefect(), name)


def task(__fn: Callable[..., R] | None = None, **options: Any) -> Any:
    """``@task`` / ``@task(...)`` with Prefect's options: a real Prefect task when Prefect is needed,
    else a :class:`LightTask`. Either way, inside an offline run it executes inline with its retries."""

    def decorate(fn: Callable[..., R]) -> Any:
        if prefect_wanted():
            return _ops_task_class()(fn=fn, **_prefect_options(options))
        return LightTask(fn, options)

    return decorate(__fn) if __fn is not None else decorate


ops_task = task  # the older name


# ------------------------------------------------------------------ flows
class LightFlow:
    """An offline flow: calling it runs the function inline (see :func:`run_flow`); anything
    Prefect-only (``.deploy``, ``.parameters``, ``.validate_parameters`` ...) builds the real flow."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn, self.options = fn, dict(options)
        self.name = options.get("name") or fn.__name__.replace("_", "-")
        self.on_failure_hooks = list(options.get("on_failure") or [])
        self.on_crashed_hooks = list(options.get("on_crashed") or [])
        self._real: Any = None
        functools.update_wrapper(self, fn)

    def to_prefect(self) -> Any:
        if self._real is None:
            from prefect import flow as prefect_flow

            self._real = prefect_flow(**self.options)(self.fn)
        return self._real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if is_offline():  # a subflow of an offline run
            return self.fn(*args, **kwargs)
        if in_prefect_run() or (not forced_offline() and api_configured()):
            return self.to_prefect()(*args, **kwargs)
        log_to_stderr()
        return run_offline(self, _bind(self.fn, args, kwargs))

    def with_options(self, **options: Any) -> LightFlow:
        return LightFlow(self.fn, {**self.options, **options})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.to_prefect(), name)


def flow(__fn: Callable[..., R] | None = None, **options: Any) -> Any:
    """``@flow`` / ``@flow(...)`` with Prefect's options: a real ``prefect.Flow`` when Prefect is
    needed (workers load these from prefect.yaml), else a :class:`LightFlow`."""

    def decorate(fn: Callable[..., R]) -> Any:
        if prefect_wanted():
            from prefect import flow as prefect_flow

            return prefect_flow(**options)(fn)
        return LightFlow(fn, options)

    return decorate(__fn) if __fn is not None else decorate


# ------------------------------------------------------------------ logging, running, pausing
class RedactFilter(logging.Filter):
    """Masks every URL's userinfo in a record before any handler (stderr, Prefect's API log handler,
    a test's capture) sees it (:func:`flows.common.redact.redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


class RedactingFormatter(logging.Formatter):
    """Offline log lines with every URL's userinfo masked, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_REDACT = RedactFilter()
log.addFilter(_REDACT)


def get_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a Prefect run, else the ``inferops`` std logger; both redacted."""
    if in_prefect_run():
        from prefect.logging import get_run_logger

        run_logger = get_run_logger()
        base = getattr(run_logger, "logger", run_logger)
        if _REDACT not in base.filters:
            base.addFilter(_REDACT)
        return run_logger
    return log


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (the CLI's redacting stream, a test's capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def log_to_stderr() -> None:
    """Offline runs, and CLI commands that run core code outside a flow (a watch's warnings, say), log
    INFO and up to stderr (stdout stays for --json) in one format (time, level, message), redacted."""
    if not log.handlers:
        handler = _StderrHandler(sys.stderr)
        handler.addFilter(_REDACT)  # records of child loggers (inferops.metrics ...) too
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def run_flow(flow_obj: Any, **params: Any) -> Any:
    """Run a flow the way the CLI should: recorded when an API is configured, inline otherwise."""
    if not forced_offline() and api_configured():
        real = flow_obj.to_prefect() if isinstance(flow_obj, LightFlow) else flow_obj
        return real(**params)
    log_to_stderr()
    return run_offline(flow_obj, params)


def _bind(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    import inspect

    return dict(inspect.signature(fn).bind(*args, **kwargs).arguments)


def run_offline(flow_obj: Any, params: dict[str, Any]) -> Any:
    """Run a flow's function inline and, as a Prefect run would, call its ``on_failure`` hooks when it
    raises and its ``on_crashed`` hooks when it is interrupted (Ctrl-C, SystemExit)."""
    token = _RUN_ID.set(f"cli-{uuid.uuid4()}")
    try:
        with offline():
            try:
                return flow_obj.fn(**params)
            except Exception as exc:
                _call_hooks(flow_obj, getattr(flow_obj, "on_failure_hooks", []), params, "Failed", exc)
                raise
            except BaseException as exc:
                _call_hooks(flow_obj, getattr(flow_obj, "on_crashed_hooks", []), params, "Crashed", exc)
                raise
    finally:
        _RUN_ID.reset(token)


def _call_hooks(flow_obj: Any, hooks: list[Callable[..., Any]], params: dict[str, Any], state_name: str,
                exc: BaseException) -> None:
    from types import SimpleNamespace

    run = SimpleNamespace(id=current_run_id(), name=current_run_id(), parameters=dict(params))
    for hook in hooks:
        try:
            hook(flow_obj, run, OfflineState(state_name, exc))
        except Exception:  # a hook reports; it never hides the run's own error
            log.exception("state hook %s failed", getattr(hook, "__name__", hook))


def pause_for_input(model: type[R], *, description: str, timeout_s: float, poll_interval_s: float = 2) -> R | None:
    """Pause this Prefect flow run for a human to fill ``model`` (a plain pydantic model) in the UI.

    Returns the filled model, or None when nobody answered within ``timeout_s``. Needs a Prefect run.
    """
    if not in_prefect_run():
        raise RuntimeError("pause_for_input needs a Prefect flow run")
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.input import RunInput

    form = _run_input_class(model, RunInput)
    try:
        return pause_flow_run(wait_for_input=form.with_initial_data(description=description),
                              timeout=int(timeout_s), poll_interval=int(poll_interval_s))
    except FlowPauseTimeout:
        return None


@functools.cache
def _run_input_class(model: type, run_input: type) -> type:
    return type(model.__name__, (model, run_input), {"__module__": model.__module__})
