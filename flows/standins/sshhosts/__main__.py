"""``python -m flows.standins.sshhosts`` (`make setup`, as root): build the SSH test hosts' Debian root ahead,
so that the tests and the demo fetch nothing themselves. Without root or network namespaces: says why, exit 0."""

from __future__ import annotations

import subprocess
import sys

from flows.standins.sshhosts.hosts import unavailable_reason
from flows.standins.sshhosts.rootfs import ensure_rootfs


def main() -> int:
    why = unavailable_reason()
    if why:
        print(f"setup: no SSH test hosts on this machine ({why})", file=sys.stderr)
        return 0
    try:
        ensure_rootfs(log=lambda msg: print(f"setup: {msg}", file=sys.stderr))
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"setup: the SSH test hosts' Debian root was not built: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
