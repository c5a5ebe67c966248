"""The build host's CPU: which integer dot-product instructions onnxruntime's kernels (MLAS) use,
and the INT8 scheme that follows from them.

onnxruntime runs a QDQ model's INT8 MatMul/Conv on uint8 activations × int8 weights (U8S8). On
x86-64 without VNNI (AVX2, and AVX-512 before VNNI) the kernel multiplies with ``VPMADDUBSW``,
which adds two u8×s8 products into a *saturating* signed 16-bit lane: 255·127·2 = 64770 does not
fit in 32767, so large activations times large weights clip, silently. VNNI (``VPDPBUSD``, AVX-512
or AVX-VNNI), AMX and ARM's dot-product instructions accumulate into 32 bits and never saturate.
onnxruntime's guidance (``quantize_static``'s docstring, "Choosing parameters for CPU inference";
its quantization docs) for CPUs without VNNI is ``reduce_range`` (7-bit weights in [-64, 64]:
255·64·2 = 32640 fits) or U8U8 (a slower kernel without the saturating step).

Which scheme is used is recorded in the manifest with the ISA it was chosen for. A U8S8 model
built on a VNNI host *and served on an AVX2 host* saturates there: ``Scheme.portable`` says
whether a model is exact on every x86-64 CPU.

``INFEROPS_CPU_ISA`` (one of :class:`ISA`) overrides detection: to reproduce another host's
regime, or where ``/proc/cpuinfo`` is not readable.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from flows.common.errors import BadInput

ENV = "INFEROPS_CPU_ISA"


class ISA(StrEnum):
    """The best INT8 dot-product path of a CPU, best first."""

    amx = "amx"  # Intel AMX-INT8 (tile matrix multiply, 32-bit accumulation)
    avx512_vnni = "avx512_vnni"  # VPDPBUSD on zmm: Cascade Lake, Ice Lake, AMD Zen 4+
    avx_vnni = "avx_vnni"  # VPDPBUSD on ymm (VEX): Alder Lake, Sierra Forest
    avx512 = "avx512"  # AVX-512BW without VNNI (Skylake-SP): VPMADDUBSW, saturates
    avx2 = "avx2"  # VPMADDUBSW, saturates
    arm64 = "arm64"  # NEON (SDOT/UDOT or widening multiply-accumulate): 32-bit, no saturation
    other = "other"  # anything else: assume the worst

    @property
    def saturates_u8s8(self) -> bool:
        return self in (ISA.avx512, ISA.avx2, ISA.other)


class Scheme(StrEnum):
    """How INT8 activations and weights are encoded."""

    u8s8 = "u8s8"  # uint8 asymmetric activations, int8 symmetric weights: fastest, exact with VNNI/AMX/ARM
    u8s8_reduce_range = "u8s8_reduce_range"  # the same with 7-bit weights: exact on every CPU
    u8u8 = "u8u8"  # uint8 weights too: exact on every CPU, slower kernel without VNNI
    s8s8 = "s8s8"  # int8 symmetric activations and weights, no zero points: TensorRT's INT8

    @property
    def portable(self) -> bool:
        """Exact (no saturation) on every x86-64 CPU as well as on ARM."""
        return self is not Scheme.u8s8

    def describe(self) -> str:
        return {
            Scheme.u8s8: "uint8 asymmetric activations x int8 symmetric per-channel weights",
            Scheme.u8s8_reduce_range: "uint8 asymmetric activations x 7-bit int8 symmetric per-channel weights "
                                      "(reduce_range)",
            Scheme.u8u8: "uint8 asymmetric activations x uint8 per-channel weights",
            Scheme.s8s8: "int8 symmetric activations x int8 symmetric per-channel weights (TensorRT)",
        }[self]


@dataclass(frozen=True)
class HostCPU:
    isa: ISA
    model: str  # "model name" from /proc/cpuinfo, or platform.processor()
    machine: str  # platform.machine(): x86_64, aarch64, ...
    source: str  # "/proc/cpuinfo" or the override's name

    def describe(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def isa_from_flags(flags: set[str], machine: str) -> ISA:
    """The INT8 path MLAS takes on a CPU with these /proc/cpuinfo flags (x86) or features (ARM)."""
    if machine.lower() in ("aarch64", "arm64"):
        return ISA.arm64
    if "amx_int8" in flags and "amx_tile" in flags:
        return ISA.amx
    if "avx512_vnni" in flags:
        return ISA.avx512_vnni
    if "avx_vnni" in flags:
        return ISA.avx_vnni
    if "avx512bw" in flags:
        return ISA.avx512
    if "avx2" in flags:
        return ISA.avx2
    return ISA.other


def parse_cpuinfo(text: str, machine: str) -> tuple[set[str], str]:
    """(flags of the first processor, its model name) from /proc/cpuinfo's text."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        if flags and model:
            break
    return flags, model or platform.processor() or machine


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> HostCPU:
    machine = platform.machine() or "unknown"
    override = os.environ.get(ENV, "").strip()
    try:
        flags, model = parse_cpuinfo(cpuinfo.read_text(errors="replace"), machine)
    except OSError:
        flags, model = set(), platform.processor() or machine
    if override:
        try:
            isa = ISA(override.lower())
        except ValueError:
            raise BadInput(f"{ENV}={override!r}: expected one of {', '.join(i.value for i in ISA)}") from None
        return HostCPU(isa, model, machine, ENV)
    return HostCPU(isa_from_flags(flags, machine), model, machine, str(cpuinfo) if flags else "unknown")


def choose(isa: ISA, *, tensorrt: bool) -> tuple[list[Scheme], str]:
    """The schemes worth searching for a target on a host, best guess first, and why.

    Without VNNI both exact schemes are searched and the faster one that meets the tolerance is
    kept (measured on this host): 7-bit weights keep the fast u8s8 kernel but may cost fidelity,
    hence more nodes in float; u8u8 keeps 8-bit weights on a slower kernel."""
    if tensorrt:
        return [Scheme.s8s8], "target tensorrt: TensorRT's INT8 is symmetric int8 for activations and weights"
    if isa.saturates_u8s8:
        return [Scheme.u8s8_reduce_range, Scheme.u8u8], (
            f"{isa.value} has no VNNI: onnxruntime's u8s8 kernel (VPMADDUBSW) saturates at 16 bits; onnxruntime's "
            "guidance for CPUs without VNNI is 7-bit weights (reduce_range) or u8u8, and the faster of the two "
            "that meets the tolerance on this host is kept")
    return [Scheme.u8s8], f"{isa.value} accumulates u8s8 products in 32 bits: full 8-bit weights are exact"
