"""Loading every pipeline, as a worker or `prefect deploy` does, reaches nothing beyond loopback.

onnxruntime 1.29+ uploads telemetry from Linux a few seconds after it is imported (found by the local
stack's netns test: DNS for mobile.events.data.microsoft.com from `prefect deploy`); model_build opts
out before importing it. The process stays up long enough for such a background upload to start."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.connections import beyond, strace_prefix

REPO = Path(__file__).resolve().parents[2]
CODE = """
import os, time
os.environ.pop("ORT_DISABLE_TELEMETRY", None)  # what a worker without our environment has
from prefect.flows import load_flow_from_entrypoint
import yaml
for d in yaml.safe_load(open("prefect.yaml"))["deployments"]:
    load_flow_from_entrypoint(d["entrypoint"])
import onnxruntime
onnxruntime.InferenceSession("model_build/examples/digits/digits_cnn.onnx", providers=["CPUExecutionProvider"])
time.sleep(8)
"""


def test_loading_every_pipeline_contacts_nothing(tmp_path):
    trace = tmp_path / "load.strace"
    if not strace_prefix(trace):
        pytest.skip("strace is not installed: connections not recorded")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1",
           "PREFECT_HOME": str(tmp_path / "prefect")}
    p = subprocess.run([*strace_prefix(trace), sys.executable, "-c", CODE], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert beyond(trace) == []
