"""Hypothesis strategies for hostile input: bytes, truncations, wrong types, huge and non-finite numbers,
unicode file names; and an in-process CLI runner that checks the exit-code contract."""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import strategies as st

from flows.common import cli

# values of the wrong type, or of the right type and absurd
HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**30, -1, 0, 2**63, 2**64 + 1, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0]),
    st.text(max_size=20),
    st.sampled_from(["", "1e400", "NaN", "-Infinity", "0x10", "١٢", "\x00", "9" * 5000]),
)
HOSTILE_VALUES = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)

# a file name from any script (the file system takes any bytes but '/' and NUL; keep it < 255 bytes)
UNICODE_NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                        min_size=1, max_size=40).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)


def dump(doc, as_json: bool) -> str:
    """JSON (huge ints and non-finite floats written as Python would) or YAML."""
    if as_json:
        return json.dumps(doc, default=str)
    import yaml

    return yaml.safe_dump(doc, allow_unicode=True)


def mutate(doc, path: list, value):
    """``doc`` (JSON-like) with the element at ``path`` replaced by ``value``."""
    if not path:
        return value
    head, *rest = path
    if isinstance(doc, dict):
        return {**doc, head: mutate(doc.get(head), rest, value)}
    if isinstance(doc, list) and doc:
        i = head % len(doc) if isinstance(head, int) else 0
        return [*doc[:i], mutate(doc[i], rest, value), *doc[i + 1:]]
    return value


def paths(doc, prefix=()) -> list[tuple]:
    """Every path into a JSON-like document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def numbers_made_huge(text: str, digits: int) -> str:
    """``text`` with every run of digits replaced by one of ``digits`` digits."""
    return re.sub(r"\d+", "9" * digits, text)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """``flows.common.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(argv)
        except SystemExit as done:
            code = done.code
    return code, out.getvalue(), err.getvalue()


def assert_contract(code: int, out: str, err: str, allowed: set[int], *, json_out: bool = False,
                    names: tuple[str, ...] = (), bad_input: int | None = 2) -> None:
    """The contract: an allowed exit code, no traceback, no internal error, at most one error line
    (exactly one on a ``bad_input`` exit, naming one of ``names``), JSON on stdout with --json."""
    assert code in allowed, (code, err[-500:])
    assert "Traceback" not in out + err and "internal error" not in err, err[-1000:]
    lines = [line for line in err.splitlines() if line.startswith("inferops:")]
    assert len(lines) <= 1, lines
    if code == bad_input:
        assert len(lines) == 1, err[-500:]
        if names:
            assert any(n in lines[0] for n in names), (lines[0], names)
    if json_out:
        json.loads(out.strip().splitlines()[-1])


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return path
