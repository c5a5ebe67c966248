"""The Debian root filesystem shared by every SSH test host, built once and cached.

``debootstrap --variant=minbase bookworm`` plus the packages sshd and Ansible need on a target.
The packages the playbooks install (``PLAYBOOK_PACKAGES``) are *downloaded* into the root's apt
cache but not installed: the test hosts have no network, so ``apt-get install`` on them resolves
from the root's own package lists and ``/var/cache/apt/archives``, and a converge still really
installs them. The tarball lives in ``~/.cache/inferops/`` keyed by a hash of the recipe, and is
extracted once next to it as the read-only lower layer of every host's overlay.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Installed in the image: what sshd, Ansible modules (apt needs python3-apt) and `systemctl enable`
# need on a target. systemd is installed but never runs (no init in the test hosts).
BASE_PACKAGES = ["python3", "python3-apt", "openssh-server", "sudo", "systemd", "iproute2", "procps"]
# Downloaded only, for the playbooks to install offline (keep in step with playbooks/roles/*).
PLAYBOOK_PACKAGES = [
    "acl", "ca-certificates", "chrony", "conntrack", "containerd", "curl", "drbd-utils", "ethtool",
    "gnupg", "iptables", "jq", "kmod", "lsof", "numactl", "pciutils", "prometheus-node-exporter",
    "rsync", "socat",
]
RECIPE_VERSION = 1  # bump when the build steps below change


def recipe() -> dict:
    return {"suite": SUITE, "mirror": MIRROR, "base": BASE_PACKAGES, "cached": PLAYBOOK_PACKAGES,
            "version": RECIPE_VERSION}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "inferops"


def sh(argv: list[str], check: bool = True, input: str | None = None, env: dict | None = None,
       ) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, input=input, env=env)
    if check and r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({r.returncode}): {' | '.join(tail)}")
    return r


def umount(path: Path) -> None:
    """Unmount, waiting up to 5 s for processes that still hold it to exit; lazily as a last resort."""
    for _ in range(50):
        if not os.path.ismount(path) or sh(["umount", str(path)], check=False).returncode == 0:
            return
        time.sleep(0.1)
    sh(["umount", "-l", str(path)])


def _chroot(root: Path, script: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    sh(["chroot", str(root), "/bin/sh", "-ec", script], env=env)


def _build(root: Path) -> None:
    sh(["debootstrap", "--variant=minbase", SUITE, str(root), MIRROR])
    # Never start daemons from package scripts in the image or on the test hosts (no init there).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    proc = root / "proc"
    sh(["mount", "-t", "proc", "proc", str(proc)])
    try:
        _chroot(root, "apt-get update -q\n"
                      f"apt-get install -y -q --no-install-recommends {' '.join(BASE_PACKAGES)}\n"
                      f"apt-get install -y -q --no-install-recommends --download-only {' '.join(PLAYBOOK_PACKAGES)}")
    finally:
        umount(proc)
    # Host keys are generated per host at start; the image ships none.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)


def ensure_rootfs(log=print) -> Path:
    """Return the extracted, complete root for the current recipe, building/extracting it if needed."""
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    name = f"sshhost-rootfs-{recipe_hash()}"
    lower, tarball, done = cdir / name, cdir / f"{name}.tar.zst", cdir / f"{name}.complete"
    with open(cdir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return lower
        shutil.rmtree(lower, ignore_errors=True)
        if not tarball.exists():
            if not shutil.which("debootstrap"):
                raise RuntimeError("debootstrap is missing: apt-get install -y debootstrap")
            t0 = time.perf_counter()
            build = cdir / f"{name}.build"
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir()
            _build(build)
            sh(["tar", "--numeric-owner", "-I", "zstd -T0", "-cpf", f"{tarball}.part", "-C", str(build), "."])
            os.replace(f"{tarball}.part", tarball)
            os.replace(build, lower)
            log(f"ssh test hosts: built {tarball.name} in {time.perf_counter() - t0:.0f}s")
        else:
            lower.mkdir()
            sh(["tar", "--numeric-owner", "-I", "zstd", "-xpf", str(tarball), "-C", str(lower)])
        done.touch()
        return lower
