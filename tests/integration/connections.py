"""Record a process tree's outgoing connections with strace, and judge them: loopback only.

``strace -f --seccomp-bpf -e trace=connect,sendto,sendmsg`` stops the tracees only on those calls, so the
traced program runs at nearly full speed. Every TCP connection, every connected UDP socket (glibc's
resolver connects its socket to the name server before it sends) and every unconnected datagram with an
address is recorded, whether it succeeded or not: an attempt that fails in a namespace without a route
counts as much as one that got through.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

# sa_family=AF_INET, sin_port=htons(4200), sin_addr=inet_addr("127.0.0.1")
_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([0-9.]+)"\)')
_INET6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\),.*?inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')


def strace_prefix(trace: Path) -> list[str]:
    """The command prefix that records the connections of everything it runs into ``trace``."""
    if not shutil.which("strace"):
        return []
    return ["strace", "-f", "-Y", "--seccomp-bpf", "-qq", "-e", "trace=connect,sendto,sendmsg", "-e", "signal=none",
            "-o", str(trace)]


def destinations(trace: Path) -> list[tuple[str, int, str]]:
    """``(address, port, line)`` for every IPv4/IPv6 destination in the trace."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        for m in _INET.finditer(line):
            out.append((m.group(2), int(m.group(1)), line.strip()))
        for m in _INET6.finditer(line):
            out.append((m.group(2), int(m.group(1)), line.strip()))
    return out


def beyond(trace: Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """Lines of the trace that reach anything but loopback (or the ``allowed`` networks)."""
    nets = [ipaddress.ip_network(n) for n in allowed]
    bad = []
    for addr, _port, line in destinations(trace):
        ip = ipaddress.ip_address(addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_unspecified or any(ip in n for n in nets):
            continue
        bad.append(line)
    return bad
