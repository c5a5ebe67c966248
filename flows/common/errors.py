"""Typed errors. Every user-facing failure is one of these: a one-line message and an exit code.

The CLI turns them into ``inferops: <message>`` on stderr and ``sys.exit(code)``; never a traceback.
"""

from __future__ import annotations


class InferopsError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user, ``exit_code`` the process status."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        # keep it one line: users grep logs and CI prints the last line
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(InferopsError):
    """Malformed or missing input named by the user (exit 2)."""

    exit_code = 2


class BackendUnavailable(InferopsError):
    """A configured backend (S3, Prometheus, Kubernetes, SSH, Prefect) cannot be reached (exit 1)."""

    exit_code = 1


class GateFailed(InferopsError):
    """A quality gate said no, e.g. the accuracy tolerance was not met (exit 3)."""

    exit_code = 3


def bad_input_from(exc: Exception, what: str) -> BadInput:
    """The one way a pydantic ``ValidationError`` (or any parse error) becomes :class:`BadInput`.

    ``what`` names the input (a file, a flag, a parameter). Each pydantic error is ``loc: msg``, the
    first three joined with ``; ``; the input value itself is never echoed (it may hold a secret).
    """
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors(include_url=False, include_input=False)[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        more = len(errors()) - len(parts)
        detail = "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    else:
        detail = str(exc) or type(exc).__name__
    return BadInput(f"{what}: {detail}" if what else detail)
