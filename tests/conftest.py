"""Shared fixtures: real local services, started once per session (see tests/fixtures/)."""

import os
import signal

# Tests talk to loopback only: onnxruntime uploads telemetry from Linux unless told not to (before any
# test module imports it), and Prefect's SDK telemetry is off as in the CLI.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Ansible's collection loader refuses to install itself once a second FileFinder path hook exists,
# which importing the Prefect server (the `prefect_api` harness) adds. Load Ansible's first.
import ansible.utils.collection_loader._collection_finder  # noqa: F401

# Hypothesis: CI (the CI variable set) replays the same examples every run, so a red CI names a change,
# not a roll of the dice; a plain `make test` explores new examples each run, and `make fuzz` explores
# many more. A failure prints its reproduce blob either way. HYPOTHESIS_PROFILE picks one explicitly.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis_settings.register_profile("dev", print_blob=True)
_hypothesis_settings.register_profile("fuzz", derandomize=False, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.prefect_api",
    "tests.fixtures.s3",
    "tests.fixtures.prometheus",
    "tests.fixtures.kube",
    "tests.fixtures.ssh_hosts",
    "tests.fixtures.pushgateway",
]


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # `make test` stops its second pytest process with SIGTERM when the first one is interrupted: tear the
    # session's services (servers, network namespaces, the local stack) down as Ctrl-C would
    signal.signal(signal.SIGTERM, _interrupted)
