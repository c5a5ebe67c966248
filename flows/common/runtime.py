"""The thin Prefect shell: one place that decides whether we talk to a Prefect API.

Deployments and ``inferops`` subcommands run the *same* flow functions. When ``PREFECT_API_URL``
points at a server, a flow call is a real Prefect flow run (recorded, visible in the UI). When no
server is configured, a CLI call must not spin up Prefect's temporary server (seconds per call,
bad for cron and CI), so :func:`run_flow` calls the flow's function directly with tasks executed
inline ("offline"). Offline runs keep retries, logging goes to stderr, artifacts and events are
logged locally instead of being sent.

Pipelines use:

* ``@ops_task(...)`` instead of ``@task`` (a ``prefect.Task`` subclass, so deployments see a
  normal task);
* ``get_logger()`` instead of ``get_run_logger()``;
* ``run_flow(flow, **params)`` from the CLI;
* ``flows.common.artifacts`` for artifacts and events.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Task
from prefect.context import FlowRunContext, TaskRunContext

R = TypeVar("R")

_OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("inferops_offline", default=False)
log = logging.getLogger("inferops")


def api_configured() -> bool:
    """True when a Prefect API URL is configured (env, profile or test harness)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def is_offline() -> bool:
    return _OFFLINE.get()


@contextmanager
def offline() -> Iterator[None]:
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


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


class OpsTask(Task):
    """A Prefect task that runs inline, with the same retries, when no Prefect API is configured."""

    def _run_offline(self, args: tuple, kwargs: dict) -> Any:
        attempts = int(self.retries or 0) + 1
        delays = self.retry_delay_seconds
        for attempt in range(1, attempts + 1):
            try:
                return self.fn(*args, **kwargs)
            except Exception as exc:
                retry_ok = attempt < attempts
                if retry_ok and self.retry_condition_fn is not None:
                    retry_ok = offline_retry_ok(self, exc)
                if not retry_ok:
                    raise
                delay = delays[attempt - 1] if isinstance(delays, list | tuple) else (delays or 0)
                log.warning("task %s failed (%s); retry %d/%d in %ss", self.name, exc, attempt,
                            attempts - 1, delay)
                time.sleep(float(delay))
        raise AssertionError("unreachable")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if is_offline():
            return self._run_offline(args, kwargs)
        return super().__call__(*args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if is_offline():
            return _DoneFuture(lambda: self._run_offline(args, kwargs))
        return super().submit(*args, **kwargs)

    def map(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if is_offline():
            iterables = [a for a in args]
            keys = list(kwargs)
            n = len(iterables[0]) if iterables else len(kwargs[keys[0]])
            return [
                _DoneFuture(lambda i=i: self._run_offline(tuple(a[i] for a in iterables),
                                                          {k: kwargs[k][i] for k in keys}))
                for i in range(n)
            ]
        return super().map(*args, **kwargs)


def ops_task(__fn: Callable[..., R] | None = None, **options: Any) -> Any:
    """Drop-in for ``@task`` / ``@task(...)`` returning an :class:`OpsTask`."""

    def decorate(fn: Callable[..., R]) -> OpsTask:
        return OpsTask(fn=fn, **options)

    return decorate(__fn) if __fn is not None else decorate


def get_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run, else the ``inferops`` std logger."""
    if not is_offline() and (FlowRunContext.get() or TaskRunContext.get()):
        from prefect.logging import get_run_logger

        return get_run_logger()
    return log


def _log_to_stderr() -> None:
    """Offline runs log INFO and up to stderr (stdout stays for --json). Prefect's root console
    handler sits at WARNING, so the ``inferops`` logger gets its own handler."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def run_flow(flow_obj: Any, **params: Any) -> Any:
    """Run a flow the way the CLI should: recorded when an API is configured, inline otherwise."""
    if api_configured() and os.environ.get("INFEROPS_OFFLINE", "") not in ("1", "true"):
        return flow_obj(**params)
    _log_to_stderr()
    return run_offline(flow_obj, params)


# ---- run identity, pausing, offline state hooks and retry predicates ----------------------------
# Small and import-light (Prefect is imported inside functions only): pipelines ask these instead
# of checking is_offline() themselves.

_RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("inferops_run_id", default=None)


def current_run_id() -> str:
    """The id of the run in progress: the Prefect flow run's id, else the offline run's own id
    (``cli-<uuid>``, the same for the whole run and for its failure hooks)."""
    if not is_offline():
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx and ctx.flow_run:
            return str(ctx.flow_run.id)
    run_id = _RUN_ID.get()
    if run_id is None:  # a bare flow.fn() call outside run_flow: one id from now on in this context
        run_id = f"cli-{uuid.uuid4()}"
        _RUN_ID.set(run_id)
    return run_id


def can_pause() -> bool:
    """True inside a recorded Prefect flow run, where ``pause_flow_run`` can wait for a human."""
    if is_offline():
        return False
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run)


class OfflineState:
    """What a state hook or a ``retry_condition_fn`` gets offline, in place of a Prefect ``State``."""

    def __init__(self, name: str, exc: BaseException) -> None:
        self.name, self.data, self.message = name, exc, f"{type(exc).__name__}: {exc}"

    def is_failed(self) -> bool:
        return self.name == "Failed"

    def is_crashed(self) -> bool:
        return self.name == "Crashed"

    def result(self, raise_on_failure: bool = True) -> Any:
        if raise_on_failure:
            raise self.data
        return self.data


def offline_retry_ok(task: Any, exc: BaseException) -> bool:
    """A task's ``retry_condition_fn`` asked offline the way Prefect asks it: (task, task_run, state)."""
    try:
        return bool(task.retry_condition_fn(task, None, OfflineState("Failed", exc)))
    except Exception:  # like Prefect: a predicate that raises means "do not retry"
        log.exception("retry_condition_fn of task %s raised; not retrying", task.name)
        return False


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
