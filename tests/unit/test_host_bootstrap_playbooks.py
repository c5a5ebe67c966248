"""The playbooks statically: syntax against every inventory, ansible-lint's production profile, and the
extra-vars allow-list matching what the roles actually read."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from flows.host_bootstrap.models import ExtraVars
from flows.host_bootstrap.runner import PLAYBOOKS, ansible_path

REPO = PLAYBOOKS.parent
PLAYBOOK_FILES = ["site.yml", "gpu_host.yml", "storage_host.yml"]
ENV = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "PATH": ansible_path(), "ANSIBLE_NOCOLOR": "1"}


def _ci_inventory(tmp_path):
    """inventories/ci as the SSH test-host fixture writes it (hosts.yml generated, group_vars committed)."""
    shutil.copytree(REPO / "inventories/ci/group_vars", tmp_path / "group_vars")
    hosts = {f"h{i}": {"ansible_host": f"10.213.0.{i + 1}", "ansible_user": "root"} for i in (1, 2)}
    groups = {g: {"hosts": hosts} for g in ("gpu_hosts", "drbd_hosts", "k8s_nodes")}
    groups["monitoring"] = {"hosts": {"h1": hosts["h1"]}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": groups}}))
    return tmp_path / "hosts.yml"


@pytest.mark.parametrize("inventory", ["production", "staging", "ci"])
def test_every_playbook_passes_syntax_check_against_the_inventory(inventory, tmp_path):
    inv = _ci_inventory(tmp_path) if inventory == "ci" else REPO / "inventories" / inventory / "hosts.yml"
    r = subprocess.run(["ansible-playbook", "--syntax-check", "-i", str(inv), *PLAYBOOK_FILES],
                       cwd=PLAYBOOKS, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert all(f"playbook: {pb}" in r.stdout for pb in PLAYBOOK_FILES)


def test_every_inventory_has_the_four_groups_and_split_group_vars():
    for env in ("production", "staging"):
        inv = yaml.safe_load((REPO / "inventories" / env / "hosts.yml").read_text())
        assert set(inv["all"]["children"]) == {"gpu_hosts", "drbd_hosts", "k8s_nodes", "monitoring"}
        topics = {p.name for p in (REPO / "inventories" / env / "group_vars/all").glob("*.yml")}
        assert {"bootstrap.yml", "common.yml", "nvidia.yml", "kubernetes.yml", "monitoring.yml"} <= topics
        assert (REPO / "inventories" / env / "group_vars/drbd_hosts.yml").exists()


def test_allow_listed_extra_vars_are_variables_the_roles_define():
    defined = set()
    for defaults in PLAYBOOKS.glob("roles/*/defaults/main.yml"):
        defined |= set(yaml.safe_load(defaults.read_text()) or {})
    defined.add("bootstrap_apply_runtime")  # the inventory-wide switch every role's *_apply_runtime reads
    assert set(ExtraVars.model_fields) <= defined


@pytest.mark.slow
def test_ansible_lint_production_profile_is_clean():
    lint = shutil.which("ansible-lint", path=ansible_path())
    r = subprocess.run([lint, "--offline", "--profile", "production", "--nocolor"], cwd=PLAYBOOKS, env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
