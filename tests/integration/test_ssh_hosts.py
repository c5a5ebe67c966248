"""The SSH test-host fixture over real SSH: namespaces, per-host roots, unreachable hosts, inventories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.common.inventory import load_hosts
from flows.common.ssh import run_many
from flows.standins.sshhosts import cleanup_stale
from flows.standins.sshhosts.hosts import STATE
from tests.fixtures.ssh_hosts import CI_INVENTORY

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parents[2]


def test_run_many_reaches_each_host_by_its_own_name(ssh_hosts):
    results = run_many(ssh_hosts, ["sh", "-c", "hostname; ip -4 -o addr show eth0"],
                       known_hosts=ssh_hosts[0].known_hosts)
    assert [r.host for r in results] == [h.name for h in ssh_hosts]
    for h, r in zip(ssh_hosts, results, strict=True):
        assert r.error is None and r.exit_status == 0, r
        name, addr = r.stdout.splitlines()
        assert name == h.name
        assert f"inet {h.address}/24" in addr


def test_hosts_are_isolated_from_the_machine(ssh_hosts):
    [r] = run_many(ssh_hosts[:1], ["sh", "-c", "cat /proc/1/comm; sysctl -w vm.swappiness=7 2>&1; echo rc=$?"],
                   known_hosts=ssh_hosts[0].known_hosts)
    lines = r.stdout.splitlines()
    assert lines[0] == "sshd"  # its own PID namespace: sshd is PID 1
    assert lines[-1] != "rc=0"  # /proc/sys is read-only: a playbook cannot retune the CI machine
    assert Path("/proc/sys/vm/swappiness").read_text().strip() != "7"


def test_hosts_resolve_no_names_off_the_machine(ssh_hosts):
    """The build host's resolv.conf would send lookups (Ansible's fact gathering) to its name servers."""
    [r] = run_many(ssh_hosts[:1], ["sh", "-c", "grep -c '^nameserver' /etc/resolv.conf; echo rc=$?"],
                   known_hosts=ssh_hosts[0].known_hosts)
    assert r.stdout.splitlines()[0] == "0", r.stdout


def test_per_host_files_are_written_into_each_hosts_own_root(ssh_host_factory, ssh_hosts):
    stand_in = "/usr/local/sbin/drbdsetup"
    hosts = ssh_host_factory(2, prefix="files", files=lambda i: {stand_in: (f"#!/bin/sh\necho stand-in {i}\n", 0o755)})
    try:
        results = run_many(hosts + ssh_hosts[:1], [stand_in], known_hosts=hosts[0].known_hosts)
        assert [(r.exit_status, r.stdout) for r in results] == [(0, "stand-in 0\n"), (0, "stand-in 1\n"), (127, "")]
        assert (hosts[1].root / stand_in.lstrip("/")).read_text() == "#!/bin/sh\necho stand-in 1\n"
    finally:
        ssh_host_factory.stop(hosts)
    assert not hosts[0].root.exists()


def test_unreachable_host_reports_an_error_and_others_still_answer(ssh_host_factory, ssh_hosts):
    dead = ssh_host_factory.unreachable()
    assert dead.address.startswith("10.213.0.")
    ok, gone = run_many([ssh_hosts[0], dead], ["true"], known_hosts=dead.known_hosts, timeout_s=15)
    assert ok.error is None and ok.exit_status == 0
    assert gone.host == "dead" and gone.exit_status is None and gone.error


def test_ci_inventory_loads_and_its_hosts_answer(ssh_hosts):
    hosts = load_hosts(str(CI_INVENTORY), "drbd_hosts")
    assert [(h.name, h.address, h.port, h.user) for h in hosts] == [
        (t.name, t.address, 22, "root") for t in ssh_hosts]
    assert {h.key_file for h in hosts} == {ssh_hosts[0].key_file}
    assert [h.name for h in load_hosts(str(CI_INVENTORY), "monitoring")] == [ssh_hosts[0].name]
    results = run_many(hosts, ["true"], known_hosts=ssh_hosts[0].known_hosts)
    assert [r.exit_status for r in results] == [0, 0]


def test_a_crashed_session_is_cleaned_up_by_the_next(ssh_host_factory):
    code = "from flows.standins.sshhosts import HostPool; h = HostPool()(1, prefix='crash')[0]; print(h.netns, flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                            text=True)
    try:
        ns = proc.stdout.readline().strip()
        assert ns.startswith("ifo-"), ns
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no teardown runs
        proc.wait()
    claim = STATE / "hosts" / ns.removeprefix("ifo-")
    assert claim.exists() and ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert cleanup_stale() >= 1
    assert not claim.exists()
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert str(claim) not in Path("/proc/mounts").read_text()
