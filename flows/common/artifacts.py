"""Artifacts, progress and events: visible in the Prefect UI inside a run, logged locally offline.

Never put secrets in what you pass here: artifacts are readable by everyone with UI access. As a
last line of defence every string (markdown, table cells, descriptions, event payloads) goes through
:func:`flows.common.redact.redact`, which masks the userinfo of any URL. Offline, nothing here
imports Prefect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from flows.common.redact import redact, redact_obj
from flows.common.runtime import api_configured, get_logger, in_prefect_run, is_offline


def _in_run() -> bool:
    return in_prefect_run()


def _key(key: str) -> str:
    # Prefect artifact keys: lowercase letters, numbers and dashes only
    return "".join(c if c.isalnum() else "-" for c in key.lower()).strip("-")


def markdown(key: str, body: str, description: str | None = None) -> None:
    body, description = redact(body), _redact_opt(description)
    if _in_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=_key(key), markdown=body, description=description)
    else:
        get_logger().debug("artifact %s (markdown, %d chars)", key, len(body))


def code(text: str) -> str:
    """``text`` as one Markdown code span, whatever it holds (a file name may hold backticks, ``<``,
    ``|``, or a line break): a fence longer than any run of backticks inside (CommonMark), line breaks
    as spaces."""
    text = " ".join(str(text).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(key: str, rows: Sequence[Mapping[str, Any]], description: str | None = None) -> None:
    rows = [{k: _cell(v) for k, v in r.items()} for r in rows]
    description = _redact_opt(description)
    if _in_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(key=_key(key), table=list(rows), description=description)
    else:
        get_logger().debug("artifact %s (table, %d rows)", key, len(rows))


def _cell(v: Any) -> Any:
    if isinstance(v, str):
        return redact(v)
    if v is None or isinstance(v, int | float | bool):
        return v
    return redact(json.dumps(v, default=str))


def _redact_opt(text: str | None) -> str | None:
    return None if text is None else redact(text)


class Progress:
    """A progress artifact for long work: ``p = Progress("backup", total); p.advance(n)``."""

    def __init__(self, description: str, total: float) -> None:
        self.total = max(float(total), 1.0)
        self.done = 0.0
        self._id: UUID | None = None
        self._last = -1.0
        if _in_run():
            from prefect.artifacts import create_progress_artifact

            self._id = create_progress_artifact(progress=0.0, description=redact(description))

    def advance(self, amount: float = 1.0) -> None:
        self.done += amount
        pct = min(100.0, 100.0 * self.done / self.total)
        if self._id is not None and pct - self._last >= 1.0:  # at most ~100 API calls
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self._id, progress=pct)
            self._last = pct

    def finish(self) -> None:
        self.done = self.total
        if self._id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self._id, progress=100.0)


def emit(event: str, resource_id: str, payload: Mapping[str, Any] | None = None,
         **resource_labels: str) -> None:
    """Emit a Prefect event (e.g. ``inferops.model.built``); offline it is only logged."""
    resource = redact_obj({"prefect.resource.id": resource_id, **resource_labels})
    if is_offline() or not api_configured():  # never start Prefect's temporary server just to emit
        get_logger().debug("event %s for %s (not sent: no Prefect API)", event, resource_id)
        return
    from prefect.events import emit_event

    emit_event(event=event, resource=resource, payload=redact_obj(dict(payload or {})))
