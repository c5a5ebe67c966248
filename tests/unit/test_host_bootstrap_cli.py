"""``inferops bootstrap run`` refuses bad input with one line and exit 2, before Ansible runs."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, needle", [
    (["--inventory", "no-such-inventory"], "inventory 'no-such-inventory' not found"),
    (["--inventory", "staging", "--tags", "common,gpu"], "unknown tag(s) gpu"),
    (["--inventory", "staging", "--limit", "h1;reboot"], "is not an Ansible host pattern"),
    (["--inventory", "staging", "--extra-vars", "{vars}"], "ansible_become_exe: not allowed"),
    (["--inventory", "staging", "--extra-vars", "missing.yml"], "missing.yml"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, args, needle):
    bad = tmp_path / "vars.yml"
    bad.write_text("ansible_become_exe: /bin/sh -c id\n")
    r = run_cli("bootstrap", "run", *[a.format(vars=bad) for a in args])
    assert r.returncode == 2, r
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_inventory_fails_naming_host_and_task_with_exit_1(run_cli, tmp_path):
    inv = tmp_path / "hosts.yml"  # an address nothing answers on, reached through the loopback port 9
    inv.write_text("all:\n  children:\n    gpu_hosts:\n      hosts:\n        gone: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    r = run_cli("bootstrap", "run", "--inventory", str(inv), "--tags", "node_exporter", "--json")
    assert r.returncode == 1, r
    assert "gone unreachable at task 'Gathering Facts'" in r.stderr.strip().splitlines()[-1]
    assert '"status":"unreachable"' in r.stdout.replace(" ", "")
