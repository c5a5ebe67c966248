"""Parsers for every DRBD status format, detected automatically.

* ``drbdsetup status --json`` (DRBD 9): a JSON list of resources;
* ``drbdadm status`` / ``drbdsetup status`` text (DRBD 9), with or without ``--statistics``;
* ``/proc/drbd`` (DRBD 8.4): one resource per minor, named by the minor number;
* ``drbdsetup events2`` lines (optionally ``--timestamps``), replayed into the final state.

State values are kept verbatim (the rules flag values DRBD does not define); malformed input raises
:class:`ParseError` with a one-line reason, never anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flows.drbd_health.models import LINK_STATES_84, Connection, Device, PeerDevice, Resource

FORMATS = ("json", "drbdadm", "proc", "events2")


class ParseError(ValueError):
    """Input that is not DRBD status output in a format we know."""


def _snippet(text: str, n: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return repr(line[:n] + ("…" if len(line) > n else ""))


_EVENTS2 = re.compile(r"^(?:\S+T\S+\s+)?(exists|create|change|destroy|call|response|rename)\s+(\S+)(?:\s|$)")
_PROC_DEV = re.compile(r"^\s*(\d+):\s+cs:(\S+)")
_STATUS_HEAD = re.compile(r"^[^\s:]+(?:\s+[a-z][a-z0-9-]*:\S*)*\s+role:\S+")


def detect(text: str) -> str:
    """Which format ``text`` is in: one of :data:`FORMATS`."""
    body = text.strip()
    if not body:
        raise ParseError("empty input")
    first = body.splitlines()[0]
    if body[0] in "[{":
        return "json"
    if first.startswith("version:") or _PROC_DEV.match(first):
        return "proc"
    if _EVENTS2.match(first):
        return "events2"
    if _STATUS_HEAD.match(first):
        return "drbdadm"
    raise ParseError(f"unrecognised DRBD status format (first line {_snippet(body)})")


def parse(text: str, fmt: str | None = None) -> tuple[str, list[Resource]]:
    """Parse ``text`` (format detected unless given) into resources; returns ``(format, resources)``."""
    fmt = fmt or detect(text)
    parser = {"json": parse_json, "drbdadm": parse_status_text, "proc": parse_proc, "events2": parse_events2}
    if fmt not in parser:
        raise ParseError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return fmt, parser[fmt](text)


# ------------------------------------------------------------------ helpers shared by the parsers
_INT_LIMIT = 2**64  # DRBD's counters are 64-bit; anything longer is not DRBD output


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or isinstance(v, str) and len(v) > 24:  # before int(): no 4300-digit parses
        raise ParseError(f"{what}: expected a number, got {str(v)[:40]!r}")
    try:
        n = int(v)
    except (TypeError, ValueError, OverflowError):
        raise ParseError(f"{what}: expected a number, got {str(v)[:40]!r}") from None
    if not -_INT_LIMIT < n < _INT_LIMIT:
        raise ParseError(f"{what}: number out of range: {str(v)[:40]!r}")
    return n


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _float(v: Any, what: str) -> float | None:
    if v is None:
        return None
    try:
        f = float(str(v).rstrip("%"))
    except ValueError:
        raise ParseError(f"{what}: expected a percentage, got {str(v)[:40]!r}") from None
    if not 0.0 <= f <= 100.0:  # also rejects nan/inf
        raise ParseError(f"{what}: percentage out of range: {str(v)[:40]!r}")
    return f


def _flag(v: Any) -> bool:
    """DRBD booleans: JSON true/false, text yes/no."""
    return v is True or (isinstance(v, str) and v.lower() in ("yes", "true"))


def _state(v: Any, default: str) -> str:
    return default if v is None else str(v)


def _suspended_list(v: str | None) -> list[str]:
    if not v or v == "no":
        return []
    return [s for s in v.split(",") if s]


# ------------------------------------------------------------------ drbdsetup status --json
def parse_json(text: str) -> list[Resource]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, the int-string limit, nesting
        raise ParseError(f"invalid JSON: {' '.join(str(exc).split())[:120]}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ParseError("drbdsetup JSON: expected a list of resources")
    return [_json_resource(r, i) for i, r in enumerate(data)]


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise ParseError(f"drbdsetup JSON: {what} is not an object")
    return v


def _objs(v: Any, what: str) -> list[dict]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ParseError(f"drbdsetup JSON: {what} is not a list")
    return [_obj(x, what) for x in v]


def _json_resource(raw: Any, i: int) -> Resource:
    r = _obj(raw, f"resource #{i}")
    if not isinstance(r.get("name"), str) or not r["name"]:
        raise ParseError(f"drbdsetup JSON: resource #{i} has no name")
    name = r["name"]
    suspended = [k for k in ("user", "no-data", "fencing", "quorum") if _flag(r.get(f"suspended-{k}"))]
    if _flag(r.get("suspended")) and not suspended:
        suspended = ["unspecified"]
    res = Resource(name=name, role=_state(r.get("role"), "Unknown"), suspended=suspended)
    for d in _objs(r.get("devices"), f"{name} devices"):
        res.devices.append(Device(
            volume=_int(d.get("volume", 0), f"{name} volume"), minor=_opt_int(d.get("minor"), f"{name} minor"),
            disk=_state(d.get("disk-state"), "DUnknown"), client=_flag(d.get("client")),
            quorum=None if "quorum" not in d else _flag(d.get("quorum"))))
    for c in _objs(r.get("connections"), f"{name} connections"):
        node_id = _opt_int(c.get("peer-node-id"), f"{name} peer-node-id")
        conn = Connection(peer=str(c.get("name") or f"node-{node_id}"), node_id=node_id,
                          state=_state(c.get("connection-state"), "Unknown"),
                          role=_state(c.get("peer-role"), "Unknown"), congested=_flag(c.get("congested")))
        for p in _objs(c.get("peer_devices"), f"{name} peer_devices"):
            done = p.get("percent-resync-done", p.get("done"))
            conn.peer_devices.append(PeerDevice(
                volume=_int(p.get("volume", 0), f"{name} peer volume"),
                replication=_state(p.get("replication-state"), "Off"),
                peer_disk=_state(p.get("peer-disk-state"), "DUnknown"), peer_client=_flag(p.get("peer-client")),
                out_of_sync_kib=_opt_int(p.get("out-of-sync"), f"{name} out-of-sync"),
                done=_float(done, f"{name} done")))
        res.connections.append(conn)
    return res


# ------------------------------------------------------------------ drbdadm status (text)
_TOKEN = re.compile(r"^([a-z][a-z0-9-]*):(.*)$")


def _kv(tokens: list[str], lineno: int) -> dict[str, str]:
    out = {}
    for t in tokens:
        m = _TOKEN.match(t)
        if not m:
            raise ParseError(f"drbdadm status line {lineno}: unexpected {t[:40]!r}")
        out[m.group(1)] = m.group(2)
    return out


def parse_status_text(text: str) -> list[Resource]:
    resources: list[Resource] = []
    res: Resource | None = None
    conn: Connection | None = None
    last: Device | PeerDevice | None = None  # for --statistics continuation lines
    conn_indent = last_indent = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        tokens = line.split()
        if indent == 0:  # "NAME role:Primary [suspended:user] ..."
            kv = _kv(tokens[1:], lineno)
            if "role" not in kv or ":" in tokens[0]:
                raise ParseError(f"drbdadm status line {lineno}: expected 'NAME role:ROLE', got {_snippet(line)}")
            res = Resource(name=tokens[0], role=kv["role"], suspended=_suspended_list(kv.get("suspended")))
            resources.append(res)
            conn = last = None
            continue
        if res is None:
            raise ParseError(f"drbdadm status line {lineno}: indented line before any resource")
        if last is not None and indent > last_indent:  # statistics continuation of a device/peer device
            kv = _kv(tokens, lineno)
            if isinstance(last, PeerDevice) and "out-of-sync" in kv:
                last.out_of_sync_kib = _int(kv["out-of-sync"], f"line {lineno} out-of-sync")
            continue
        if conn is not None and indent > conn_indent:  # peer device of the last connection
            kv = _kv(tokens, lineno)
            last = PeerDevice(
                volume=_int(kv.get("volume", 0), f"line {lineno} volume"),
                replication=kv.get("replication", "Established"), peer_disk=kv.get("peer-disk", "DUnknown"),
                peer_client=_flag(kv.get("peer-client")),
                out_of_sync_kib=_opt_int(kv.get("out-of-sync"), f"line {lineno} out-of-sync"),
                done=_float(kv.get("done"), f"line {lineno} done"))
            conn.peer_devices.append(last)
        elif _TOKEN.match(tokens[0]):  # device: "[volume:N] disk:X [client:yes] [quorum:no] ..."
            kv = _kv(tokens, lineno)
            if "disk" not in kv:
                raise ParseError(f"drbdadm status line {lineno}: device line without disk: {_snippet(line)}")
            last = Device(
                volume=_int(kv.get("volume", 0), f"line {lineno} volume"),
                minor=_opt_int(kv.get("minor"), f"line {lineno} minor"), disk=kv["disk"],
                client=_flag(kv.get("client")), quorum=None if "quorum" not in kv else _flag(kv["quorum"]))
            res.devices.append(last)
            conn = None
        else:  # connection: "PEER [node-id:N] [connection:X] [role:Y] [congested:yes]"
            kv = _kv(tokens[1:], lineno)
            conn = Connection(peer=tokens[0], state=kv.get("connection", "Connected"),
                              role=kv.get("role", "Unknown"),
                              node_id=_opt_int(kv.get("node-id"), f"line {lineno} node-id"),
                              congested=_flag(kv.get("congested")))
            conn_indent, last = indent, None
            res.connections.append(conn)
        last_indent = indent
    if not resources:
        raise ParseError("drbdadm status: no resources")
    return resources


# ------------------------------------------------------------------ /proc/drbd (8.4)
_PROC_LINE = re.compile(
    r"^\s*(?P<minor>\d+):\s+cs:(?P<cs>\S+)"
    r"(?:\s+ro:(?P<ro>\S+)/(?P<pro>\S+)\s+ds:(?P<ds>\S+)/(?P<pds>\S+)\s+(?P<proto>[A-C]?)\s*(?P<flags>\S{6})?)?")
_PROC_SYNC = re.compile(r"(?:sync'ed|verified):\s*([0-9.]+)%")
_PROC_OOS = re.compile(r"\boos:(\d+)")
_PROC_HEADER = re.compile(r"^(version|GIT-hash|srcversion|Transports|built-in):?\s")


def parse_proc(text: str) -> list[Resource]:
    resources: list[Resource] = []
    current: Resource | None = None
    saw_header = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _PROC_DEV.match(line)
        if m:
            current = _proc_resource(_PROC_LINE.match(line), lineno)
            if current is not None:
                resources.append(current)
        elif _PROC_HEADER.match(line):
            saw_header, current = True, None
        elif current is None or not line[0].isspace():
            raise ParseError(f"/proc/drbd line {lineno}: unexpected {_snippet(line)}")
        else:
            pd = current.connections[0].peer_devices[0]
            if (o := _PROC_OOS.search(line)) is not None:
                pd.out_of_sync_kib = _int(o.group(1), f"line {lineno} oos")
            if (s := _PROC_SYNC.search(line)) is not None:
                pd.done = _float(s.group(1), f"line {lineno} sync'ed")
    if not resources and not saw_header:
        raise ParseError("/proc/drbd: neither a version header nor any device")
    return resources


def _proc_resource(m: re.Match, lineno: int) -> Resource | None:
    minor, cs = _int(m.group("minor"), f"line {lineno} minor"), m.group("cs")
    if cs == "Unconfigured":  # a gap between configured minors, not a resource
        return None
    if m.group("ro") is None:
        raise ParseError(f"/proc/drbd line {lineno}: device {minor} without ro:/ds: fields")
    flags = m.group("flags") or "r-----"
    link, repl = (cs, "Off") if cs in LINK_STATES_84 else ("Connected", "Established" if cs == "Connected" else cs)
    return Resource(
        name=str(minor), role=m.group("ro"), suspended=["unspecified"] if flags[0] == "s" else [],
        devices=[Device(volume=0, minor=minor, disk=m.group("ds"))],
        connections=[Connection(peer="peer", state=link, role=m.group("pro"), congested=flags[4] in "na",
                                peer_devices=[PeerDevice(volume=0, replication=repl, peer_disk=m.group("pds"))])])


# ------------------------------------------------------------------ drbdsetup events2
def parse_events2(text: str) -> list[Resource]:
    """Replay ``exists/create/change/destroy`` events into the final state; ``call helper
    helper:split-brain`` marks the resource."""
    res: dict[str, Resource] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _EVENTS2.match(line)
        if not m:
            raise ParseError(f"events2 line {lineno}: unexpected {_snippet(line)}")
        verb, obj = m.group(1), m.group(2)
        if obj == "-" or verb == "rename":
            continue
        kv = _kv(line[m.end():].split(), lineno)
        name = kv.get("name")
        if not name:
            raise ParseError(f"events2 line {lineno}: {obj} event without name:")
        if verb == "destroy" and obj == "resource":
            res.pop(name, None)
            continue
        r = res.setdefault(name, Resource(name=name))
        if obj == "resource":
            r.role = kv.get("role", r.role)
            if "suspended" in kv:
                r.suspended = _suspended_list(kv["suspended"])
        elif obj == "device":
            vol = _int(kv.get("volume", 0), f"line {lineno} volume")
            d = next((d for d in r.devices if d.volume == vol), None)
            if verb == "destroy":
                r.devices = [x for x in r.devices if x.volume != vol]
                continue
            if d is None:
                d = Device(volume=vol)
                r.devices.append(d)
            d.minor = _opt_int(kv.get("minor"), f"line {lineno} minor") if "minor" in kv else d.minor
            d.disk = kv.get("disk", d.disk)
            d.client = _flag(kv["client"]) if "client" in kv else d.client
            d.quorum = _flag(kv["quorum"]) if "quorum" in kv else d.quorum
        elif obj in ("connection", "peer-device"):
            peer = kv.get("conn-name") or f"node-{kv.get('peer-node-id', '?')}"
            c = next((c for c in r.connections if c.peer == peer), None)
            if verb == "destroy" and obj == "connection":
                r.connections = [x for x in r.connections if x.peer != peer]
                continue
            if c is None:
                c = Connection(peer=peer, state="Unknown")
                r.connections.append(c)
            if "peer-node-id" in kv:
                c.node_id = _int(kv["peer-node-id"], f"line {lineno} peer-node-id")
            if obj == "connection":
                c.state = kv.get("connection", c.state)
                c.role = kv.get("role", c.role)
                c.congested = _flag(kv["congested"]) if "congested" in kv else c.congested
                continue
            vol = _int(kv.get("volume", 0), f"line {lineno} volume")
            if verb == "destroy":
                c.peer_devices = [x for x in c.peer_devices if x.volume != vol]
                continue
            p = next((p for p in c.peer_devices if p.volume == vol), None)
            if p is None:
                p = PeerDevice(volume=vol, replication="Off")
                c.peer_devices.append(p)
            p.replication = kv.get("replication", p.replication)
            p.peer_disk = kv.get("peer-disk", p.peer_disk)
            p.peer_client = _flag(kv["peer-client"]) if "peer-client" in kv else p.peer_client
            if "out-of-sync" in kv:
                p.out_of_sync_kib = _int(kv["out-of-sync"], f"line {lineno} out-of-sync")
            if "done" in kv:
                p.done = _float(kv["done"], f"line {lineno} done")
        elif obj == "helper" and verb == "call" and kv.get("helper") == "split-brain":
            r.split_brain_mark = True
    return list(res.values())
