"""The YAML/JSON documents users hand us (job queues, capacity snapshots, manifests, extra vars), and
the files we write where they tell us (``--out``): every way they can be wrong is a one-line
:class:`~flows.common.errors.BadInput` naming the input, never a traceback.

Covered: missing or unreadable paths, directories, binary or non-UTF-8 bytes, invalid or absurdly
nested YAML/JSON, numbers beyond Python's int-string limit, non-finite numbers where JSON forbids
them, a document of the wrong shape, and output paths under a regular file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from flows.common.errors import BadInput
from flows.common.redact import redact

_SNIPPET = 160


def _why(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:_SNIPPET] or type(exc).__name__


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped); ``what`` names it in errors (``"job queue"``)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"{what} {p}: {exc.strerror or _why(exc)}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} {p}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") \
            from None
    if "\x00" in text:
        raise BadInput(f"{what} {p}: binary data, not text (NUL at offset {text.index(chr(0))})")
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:40]} is out of range")
    return v


def parse_document(text: str, what: str) -> Any:
    """YAML or JSON (JSON when it starts with ``{`` or ``[``) into Python data; every float in it finite."""
    is_json = text.lstrip().startswith(("{", "["))
    try:
        if is_json:
            doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except RecursionError:
        raise BadInput(f"{what} is not valid YAML/JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the int-string limit, NaN/Infinity/1e400
        raise BadInput(f"{what} is not valid YAML/JSON: {_why(exc)}") from None
    except Exception as exc:
        import yaml

        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem and exc.problem_mark:
            m = exc.problem_mark
            raise BadInput(f"{what} is not valid YAML/JSON: {exc.problem} (line {m.line + 1}, column "
                           f"{m.column + 1})") from None
        if isinstance(exc, yaml.YAMLError):
            raise BadInput(f"{what} is not valid YAML/JSON: {_why(exc)}") from None
        raise
    _check_finite(doc, what)
    return doc


def _check_finite(doc: Any, what: str) -> None:
    """No NaN or infinity anywhere (YAML's .nan, .inf, 1e400); YAML aliases may make cycles."""
    stack, seen = [doc], set()
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise BadInput(f"{what}: {v} is not a finite number")
        if isinstance(v, dict | list) and id(v) not in seen:
            seen.add(id(v))
            stack.extend(v.values() if isinstance(v, dict) else v)
            if isinstance(v, dict):
                stack.extend(k for k in v if isinstance(k, float))


def load_document(path: str | os.PathLike[str], what: str) -> Any:
    """:func:`read_text` then :func:`parse_document`, errors naming ``what`` and the path."""
    return parse_document(read_text(path, what), f"{what} {path}")


def require_mapping(doc: Any, what: str, *keys: str) -> dict[str, Any]:
    """``doc`` as a mapping whose ``keys`` are mappings too (a Kubernetes object: ``metadata``, ``spec``)."""
    if not isinstance(doc, dict):
        raise BadInput(f"{what}: expected a mapping, got {_kind(doc)}")
    for key in keys:
        if not isinstance(doc.get(key), dict):
            got = "nothing" if key not in doc else _kind(doc[key])
            raise BadInput(f"{what}: {key!r} must be a mapping, got {got}")
    return doc


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def finite(v: float, what: str, *, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``v`` if it is a finite number within [lo, hi], else :class:`BadInput`."""
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise BadInput(f"{what}: {str(v)[:40]} is not a number in [{lo:g}, {hi:g}]")
    return v


def write_text(path: str | os.PathLike[str], text: str, what: str) -> Path:
    """Write the report ``text`` to ``path`` atomically (parents created), redacted (no URL userinfo in
    a file we write); a path we cannot write is bad input."""
    p = Path(path)
    text = redact(text)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(p))
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        blocker = next((a for a in p.parents if a.is_file()), None)
        detail = f"{blocker} is a file, not a directory" if blocker else (exc.strerror or _why(exc))
        raise BadInput(f"{what} {p}: cannot write: {detail}") from None
    return p
