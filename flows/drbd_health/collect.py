"""Collection: one SSH round trip per host runs DRBD's own tools with fallbacks, and captures.

The remote probe is a fixed POSIX-sh script (no user input reaches it): it lists split-brain
handler markers, then tries ``drbdsetup status --json`` → ``drbdadm status`` → ``cat /proc/drbd``
and prints the first that succeeds after a ``@@inferops-source`` line (plus an 8.4 kernel's
``/proc/drbd``, read if the tool's output is not a format we know). Every host comes back as
reports: unreachable, DRBD-less or unparseable hosts as UNKNOWN with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flows.common.inventory import Host
from flows.common.ssh import CommandResult, run_many
from flows.drbd_health.models import DrbdPolicy, ResourceReport
from flows.drbd_health.parse import ParseError, parse
from flows.drbd_health.rules import evaluate, unknown_report

SPLIT_BRAIN_DIR = "/var/run/drbd/splitbrain"
MARK_PREFIX = "drbd-split-brain-detected-"
SOURCES = {"drbdsetup-json": "json", "drbdadm-status": "drbdadm", "proc-drbd": "proc"}

PROBE = f"""
for m in {SPLIT_BRAIN_DIR}/{MARK_PREFIX}*; do [ -e "$m" ] && echo "@@inferops-mark ${{m##*/}}"; done
e=$(mktemp) && trap 'rm -f "$e"' EXIT || e=/dev/null
try() {{ src=$1; shift
  if out=$("$@" 2>"$e"); then echo "@@inferops-source $src"; printf '%s\\n' "$out"; return 0; fi
  echo "@@inferops-failed $src: $(head -n 1 "$e" | cut -c 1-160)"; return 1; }}
try drbdsetup-json drbdsetup status --json || try drbdadm-status drbdadm status || {{ try proc-drbd cat /proc/drbd; exit; }}
# an 8.4 kernel's devices too, in case the tool's output is not a format we read (old drbd-utils)
if grep -qs ' cs:' /proc/drbd; then echo "@@inferops-source proc-drbd"; cat /proc/drbd; fi
exit 0
"""


@dataclass
class HostOutput:
    """What one host (or one capture file) gave us, before the rules."""

    host: str
    sections: list[tuple[str, str]] = field(default_factory=list)  # (source, text), best first
    error: str | None = None
    marks: set[str] = field(default_factory=set)  # split-brain marker file names


def split_probe_output(r: CommandResult) -> HostOutput:
    """Turn the probe's stdout into a :class:`HostOutput`."""
    out = HostOutput(host=r.host)
    if r.error is not None:
        out.error = f"unreachable: {r.error}"
        return out
    failures = []
    for line in r.stdout.splitlines():
        if line.startswith("@@inferops-source "):
            out.sections.append((line.split(" ", 1)[1].strip(), ""))
        elif out.sections:
            src, text = out.sections[-1]
            out.sections[-1] = (src, f"{text}{line}\n")
        elif line.startswith("@@inferops-mark "):
            out.marks.add(line.split(" ", 1)[1].strip())
        elif line.startswith("@@inferops-failed "):
            failures.append(line.split(" ", 1)[1].strip())
    if not out.sections:
        out.error = ("no DRBD: " + "; ".join(failures)) if failures else \
            f"probe failed (exit {r.exit_status}): {(r.stderr or r.stdout).strip()[:160]!r}"
    return out


def volumes_marked(marks: Iterable[str], resource: str) -> frozenset[str]:
    """Volumes of ``resource`` with a split-brain marker ``drbd-split-brain-detected-RES-VOL``."""
    vols = set()
    for m in marks:
        res, _, vol = m.removeprefix(MARK_PREFIX).rpartition("-")
        if res == resource:
            vols.add(vol)
    return frozenset(vols)


def judge(out: HostOutput, policy: DrbdPolicy) -> list[ResourceReport]:
    """Parse and evaluate one host's output, from the first section we can read; anything unreadable
    becomes one UNKNOWN report with the reasons."""
    if out.error is not None:
        return [unknown_report(out.host, out.error)]
    errors = []
    for source, text in out.sections:
        try:
            _, resources = parse(text, SOURCES.get(source))
        except ParseError as exc:
            errors.append(f"unparseable {source} output: {exc}")
            continue
        if not resources:
            return [unknown_report(out.host, f"no DRBD resources configured ({source})", source=source)]
        return [evaluate(out.host, r, policy, source=source,
                         split_brain_volumes=volumes_marked(out.marks, r.name)) for r in resources]
    first = out.sections[0][0] if out.sections else ""
    return [unknown_report(out.host, "; ".join(errors) or "no output", source=first)]


def read_capture(path: str | Path) -> HostOutput:
    """A saved capture in any format; the host is named after the file (``storage-a.json`` → storage-a)."""
    p = Path(path)
    try:
        text = p.read_text(errors="replace")
    except OSError as exc:
        return HostOutput(host=p.stem or str(p), error=f"cannot read {p}: {exc.strerror}")
    return HostOutput(host=p.stem, sections=[(f"input:{p.name}", text)])


def probe_hosts(hosts: Sequence[Host], *, user: str, key_file: str | None, known_hosts: str | None,
                timeout_s: float, connect_timeout_s: float, concurrency: int) -> list[HostOutput]:
    # run_many parses known_hosts once for the whole fan-out
    results = run_many(hosts, PROBE, user=user, key_file=key_file, known_hosts=known_hosts, timeout_s=timeout_s,
                       connect_timeout_s=min(connect_timeout_s, timeout_s), concurrency=concurrency)
    return [split_probe_output(r) for r in results]
