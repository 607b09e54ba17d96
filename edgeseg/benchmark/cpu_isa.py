"""Which int8 instructions a CPU has, from ``/proc/cpuinfo`` (``lscpu`` / ``platform`` as fallbacks).

Why it matters: ONNX Runtime's fused x86 int8 kernels (U8S8 GEMM/Conv) multiply uint8
activations by int8 weights with ``VPMADDUBSW`` on AVX2 and AVX-512BW, which adds pairs of
products into *saturating* int16; only the VNNI instructions (AVX512-VNNI, AVX-VNNI, and
the AMX machines that carry them) accumulate into int32 without that step. So the same
QDQ model computes different numbers on an AVX2-only CI machine than on a VNNI laptop, a
phone (ARM dot product) or TensorRT. Reports record what the host has, and accuracy
paths warn when fused numerics are asked for on a host where they are known to saturate
(see :mod:`edgeseg.runtimes.numerics`).

Pure parsing of text, so the same code reads the local ``/proc/cpuinfo`` and the one a
phone or a Jetson sent back through the device probe.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

# cpuinfo flag -> label, in the order reports list them. x86 ``flags`` and ARM ``Features``.
X86_FEATURES = {
    "avx2": "AVX2", "avx512f": "AVX-512F", "avx512bw": "AVX-512BW", "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8",
}
ARM_FEATURES = {
    "asimd": "NEON", "asimddp": "dot product (SDOT/UDOT)", "i8mm": "int8 matmul (I8MM)",
    "asimdhp": "fp16 arithmetic", "sve": "SVE", "sve2": "SVE2",
}
# Any of these gives ONNX Runtime an int32-accumulating u8s8 dot product on x86.
X86_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class CpuIsa:
    arch: str  # x86_64 | aarch64 | arm | another platform.machine() | unknown
    features: list[str] = field(default_factory=list)  # cpuinfo flag names of interest, present ones
    source: str = "unknown"  # /proc/cpuinfo | lscpu | platform

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686", "i386", "x86")

    @property
    def is_arm(self) -> bool:
        return self.arch in ("aarch64", "arm64", "arm") or self.arch.startswith("armv")

    @property
    def known(self) -> bool:
        """Whether the feature list was read (``platform`` alone gives the architecture only)."""
        return self.source in ("/proc/cpuinfo", "lscpu")

    @property
    def int8_dot(self) -> str:
        """The best int8 dot-product path, in words."""
        f = set(self.features)
        if self.is_x86:
            if not self.known:
                return "unknown (no CPU flags readable)"
            if "amx_int8" in f:
                return "AMX-INT8 + VNNI"
            if "avx512_vnni" in f:
                return "AVX512-VNNI"
            if "avx_vnni" in f:
                return "AVX-VNNI"
            if "avx512bw" in f:
                return "AVX-512BW without VNNI (VPMADDUBSW, saturating int16 pairs)"
            if "avx2" in f:
                return "AVX2 without VNNI (VPMADDUBSW, saturating int16 pairs)"
            return "SSE only (PMADDUBSW, saturating int16 pairs)"
        if self.is_arm:
            if not self.known:
                return "unknown (no CPU features readable)"
            if "i8mm" in f:
                return "I8MM + dot product"
            if "asimddp" in f:
                return "dot product (SDOT/UDOT)"
            return "NEON widening multiply (no dot product)"
        return "unknown"

    @property
    def ort_fused_int8_saturates(self) -> bool | None:
        """True where ONNX Runtime's fused u8s8 kernels are known to saturate (x86 without
        any VNNI); False where they accumulate exactly; None when the flags are unknown."""
        if self.is_x86:
            if not self.known:
                return None
            return not any(v in self.features for v in X86_VNNI)
        if self.is_arm:
            return False  # ARM kernels widen to int32 (SDOT/UDOT or SMLAL): no int16 step
        return None

    def summary(self) -> str:
        labels = {**X86_FEATURES, **ARM_FEATURES}
        names = [labels[f] for f in labels if f in self.features]
        listed = ", ".join(names) if names else ("none of interest" if self.known else "flags unknown")
        return f"{self.arch}: {listed}"

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "features": list(self.features), "source": self.source,
                "int8_dot": self.int8_dot, "ort_fused_int8_saturates": self.ort_fused_int8_saturates,
                "summary": self.summary()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CpuIsa":
        return cls(str(d.get("arch", "unknown")), list(d.get("features") or []), str(d.get("source", "unknown")))


def _interesting(flags: set[str], table: dict[str, str]) -> list[str]:
    return [f for f in table if f in flags]


def isa_from_cpuinfo(text: str, core: int | None = None) -> CpuIsa | None:
    """The ISA of ``core`` (default: the first processor) from ``/proc/cpuinfo`` text.

    x86 kernels list ``flags``; ARM kernels list ``Features`` (and ``CPU architecture``).
    None when the text has neither (nothing to go on).
    """
    from edgeseg.benchmark.device_info import cpuinfo_blocks

    blocks = cpuinfo_blocks(text or "")
    procs = [b for b in blocks if "flags" in b or "features" in b]
    if not procs:
        return None
    block = procs[0]
    if core is not None:
        block = next((b for b in procs if b.get("processor", "").strip() == str(core)), block)
    if "flags" in block:
        flags = set(block["flags"].split())
        arch = "x86_64" if "lm" in flags else "x86"
        return CpuIsa(arch, _interesting(flags, X86_FEATURES), "/proc/cpuinfo")
    flags = set(block["features"].split())
    version = block.get("cpu architecture", "").strip()
    arch = "aarch64" if (version.isdigit() and int(version) >= 8) or "asimd" in flags else "arm"
    return CpuIsa(arch, _interesting(flags, ARM_FEATURES), "/proc/cpuinfo")


def isa_from_lscpu(text: str) -> CpuIsa | None:
    """``lscpu`` output (``Architecture:`` and ``Flags:`` lines), for hosts without procfs access."""
    fields = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    arch = fields.get("architecture")
    if not arch:
        return None
    flags = set(fields.get("flags", "").split())
    table = X86_FEATURES if arch in ("x86_64", "i686", "i386") else ARM_FEATURES
    return CpuIsa(arch, _interesting(flags, table), "lscpu" if flags else "platform")


_HOST: CpuIsa | None = None


def host_isa(refresh: bool = False) -> CpuIsa:
    """This machine's ISA (cached: CPU flags do not change while a process runs)."""
    global _HOST
    if _HOST is not None and not refresh:
        return _HOST
    found = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            found = isa_from_cpuinfo(f.read())
    except OSError:
        found = None
    if found is None and shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
            found = isa_from_lscpu(out)
        except (OSError, subprocess.SubprocessError):
            found = None
    if found is None:
        found = CpuIsa((platform.machine() or "unknown").lower(), [], "platform")
    _HOST = found
    return found
