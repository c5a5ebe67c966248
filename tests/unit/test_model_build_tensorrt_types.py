"""TensorRT cannot run here, so ``model_build/tensorrt.py`` is checked statically: mypy (strict)
against ``tensorrt-stubs`` (the TensorRT 10.13 Python API), limited to that module, plus a check
that it calls none of the Python APIs TensorRT 11 removed.

``tensorrt-stubs`` is installed without its dependencies (``tensorrt`` itself cannot be installed
without NVIDIA's libraries: see the Makefile's setup). Its files are pybind11-stubgen output that
mypy does not accept as published, so a copy is repaired first, each repair counted:

- a few signatures are not valid Python (a parameter named ``in``; a parameter without a default
  after defaulted ones): relaxed to ``(*args, **kwargs)``, and none of them is an API we call;
- the module defines ``bool`` (TensorRT's BOOL data type), which shadows ``builtins.bool`` in
  every annotation of the module (``parse_from_file() -> bool`` would read as a DataType):
  annotations say ``builtins.bool``;
- ``import tensorrt_libs`` (a wheel of shared libraries, no Python API) gets an empty stub.
"""

from __future__ import annotations

import ast
import re
from importlib.metadata import PackageNotFoundError, files, version
from pathlib import Path

import pytest

from model_build import tensorrt as trt_module

MODULE = Path(trt_module.__file__)
STUBS_VERSION = "10.13.0.35.1"
SIGNATURE = re.compile(r"^(\s*)def (\w+)\((.*)\)( -> .*)?:\s*$")
BOOL = re.compile(r"(?<![\w.])bool(?!\w)")


def _relax_invalid_signatures(text: str) -> tuple[str, list[str]]:
    lines, relaxed = text.splitlines(), []
    for _ in range(100):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines) + "\n", relaxed
        except SyntaxError as exc:
            line = lines[(exc.lineno or 1) - 1]
            match = SIGNATURE.match(line)
            if not match:
                raise
            indent, name, params, ret = match.groups()
            first = params.split(",")[0].split(":")[0].strip()
            head = f"{first}, " if first in ("self", "this") else ""
            lines[(exc.lineno or 1) - 1] = f"{indent}def {name}({head}*args: typing.Any, **kwargs: typing.Any){ret or ''}:"
            relaxed.append(name)
    raise AssertionError("more than 100 invalid signatures in tensorrt-stubs")


def _builtins_bool(text: str) -> tuple[str, int]:
    out, count = ["import builtins"], 0
    for line in text.splitlines():
        if line.startswith((" ", "\t", "def ")):  # annotations; the module-level `bool: DataType` stays
            line, n = BOOL.subn("builtins.bool", line)
            count += n
        out.append(line)
    return "\n".join(out) + "\n", count


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> tuple[Path, dict[str, int], list[str]]:
    try:
        installed = version("tensorrt-stubs")
    except PackageNotFoundError:
        pytest.fail("tensorrt-stubs is not installed: run `make setup` (it installs tensorrt-stubs "
                    f"{STUBS_VERSION} with --no-deps)")
    assert installed == STUBS_VERSION, f"the check is written against tensorrt-stubs {STUBS_VERSION}, found {installed}"
    root = tmp_path_factory.mktemp("stubs")
    counts, relaxed = {"files": 0, "bool": 0}, []
    for f in files("tensorrt-stubs") or []:
        if f.suffix != ".pyi":
            continue
        text, names = _relax_invalid_signatures(Path(f.locate()).read_text())
        text, n = _builtins_bool(text)
        target = root / f.as_posix()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        counts["files"] += 1
        counts["bool"] += n
        relaxed += names
    (root / "tensorrt_libs.pyi").write_text("")
    assert counts["files"] >= 3 and (root / "tensorrt" / "__init__.pyi").is_file()
    return root, counts, relaxed


def test_tensorrt_module_type_checks_against_the_10_13_stubs(stubs, tmp_path):
    from mypy import api

    root, counts, relaxed = stubs
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {root}\nstrict = True\nwarn_unreachable = True\n"
                      "follow_imports = silent\n\n[mypy-tensorrt.*,tensorrt_bindings.*,tensorrt_libs]\n"
                      "ignore_errors = True\n")
    stdout, stderr, status = api.run(["--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
                                      "--no-error-summary", "--show-error-codes", str(MODULE)])
    assert status == 0, f"mypy on {MODULE.name}:\n{stdout}{stderr}"
    # the checks were real: our calls resolve to TensorRT's typed API, not to Any
    reveal = tmp_path / "reveal.py"
    reveal.write_text("import tensorrt as trt\n"
                      "def f(p: trt.OnnxParser, b: trt.Builder) -> None:\n"
                      "    reveal_type(p.parse_from_file('m.onnx'))\n"
                      "    reveal_type(b.create_optimization_profile())\n")
    stdout, _, _ = api.run(["--config-file", str(config), "--cache-dir", str(tmp_path / "cache"), str(reveal)])
    assert 'Revealed type is "bool"' in stdout and "IOptimizationProfile" in stdout, stdout
    assert counts["bool"] > 100 and len(relaxed) == 5


def test_tensorrt_module_uses_no_api_removed_in_trt11(stubs):
    _, _, relaxed = stubs
    tree = ast.parse(MODULE.read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not used & set(trt_module.REMOVED_IN_TRT11), sorted(used & set(trt_module.REMOVED_IN_TRT11))
    assert not used & set(relaxed)  # no call of ours lost its type check to a stub repair
    assert {"build_serialized_network", "parse_from_file", "set_shape", "create_timing_cache",
            "set_timing_cache", "STRONGLY_TYPED"} <= used  # the APIs the docstring's notes are about


def test_a_stubs_only_tensorrt_is_not_tensorrt(monkeypatch, tmp_path):
    """tensorrt-stubs installs a ``tensorrt/`` folder of .pyi files, which imports as an empty
    namespace package; the engine step must say TensorRT is missing, not crash on __version__."""
    import sys

    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("__version__: str\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    import tensorrt

    if getattr(tensorrt, "__file__", None) is not None:
        pytest.skip("a real TensorRT is installed here")
    ok, why = trt_module.available()
    assert not ok and "only its type stubs" in why
