"""One redaction helper: the userinfo of every URL, of any scheme, in any text, becomes ``***``.

``https://user:pw@host/x`` → ``https://***@host/x``; ``s3://AKIA…:secret/with/slashes@bucket`` → ``s3://***@bucket``.
The CLI's error boundary, the offline log formatter, artifacts and written reports all go through
:func:`redact` (or :func:`redact_obj` for JSON-like data). No other module parses URLs for this.

Userinfo follows RFC 3986 (everything before the last ``@`` of the authority), widened for what users
really type: a password may hold unescaped ``/`` (AWS secret keys do), so ``scheme://name:pass/word@`` is
redacted as well. The one ``@`` taken for something else: after ``host:port/...`` *and* a ``?`` or ``#``
(PromQL's ``@`` modifier in a query string). Redacting a little too much (``http://host:8080/a@b``)
is accepted; leaking a secret is not. The scan is linear in the
text's length, whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
_STOP = re.compile(r"[\s\"'<>`]")  # a URL in text ends at whitespace, a quote or a bracket
_PORT = re.compile(r"\d{1,5}(?:[/?#]|$)")


def _userinfo_len(seg: str) -> int:
    """Length of the userinfo at the start of ``seg`` (a URL after its ``scheme://``), or -1."""
    at = seg.find("@")
    if at < 0:
        return -1
    authority = min([i for i in (seg.find("/"), seg.find("?"), seg.find("#")) if i >= 0], default=len(seg))
    if at < authority:  # RFC 3986: the userinfo runs to the authority's last @
        return seg.rfind("@", 0, authority)
    colon = seg.find(":")
    if 0 <= colon < authority:  # name:pass/with/slashes@host (AWS secret keys hold slashes)
        query = min([i for i in (seg.find("?"), seg.find("#")) if i >= 0], default=len(seg))
        if _PORT.match(seg, colon + 1) and query < at:  # host:9090/api?query=up @ 1700000000
            return -1
        slash = seg.find("/", at)
        return seg.rfind("@", 0, slash if slash >= 0 else len(seg))
    return -1


def redact(text: str) -> str:
    """``text`` with the userinfo of every ``scheme://userinfo@`` replaced by ``***`` (linear time)."""
    if "@" not in text or "://" not in text:  # the common case costs two scans
        return text
    schemes = list(_SCHEME.finditer(text))
    out, pos = [], 0
    for k, m in enumerate(schemes):
        limit = schemes[k + 1].start() if k + 1 < len(schemes) else len(text)
        stop = _STOP.search(text, m.end(), limit)
        seg = text[m.end():stop.start() if stop else limit]
        n = _userinfo_len(seg)
        if n >= 0:
            out += [text[pos:m.end()], MASK]
            pos = m.end() + n
    return "".join(out) + text[pos:]


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string (keys included) of JSON-like data."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_obj(v) for v in obj)
    return obj
