"""Safe templating of the analysis queries (PromQL), checked when a metric is loaded.

Every query returns one value for one track of one Deployment. Series are selected by the labels
``namespace``, ``deployment`` and ``track`` (stable | baseline | canary), which the Pods carry
(``inferops.io/track``) and which a ServiceMonitor/PodMonitor or relabelling copies onto the
series. Placeholders:

* ``{{namespace}}``, ``{{deployment}}``, ``{{track}}``: quoted PromQL string literals (use them as
  ``label={{track}}``);
* ``{{args.NAME}}``: the metric's named argument ``NAME``, also a quoted string literal;
* ``{{interval}}``: a validated duration, the analysis interval but at least 4 scrape intervals
  (use it as ``[{{interval}}]``).

Nothing else is substituted; unknown placeholders are rejected. :func:`check_template` runs when a
metric spec is loaded (a policy is built, a YAML file is read), never in the middle of a rollout.
"""

from __future__ import annotations

import re
from typing import Any

from flows.common.errors import BadInput
from flows.common.prom import quote_label_value, validate_duration

_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z_][a-zA-Z0-9_-]*)?)\s*\}\}")
_ARG_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,62}$")
TRACKS = ("stable", "baseline", "canary")
BUILTIN = ("namespace", "deployment", "track", "interval")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def render(template: str, *, namespace: str, deployment: str, track: Any, interval: str,
           args: dict[str, str] | None = None) -> str:
    """The query for one track. Label values are quoted, the interval validated."""
    if str(track) not in TRACKS:
        raise ValueError(f"track {track!r} is not one of {', '.join(TRACKS)}")
    values = {
        "namespace": quote_label_value(namespace),
        "deployment": quote_label_value(deployment),
        "track": quote_label_value(str(track)),
        "interval": validate_duration(interval),
        **{f"args.{k}": quote_label_value(v) for k, v in (args or {}).items()},
    }

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in values:
            allowed = ", ".join("{{" + v + "}}" for v in values)
            raise BadInput(f"unknown placeholder {{{{{name}}}}} in PromQL (allowed: {allowed})")
        return values[name]

    return _PLACEHOLDER.sub(sub, template)


def _balanced(query: str) -> str | None:
    """Why ``query`` is not well formed (brackets and string literals), or None."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in query:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != _PAIRS[ch]:
                return f"unbalanced {ch!r}"
    if quote:
        return "unterminated string literal"
    if stack:
        return f"unclosed {stack[-1]!r}"
    return None


def check_template(template: str, metric: str, args: dict[str, str] | None = None, *,
                   sibling: str = "") -> str:
    """Validate a query template at load time: it selects by track, every placeholder is known,
    every named argument is a valid name and value (and used by it or by the metric's ``sibling``
    query), and the rendered query is well formed."""
    if not template.strip():
        raise BadInput(f"metric {metric}: empty query")
    for name in args or {}:
        if not _ARG_NAME.fullmatch(name):
            raise BadInput(f"metric {metric}: argument name {name!r} is not a valid identifier")
    names = set(_PLACEHOLDER.findall(template))
    if "track" not in names:
        raise BadInput(f"metric {metric}: the query must use {{{{track}}}} to tell canary from baseline")
    try:
        rendered = render(template, namespace="x", deployment="x", track="canary", interval="1m", args=args)
    except BadInput as exc:
        raise BadInput(f"metric {metric}: {exc}") from None
    unused = {f"args.{k}" for k in args or {}} - names - set(_PLACEHOLDER.findall(sibling))
    if unused:
        raise BadInput(f"metric {metric}: argument(s) {', '.join(sorted(unused))} not used by the query")
    why = _balanced(rendered)
    if why:
        raise BadInput(f"metric {metric}: malformed PromQL ({why})")
    return template


def interval_duration(seconds: int) -> str:
    return validate_duration(f"{int(seconds)}s")


def rate_window(policy: Any) -> str:
    """The ``{{interval}}`` of the queries: the analysis interval, but never under 4 scrapes.

    rate() needs two samples inside its window; a window of one or two scrape intervals is empty
    whenever a scrape is late, and that reads as "no data" (an inconclusive interval).
    """
    return interval_duration(max(policy.interval_s, 4 * policy.scrape_interval_s))
