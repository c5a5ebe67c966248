"""Shared fixtures: real local services, started once per session (see tests/fixtures/)."""

import os

# Tests talk to loopback only: onnxruntime uploads telemetry from Linux unless told not to (before any
# test module imports it), and Prefect's SDK telemetry is off as in the CLI.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

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
