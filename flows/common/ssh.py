"""The SSH adapter: run one command on many hosts with bounded concurrency and per-host timeouts.

Built on asyncssh. Unreachable hosts are returned as results with ``error`` set, never dropped.
Commands are argv lists joined with shlex quoting: nothing user-supplied reaches a shell unquoted.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from flows.common.inventory import Host


@dataclass
class CommandResult:
    host: str
    exit_status: int | None
    stdout: str
    stderr: str
    error: str | None  # connection/timeout error: the host was not reached or did not answer
    seconds: float


def quote_argv(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


async def _run_one(host: Host, command: str, *, user: str, key_file: str | None, timeout_s: float,
                   connect_timeout_s: float, known_hosts: object, sem: asyncio.Semaphore) -> CommandResult:
    import asyncssh

    async with sem:
        t0 = time.perf_counter()  # per-host time, not the wait for a concurrency slot
        try:
            async with asyncio.timeout(timeout_s):
                async with asyncssh.connect(
                    host.address, port=host.port, username=host.user or user,
                    client_keys=[host.key_file or key_file] if (host.key_file or key_file) else None,
                    known_hosts=known_hosts, connect_timeout=connect_timeout_s,
                ) as conn:
                    r = await conn.run(command, check=False)
                    return CommandResult(host.name, r.exit_status, str(r.stdout or ""), str(r.stderr or ""),
                                         None, time.perf_counter() - t0)
        except TimeoutError:
            err = f"timed out after {timeout_s:g}s"
        except (OSError, asyncssh.Error) as exc:
            err = " ".join(f"{type(exc).__name__}: {exc}".split())
        return CommandResult(host.name, None, "", "", err, time.perf_counter() - t0)


async def run_many_async(hosts: Sequence[Host], command: str | Sequence[str], *, user: str = "root",
                         key_file: str | None = None, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                         concurrency: int = 64, known_hosts: object = None) -> list[CommandResult]:
    """``known_hosts``: a path (parsed once here), an already parsed ``asyncssh`` known-hosts object,
    or None (no host-key checks)."""
    import asyncssh

    cmd = command if isinstance(command, str) else quote_argv(command)
    sem = asyncio.Semaphore(max(1, concurrency))
    # parse known_hosts once for the whole fan-out, not once per connection
    known = asyncssh.read_known_hosts(known_hosts) if isinstance(known_hosts, str) and known_hosts else known_hosts
    return list(await asyncio.gather(*(
        _run_one(h, cmd, user=user, key_file=key_file, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                 known_hosts=known, sem=sem) for h in hosts)))


def run_many(hosts: Sequence[Host], command: str | Sequence[str], **kw) -> list[CommandResult]:
    return asyncio.run(run_many_async(hosts, command, **kw))
