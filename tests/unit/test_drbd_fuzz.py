"""Property tests: no input crashes the parsers; anything unreadable is a ParseError (→ UNKNOWN)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.drbd_health.collect import HostOutput, judge
from flows.drbd_health.models import (
    CODES,
    CONN_STATES,
    DISK_STATES,
    REPL_STATES,
    ROLES,
    UNKNOWN_CODE,
    DrbdPolicy,
    Level,
)
from flows.drbd_health.parse import ParseError, parse

DATA = Path(__file__).parents[1] / "data" / "drbd"
CAPTURES = sorted(p.read_text() for p in DATA.iterdir())
POLICY = DrbdPolicy()


def _parse_or_error(text: str) -> None:
    try:
        parse(text)
    except ParseError as exc:
        assert "\n" not in str(exc) and str(exc)


def _judged(text: str):
    reports = judge(HostOutput(host="h", sections=[("input:h", text)]), POLICY)
    assert reports
    for r in reports:
        assert all(p.code in CODES or p.code == UNKNOWN_CODE for p in r.problems)
        assert r.severity in Level
        json.dumps(r.as_json())  # always serialisable
    return reports


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_garbage_text(text):
    _parse_or_error(text)
    _judged(text)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CAPTURES), st.data())
def test_truncated_captures(text, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    _parse_or_error(text[:cut])
    _judged(text[:cut])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CAPTURES), st.data())
def test_mutated_captures(text, data):
    """Random bytes spliced into real captures."""
    pos = data.draw(st.integers(min_value=0, max_value=len(text)))
    junk = data.draw(st.text(min_size=1, max_size=20))
    _judged(text[:pos] + junk + text[pos:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "role", "devices", "connections", "peer_devices", "volume", "minor", "disk-state",
                         "connection-state", "peer-role", "replication-state", "peer-disk-state", "out-of-sync",
                         "percent-resync-done", "quorum", "client", "suspended", "peer-node-id"]) | st.text(max_size=5),
        inner, max_size=6),
    max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_arbitrary_json_structures(value):
    text = json.dumps(value)
    _parse_or_error(text)
    _judged(text)


state_names = st.from_regex(r"\A[A-Z][A-Za-z]{2,14}\Z")


@settings(max_examples=100, deadline=None)
@given(state_names, st.sampled_from(["connection-state", "replication-state", "peer-disk-state", "peer-role"]))
def test_new_state_names_are_unknown_not_crashes(name, key):
    conn = {"name": "b", "connection-state": "Connected", "peer-role": "Secondary",
            "peer_devices": [{"volume": 0, "replication-state": "Established", "peer-disk-state": "UpToDate"}]}
    target = conn if key in ("connection-state", "peer-role") else conn["peer_devices"][0]
    target[key] = name
    doc = [{"name": "r0", "role": "Secondary", "devices": [{"volume": 0, "disk-state": "UpToDate"}],
            "connections": [conn]}]
    [r] = _judged(json.dumps(doc))
    known = {"connection-state": CONN_STATES, "replication-state": REPL_STATES, "peer-disk-state": DISK_STATES,
             "peer-role": ROLES}[key]
    if name not in known:
        assert r.severity is Level.unknown
        assert any(p.code == UNKNOWN_CODE and repr(name) in p.detail for p in r.problems)


@settings(max_examples=60, deadline=None)
@given(state_names)
def test_new_state_names_in_text_formats(name):
    cases = ((f"r0 role:Primary\n  disk:{name}\n", DISK_STATES),
             (f"version: 8.4.11\n 0: cs:{name} ro:Secondary/Secondary ds:UpToDate/UpToDate C r-----\n",
              CONN_STATES | REPL_STATES | {"Connected"}),
             (f"exists resource name:r0 role:{name}\nexists -\n", ROLES))
    for text, known in cases:
        [r] = _judged(text)
        if name not in known:
            assert r.severity is Level.unknown and any(repr(name) in p.detail for p in r.problems)
