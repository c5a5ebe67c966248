"""``metav1.Status`` failures, as the apiserver sends them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _details(res: Any, name: str) -> dict[str, Any]:
    d = {"name": name, "kind": res.plural}
    if res.group:
        d["group"] = res.group
    return d


def not_found(res: Any, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def already_exists(res: Any, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def conflict(res: Any, name: str, why: str = "the object has been modified; please apply your changes "
             "to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    _details(res, name))


def invalid(res: Any, name: str, causes: list[tuple[str, ...]]) -> ApiError:
    """``causes``: (field, message) or (field, reason, message) → 422 Invalid, aggregated as the apiserver does."""
    full = [c if len(c) == 3 else (c[0], "FieldValueInvalid", c[1]) for c in causes]
    parts = [f"{f}: {m}" for f, _, m in full]
    msg = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(res, name)
    details["kind"] = res.kind
    details["causes"] = [{"reason": r, "message": m, "field": f} for f, r, m in full]
    grp = f".{res.group}" if res.group else ""
    return ApiError(422, "Invalid", f'{res.kind}{grp} "{name}" is invalid: {msg}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
