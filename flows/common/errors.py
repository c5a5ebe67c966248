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
