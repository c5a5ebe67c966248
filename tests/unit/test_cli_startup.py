"""Offline commands do not import Prefect (behaviour, read from ``python -X importtime``; the timing
is benchmarks/cli_startup.py's job), and help screens import no pipeline they do not show."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import pytest

from tests.fixtures.common import REPO

CAPTURE = REPO / "flows" / "drbd_health" / "captures" / "storage-a.json"


def _imports(*args: str, tmp_path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``inferops ARGS`` offline (no Prefect API anywhere) under -X importtime."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "INFEROPS_STATE_DIR": str(tmp_path / "state")})
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.common.cli", *args], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=120)
    mods = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    return p, mods


@pytest.mark.parametrize("args, absent", [
    (["drbd", "check", "--input", str(CAPTURE)], ("prefect", "boto3", "onnxruntime", "polars")),
    (["backup", "--help"], ("prefect", "boto3", "flows.log_backup.engine", "typer.rich_utils")),
    # PromQL templating needs no HTTP client; help is click's plain text (rich's took 0.4-0.7 s)
    (["canary", "--help"], ("prefect", "httpx", "kubernetes", "typer.rich_utils", "rich.console")),
    (["bootstrap", "--help"], ("prefect", "ansible_runner", "typer.rich_utils", "rich.console")),
    (["--help"], ("prefect", "typer.rich_utils", "flows.drbd_health.cli", "flows.log_backup.cli", "flows.model_build.cli",
                  "flows.canary.cli", "flows.idle_gpu.cli", "flows.cost_report.cli", "flows.host_bootstrap.cli")),
])
def test_offline_commands_do_not_import_prefect(tmp_path, args, absent):
    p, mods = _imports(*args, tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "typer" in mods and "flows.common.redact" in mods  # the import log is real
    assert not [m for m in absent if m in mods], [m for m in absent if m in mods]
    if args[0] == "drbd":
        assert p.stdout.startswith("DRBD OK - ")


def test_model_cli_choices_mirror_the_build_enums():
    """flows/model_build/cli.py spells Precision/Metric out (so --help imports no onnx): keep them equal."""
    from flows.model_build import cli
    from model_build.build import Precision, Target
    from model_build.evaluate import Metric
    from model_build.isa import Scheme

    assert set(typing.get_args(cli.Precision)) == {p.value for p in Precision}
    assert set(typing.get_args(cli.Metric)) == {m.value for m in Metric}
    assert set(typing.get_args(cli.Target)) == {t.value for t in Target}
    assert set(typing.get_args(cli.Scheme)) == {s.value for s in Scheme}


def test_a_missing_model_is_reported_before_onnx_and_onnxruntime_load(tmp_path):
    """The build needs onnxruntime, but not to say that its model file is missing (it took 0.8 s)."""
    p, mods = _imports("model", "build", str(tmp_path / "missing.onnx"), "--calib", str(tmp_path / "c.npz"),
                       "--eval", str(tmp_path / "e.npz"), "--precision", "int8", "--out", str(tmp_path / "out"),
                       tmp_path=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().endswith(f"inferops: cannot read model {tmp_path / 'missing.onnx'}: no such file")
    assert "typer" in mods and not [m for m in ("onnx", "onnxruntime", "prefect", "numpy") if m in mods]
    assert not (tmp_path / "out").exists()
