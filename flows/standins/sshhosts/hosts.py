"""SSH test hosts: Debian roots with sshd, each in its own network namespace on 10.213.0.0/24.

Per host: an address claim ``STATE/hosts/N`` (N = last octet), an overlay of the cached root
(:mod:`flows.standins.sshhosts.rootfs`), a netns ``ifo-N`` joined to the bridge ``ifobr0`` (10.213.0.1/24) by a
veth pair, and ``unshare --uts --mount --pid`` running ``chroot ROOT sshd -D`` as the namespace's
PID 1 with its own hostname, /proc (``/proc/sys`` read-only, so nothing on a test host can change the
machine's kernel settings), read-only /sys, devpts and a tmpfs /run. Hosts started with
``shared_root=True`` share one overlay (benchmarks: hundreds of hosts, nothing written).

Claims record their owner (pid + start time), so several test sessions can run side by side and a
new session removes whatever a dead one left behind: processes, mounts, namespaces, veths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from flows.common.inventory import Host
from flows.standins.sshhosts.rootfs import ensure_rootfs, sh, umount

STATE = Path(os.environ.get("INFEROPS_SSHHOSTS_STATE", "/var/tmp/inferops-sshhosts"))
SUBNET = "10.213.0"
BRIDGE = "ifobr0"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
Files = dict[str, tuple[str, int]]


@dataclass(frozen=True)
class TestHost(Host):
    """A running test host; also a :class:`flows.common.inventory.Host` for ``run_many``."""

    __test__ = False  # not a pytest test class

    known_hosts: str = ""
    root: Path | None = None  # None for an unreachable placeholder
    netns: str | None = None


def _owner_tag(pid: int) -> str | None:
    try:
        return f"{pid}:{Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def _alive(tag: str) -> bool:
    return _owner_tag(int(tag.split(":")[0])) == tag


def unavailable_reason() -> str | None:
    """Why test hosts cannot run here (not root, no netns/overlay support), or None."""
    if os.geteuid() != 0:
        return "SSH test hosts need root (network namespaces, mounts)"
    for tool in ("ip", "unshare", "ssh-keygen", "tar", "zstd"):
        if not shutil.which(tool):
            return f"{tool} is missing (apt-get install -y iproute2 util-linux openssh-client zstd)"
    probe = f"ifo-probe-{os.getpid()}"
    r = sh(["ip", "netns", "add", probe], check=False)
    if r.returncode != 0:
        return f"network namespaces unavailable: {r.stderr.strip()}"
    sh(["ip", "netns", "del", probe], check=False)
    return None


class _Lock:
    def __enter__(self):
        import fcntl

        STATE.mkdir(parents=True, exist_ok=True)
        self.f = open(STATE / "lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.f.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _teardown_claims(claims: list[Path], sweep: bool = False) -> None:
    """Remove everything these host claims own; safe to repeat and safe after a crash.

    Killing the recorded ``unshare --kill-child`` takes the namespace's PID 1 and so every process of
    the host with it; ``sweep`` also kills anything else found in the network namespaces (stale runs).
    """
    metas = []
    for claim in claims:
        try:
            metas.append(json.loads((claim / "meta.json").read_text()))
        except (OSError, ValueError):
            metas.append({})
    namespaces = [m["netns"] for m in metas if m.get("netns")]
    veths = [m["veth"] for m in metas if m.get("veth")]
    for m in metas:
        if m.get("pid"):
            _kill(m["pid"])
    if sweep:
        for ns in namespaces:
            for pid in sh(["ip", "netns", "pids", ns], check=False).stdout.split():
                _kill(int(pid))
    roots = [c / "root" for c in claims if os.path.ismount(c / "root")]
    if roots:
        sh(["umount", *map(str, roots)], check=False)
    for root in roots:
        umount(root)  # retries those whose processes were still exiting
    if namespaces or veths:  # the veth first: a deleted namespace frees its end asynchronously
        sh(["ip", "-force", "-batch", "-"], check=False, input="".join(
            [f"link del {v}\n" for v in veths] + [f"netns del {ns}\n" for ns in namespaces]))
    for claim in claims:
        shutil.rmtree(claim, ignore_errors=True)


def cleanup_stale() -> int:
    """Tear down claims, sessions and namespaces whose owning process is gone. Returns hosts removed."""
    removed = 0
    with _Lock():
        for d in sorted((STATE / "hosts").glob("*")) + sorted((STATE / "shared").glob("*")):
            owner = d / "owner"
            stale = (not _alive(owner.read_text())) if owner.exists() else time.time() - d.stat().st_mtime > 60
            if stale:
                _teardown_claims([d], sweep=True)
                removed += d.parent.name == "hosts"
        for d in (STATE / "sessions").glob("*"):
            if not _alive(d.name.replace("-", ":")):
                shutil.rmtree(d, ignore_errors=True)
        claimed = {f"ifo-{d.name}" for d in (STATE / "hosts").glob("*")}
        for ns in sh(["ip", "netns", "list"], check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith("ifo-") and not name.startswith("ifo-probe") and name not in claimed:
                for pid in sh(["ip", "netns", "pids", name], check=False).stdout.split():
                    _kill(int(pid))
                sh(["ip", "netns", "del", name], check=False)
                removed += 1
        claimed_veths = {f"ifo{d.name}h" for d in (STATE / "hosts").glob("*")}
        for line in sh(["ip", "-o", "link", "show", "type", "veth"], check=False).stdout.splitlines():
            veth = line.split(":")[1].strip().split("@")[0]
            if re.fullmatch(r"ifo\d+h", veth) and veth not in claimed_veths:
                sh(["ip", "link", "del", veth], check=False)
    return removed


def _ensure_bridge() -> None:
    if sh(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        sh(["ip", "-batch", "-"], input=f"link add {BRIDGE} type bridge\n"
            f"addr add {SUBNET}.1/24 dev {BRIDGE}\nlink set {BRIDGE} up\n")


def _remove_bridge_if_unused() -> None:
    if not any((STATE / "hosts").glob("*")):
        sh(["ip", "link", "del", BRIDGE], check=False)


class HostPool:
    """Starts and stops test hosts for one process. ``pool(n)`` is the fixture's factory call."""

    def __init__(self) -> None:
        self.owner = _owner_tag(os.getpid())
        cleanup_stale()
        self.lower = ensure_rootfs()
        self.dir = STATE / "sessions" / self.owner.replace(":", "-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_file = str(self.dir / "id_ed25519")
        if not Path(self.key_file).exists():
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inferops-test", "-f", self.key_file])
        self.public_key = Path(f"{self.key_file}.pub").read_text()
        self.known_hosts = str(self.dir / "known_hosts")
        self._known: dict[str, str] = {}
        self._claims: dict[str, Path] = {}  # address -> claim dir
        self._procs: dict[str, subprocess.Popen] = {}
        self._names: dict[str, int] = {}
        self._shared: Path | None = None
        self._write_known_hosts()

    # -- address claims -------------------------------------------------------------------
    def _claim(self) -> tuple[int, Path]:
        (STATE / "hosts").mkdir(parents=True, exist_ok=True)
        for n in range(2, 255):
            d = STATE / "hosts" / str(n)
            try:
                d.mkdir()
            except FileExistsError:
                continue
            (d / "owner").write_text(self.owner)
            self._claims[f"{SUBNET}.{n}"] = d
            return n, d
        raise RuntimeError(f"no free address left in {SUBNET}.0/24 (254 hosts claimed)")

    def _next_name(self, prefix: str) -> str:
        self._names[prefix] = self._names.get(prefix, 0) + 1
        return f"{prefix}{self._names[prefix]}"

    def _write_known_hosts(self) -> None:
        tmp = Path(f"{self.known_hosts}.tmp")
        tmp.write_text("".join(f"{a} {k}" for a, k in sorted(self._known.items())))
        os.replace(tmp, self.known_hosts)

    # -- roots ----------------------------------------------------------------------------
    def _overlay(self, d: Path, name: str) -> tuple[Path, str]:
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(exist_ok=True)
        root = d / "root"
        sh(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={d / 'upper'},workdir={d / 'work'}", str(root)])
        key = root / HOST_KEY.lstrip("/")
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
        ssh = root / "root/.ssh"
        (ssh / "authorized_keys").write_text(self.public_key)
        os.chmod(ssh / "authorized_keys", 0o600)
        (root / "etc/hostname").write_text(f"{name}\n")
        # no name servers: the build host's resolv.conf would send the hosts' lookups (Ansible's fact
        # gathering does some) off this machine; glibc then asks only the namespace's own loopback
        resolv = root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text("# inferops test host: no name servers (loopback only)\n")
        pub = Path(f"{key}.pub").read_text().split()
        return root, f"{pub[0]} {pub[1]}\n"

    def _shared_root(self) -> tuple[Path, str]:
        if self._shared is None:
            d = STATE / "shared" / self.owner.replace(":", "-")
            d.mkdir(parents=True, exist_ok=True)
            (d / "owner").write_text(self.owner)
            self._shared_key = self._overlay(d, "shared")[1]
            self._shared = d
        return self._shared / "root", self._shared_key

    @staticmethod
    def _write_files(root: Path, files: Files) -> None:
        for path, (content, mode) in files.items():
            target = (root / path.lstrip("/")).resolve()
            if not path.startswith("/") or not target.is_relative_to(root):
                raise ValueError(f"per-host file path must be absolute inside the host: {path!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            os.chmod(target, mode)

    # -- hosts ----------------------------------------------------------------------------
    def start(self, n: int, prefix: str = "h", files: Files | Callable[[int], Files] | None = None,
              shared_root: bool = False, timeout_s: float = 30.0) -> list[TestHost]:
        """Start ``n`` hosts named ``<prefix>1..`` (numbering continues across calls)."""
        if shared_root and files:
            raise ValueError("per-host files need per-host roots (shared_root=False)")
        with _Lock():
            _ensure_bridge()
            claims = [self._claim() for _ in range(n)]
        hosts, procs = [], []
        try:
            nets = [(num, d, f"ifo-{num}", f"ifo{num}h") for num, d in claims]
            for _, d, ns, veth in nets:
                (d / "meta.json").write_text(json.dumps({"netns": ns, "veth": veth}))
            sh(["ip", "-batch", "-"], input="".join(  # flush: a reused address may have a stale ARP entry
                f"netns add {ns}\nlink add {veth} type veth peer name eth0 netns {ns}\n"
                f"link set {veth} master {BRIDGE} up\nneigh flush to {SUBNET}.{num} dev {BRIDGE}\n"
                for num, _, ns, veth in nets))
            for i, (num, d, ns, _) in enumerate(nets):
                name = self._next_name(prefix)
                root, host_key = self._shared_root() if shared_root else self._overlay(d, name)
                if files:
                    self._write_files(root, files(i) if callable(files) else files)
                address = f"{SUBNET}.{num}"
                procs.append((self._launch(address, d, name, ns, root), d))
                self._known[address] = host_key
                hosts.append(TestHost(name=name, address=address, port=22, user="root", key_file=self.key_file,
                                      known_hosts=self.known_hosts, root=root, netns=ns))
            self._write_known_hosts()
            for h, (proc, d) in zip(hosts, procs, strict=True):
                self._wait_ready(h, proc, d, timeout_s)
        except BaseException:
            self._release([f"{SUBNET}.{num}" for num, _ in claims])
            raise
        return hosts

    def _launch(self, address: str, d: Path, name: str, ns: str, root: Path) -> subprocess.Popen:
        script = f"""
R={root}
ip addr add {address}/24 dev eth0 && ip link set eth0 up && ip link set lo up
hostname {name}
mount -t proc proc $R/proc
mount --bind $R/proc/sys $R/proc/sys && mount -o remount,bind,ro $R/proc/sys
mount -t sysfs -o ro sysfs $R/sys
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=0755,size=64m tmpfs $R/run
mkdir -p $R/run/sshd $R/run/lock
exec chroot $R /usr/sbin/sshd -D -e -o PidFile=/run/sshd-{ns}.pid -o HostKey={HOST_KEY}
"""
        with open(d / "sshd.log", "wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--pid", "--fork", "--kill-child",
                 "/bin/sh", "-ec", script],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (d / "meta.json").write_text(json.dumps({"netns": ns, "veth": f"ifo{address.rsplit('.', 1)[1]}h",
                                                 "pid": proc.pid}))
        self._procs[address] = proc
        return proc

    @staticmethod
    def _wait_ready(h: TestHost, proc: subprocess.Popen, d: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log = (d / "sshd.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"sshd for {h.name} exited ({proc.returncode}): {' | '.join(log)}")
            try:
                with socket.create_connection((h.address, h.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {h.name} at {h.address} not ready after {timeout_s:g}s")
            time.sleep(0.05)

    __call__ = start

    def unreachable(self, name: str = "dead") -> TestHost:
        """An address in the test /24, claimed so nobody else uses it, with nothing behind it."""
        with _Lock():
            _ensure_bridge()
            num, _ = self._claim()
        return TestHost(name=name, address=f"{SUBNET}.{num}", port=22, user="root", key_file=self.key_file,
                        known_hosts=self.known_hosts)

    def stop(self, hosts: Iterable[Host] | None = None) -> None:
        """Stop the given hosts (all of this pool's, and its shared root, when None)."""
        self._release([h.address for h in hosts] if hosts is not None else None)

    def _release(self, addresses: list[str] | None) -> None:
        everything = addresses is None
        addresses = list(self._claims) if everything else addresses
        with _Lock():
            claims = [self._claims.pop(a) for a in addresses if a in self._claims]
            if everything and self._shared is not None:
                claims.append(self._shared)
                self._shared = None
            _teardown_claims(claims)
            _remove_bridge_if_unused()
        for a in addresses:
            self._known.pop(a, None)
            if a in self._procs:
                self._procs.pop(a).wait()
        self._write_known_hosts()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- inventories ----------------------------------------------------------------------
    def write_inventory(self, path: str | Path, groups: dict[str, list[Host]],
                        extra_vars: dict | None = None) -> Path:
        """An Ansible YAML inventory: one group per key, connection vars per host, ``extra_vars`` on all."""
        def host_vars(h: Host) -> dict:
            known = getattr(h, "known_hosts", "") or self.known_hosts
            return {
                "ansible_host": h.address, "ansible_port": h.port, "ansible_user": h.user or "root",
                "ansible_ssh_private_key_file": h.key_file or self.key_file,
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                                           "-o IdentitiesOnly=yes -o ConnectTimeout=5",
                "ansible_python_interpreter": "/usr/bin/python3",
            }
        inv = {"all": {"children": {g: {"hosts": {h.name: host_vars(h) for h in hs}} for g, hs in groups.items()}}}
        if extra_vars:
            inv["all"]["vars"] = dict(extra_vars)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Generated by flows/standins/sshhosts (SSH test hosts); do not edit.\n"
                        + yaml.safe_dump(inv, sort_keys=False))
        return path
