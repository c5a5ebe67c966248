"""Shared fixtures: real local services, started once per session (see tests/fixtures/)."""

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.prefect_api",
    "tests.fixtures.s3",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.ssh_hosts",
]
