"""Shared fixtures: real local services, started once per session (see tests/fixtures/)."""

# Ansible's collection loader refuses to install itself once a second FileFinder path hook exists,
# which importing the Prefect server (the `prefect_api` harness) adds. Load Ansible's first.
import ansible.utils.collection_loader._collection_finder  # noqa: F401

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.prefect_api",
    "tests.fixtures.s3",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.ssh_hosts",
    "tests.fixtures.pushgateway",
]
