"""gpu-host-bootstrap converges real hosts: Debian roots in network namespaces with sshd (flows/standins/sshhosts),
through the flow and its ansible-runner path. Idempotence, the result checked over SSH, and an
unreachable host reported while the others finish.

What "enabled" means here: the test hosts have no init (sshd is PID 1), so a service counts as
enabled when ``systemctl is-enabled`` says so (its unit is linked into a target, as on a booted host);
starting it is a runtime step that the CI inventory turns off (``bootstrap_apply_runtime: false``).
"""

from __future__ import annotations

import json
import shutil

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.common.runtime import run_flow
from flows.common.ssh import run_many
from flows.host_bootstrap.flow import gpu_host_bootstrap
from flows.host_bootstrap.models import BootstrapFailed, BootstrapReport
from flows.host_bootstrap.runner import PLAYBOOKS

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PACKAGES = ["chrony", "prometheus-node-exporter", "drbd-utils", "containerd", "conntrack", "pciutils", "numactl"]
SERVICES = ["chrony", "prometheus-node-exporter", "containerd"]

VERIFY = r"""
set -e
[ "$(dpkg-query -W -f='${{Status}}\n' {packages} | grep -cx 'install ok installed')" -eq {npackages} ] && echo packages-ok
systemctl is-enabled {services}
drbdadm sh-nop && echo drbdadm-ok
drbdadm dump models | grep -q "address *ipv4 {peer}:7789" && echo drbd-peer-ok
grep -qx 'PasswordAuthentication no' /etc/ssh/sshd_config.d/50-inferops.conf && /usr/sbin/sshd -t && echo sshd-ok
grep -qx 'vm.swappiness=1' /etc/sysctl.d/90-inferops-gpu.conf && echo sysctl-ok
grep -qx 'net.ipv4.ip_forward=1' /etc/sysctl.d/99-kubernetes.conf && echo k8s-sysctl-ok
grep -q '^\*\s*-\s*memlock\s*unlimited' /etc/security/limits.d/90-inferops.conf && echo limits-ok
grep -q 'SystemdCgroup = true' /etc/containerd/config.toml && echo containerd-ok
grep -q 'value: inferops.io/managed=true' /etc/kubernetes/kubeadm-join.yaml && echo join-config-ok
stat -c %a /etc/kubernetes/kubeadm-join.yaml
id -nG sre
visudo -c >/dev/null && echo sudoers-ok
"""


def _inventory(factory, path, hosts, extra=()):
    shutil.copytree(PLAYBOOKS.parent / "inventories/ci/group_vars", path.parent / "group_vars", dirs_exist_ok=True)
    every = [*hosts, *extra]
    return factory.write_inventory(path, {"gpu_hosts": every, "drbd_hosts": hosts, "k8s_nodes": every,
                                          "monitoring": hosts[:1]})


def test_converge_is_idempotent_verified_over_ssh_and_reports_unreachable_hosts(ssh_host_factory, prefect_client,
                                                                               tmp_path):
    hosts = ssh_host_factory(2, prefix="boot")
    try:
        first = BootstrapReport(**run_flow(gpu_host_bootstrap, inventory=str(_inventory(
            ssh_host_factory, tmp_path / "a" / "hosts.yml", hosts))))
        assert first.ok and [h.host for h in first.hosts] == [h.name for h in hosts]
        assert all(h.changed > 0 and h.failed == 0 for h in first.hosts), first.hosts

        peers = {hosts[0].name: hosts[1].address, hosts[1].name: hosts[0].address}
        for h in hosts:
            script = VERIFY.format(packages=" ".join(PACKAGES), npackages=len(PACKAGES), services=" ".join(SERVICES),
                                   peer=peers[h.name])
            [r] = run_many([h], ["sh", "-c", script], known_hosts=h.known_hosts, timeout_s=60)
            assert r.exit_status == 0, (h.name, r.stdout, r.stderr)
            out = r.stdout.split()
            assert out.count("enabled") == len(SERVICES)
            for marker in ("packages-ok", "drbdadm-ok", "drbd-peer-ok", "sshd-ok", "sysctl-ok", "k8s-sysctl-ok", "limits-ok",
                           "containerd-ok", "join-config-ok", "600", "sudoers-ok"):
                assert marker in out, (h.name, marker, r.stdout, r.stderr)
            assert "sudo" in r.stdout.splitlines()[-2]

        # Second run, with a third host that does not answer: it is reported unreachable (and the run
        # fails naming it and the task) while the two real hosts finish with nothing left to change.
        dead = ssh_host_factory.unreachable("boot-dead")
        with pytest.raises(BootstrapFailed) as failed:
            run_flow(gpu_host_bootstrap, inventory=str(_inventory(
                ssh_host_factory, tmp_path / "b" / "hosts.yml", hosts, extra=[dead])))
        second = {h.host: h for h in failed.value.report.hosts}
        assert "boot-dead unreachable at task 'Gathering Facts'" in str(failed.value)
        assert second["boot-dead"].status == "unreachable" and second["boot-dead"].message
        for h in hosts:
            assert (second[h.name].status, second[h.name].changed, second[h.name].failed) == ("ok", 0, 0), second
            assert second[h.name].ok > 30  # the whole playbook ran there, not cut short by the dead host

        # Both runs were recorded in the Prefect API, each ending with its per-host table artifact.
        artifacts = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gpu-host-bootstrap"])),
            sort=ArtifactSort.CREATED_DESC)
        assert len(artifacts) >= 2 and artifacts[0].type == "table"
        rows = {r["host"]: r for r in json.loads(artifacts[0].data)}
        assert rows["boot-dead"]["status"] == "unreachable" and rows["boot-dead"]["task"] == "Gathering Facts"
        assert {rows[h.name]["changed"] for h in hosts} == {0}
        assert "boot-dead unreachable" in artifacts[0].description
    finally:
        ssh_host_factory.stop(hosts)
