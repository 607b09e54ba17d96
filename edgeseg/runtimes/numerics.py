"""How ONNX Runtime computes a QDQ (int8) graph: ``simulated`` or ``fused`` numerics.

* ``simulated`` (the default for every accuracy figure): the session option
  ``session.disable_quant_qdq = 1`` keeps QuantizeLinear / DequantizeLinear as float ops,
  so a quantized Conv is ``Conv(DQ(Q(x)), DQ(w))`` in float: exactly the grid an int8
  engine that accumulates in int32 computes (an ARM phone with SDOT, TensorRT, a VNNI CPU),
  and the same numbers on every host.
* ``fused`` (the default for latency): ONNX Runtime fuses ``DQ -> Conv -> Q`` into its
  integer kernels (QLinearConv, QLinearMatMul...), the code that actually runs when a
  model is deployed on x86 with ONNX Runtime. On x86 without VNNI (AVX2, AVX-512BW) those
  kernels add pairs of uint8 x int8 products in saturating int16 (``VPMADDUBSW``), so
  large activations times large weights clip: measured on the test model, all-int8 mask
  cosine to FP32 is 0.955 with fused kernels on an AVX2 CPU against 0.9999 simulated.

Accuracy (eval, sweep AP, fidelity, the CI gate, TFLite/TNN comparisons) uses simulated
numerics unless a user deploying to x86 with ONNX Runtime asks for ``--numerics fused``;
latency (bench, the sweep's timing rounds, track timing) uses the fused kernels. Every
report records which numerics produced its figures. Nothing here imports onnxruntime.
"""

from __future__ import annotations

import warnings
from typing import Any

from edgeseg.errors import EdgesegError

SIMULATED = "simulated"
FUSED = "fused"
NUMERICS = (SIMULATED, FUSED)
ACCURACY_DEFAULT = SIMULATED  # eval, sweep AP, fidelity, regress, converter comparisons
LATENCY_DEFAULT = FUSED  # bench, sweep latency rounds, track
# Non-ONNX-Runtime backends run their own kernels; there is nothing to choose.
NATIVE = "native"

# ONNX Runtime session config key that stops the QDQ -> integer-kernel fusions.
DISABLE_QDQ_KEY = "session.disable_quant_qdq"

DESCRIPTIONS = {
    SIMULATED: "Q/DQ executed as float ops (session.disable_quant_qdq=1): what a correct int8 engine "
               "computes (ARM dot product, TensorRT), identical on every host",
    FUSED: "ONNX Runtime's fused int8 kernels on this host (QLinearConv, QLinearMatMul...): "
           "what x86 deployment with ONNX Runtime computes",
    NATIVE: "the backend's own kernels",
}


class NumericsWarning(UserWarning):
    """Figures measured with numerics that are known to be wrong on this host."""


def check_numerics(value: str | None, flag: str = "--numerics") -> str:
    """``value`` if it is a known choice; one clear error otherwise."""
    if value not in NUMERICS:
        raise EdgesegError(f"{flag} {value!r} is not a numerics choice",
                           f"use {SIMULATED} (Q/DQ as float ops, the same on every host) or {FUSED} "
                           "(ONNX Runtime's int8 kernels of this host)")
    return value


def describe(numerics: str, isa=None) -> dict[str, Any]:
    """What a report records: the choice, what it means and the host's int8 path."""
    from edgeseg.benchmark.cpu_isa import host_isa

    isa = isa or host_isa()
    out: dict[str, Any] = {"numerics": numerics, "description": DESCRIPTIONS.get(numerics, numerics),
                           "host_isa": isa.summary(), "host_int8_dot": isa.int8_dot}
    if numerics == FUSED:
        out["ort_fused_int8_saturates"] = isa.ort_fused_int8_saturates
    return out


_warned: set[str] = set()


def saturation_message(what: str, isa) -> str:
    return (f"{what} uses ONNX Runtime's fused int8 kernels (--numerics fused) on a CPU where they "
            f"saturate ({isa.summary()}; int8 path: {isa.int8_dot}): int8 figures will be lower than a "
            f"phone, TensorRT or a VNNI CPU gives. Pass --numerics simulated (the default of eval, sweep "
            f"and quantize) to measure with simulated Q/DQ.")


def warn_if_saturating(numerics: str, what: str, isa=None) -> bool:
    """Warn once per process when ``what`` (an accuracy figure) uses fused numerics on a host
    whose fused int8 kernels saturate. Returns whether the host is such a host."""
    from edgeseg.benchmark.cpu_isa import host_isa

    if numerics != FUSED:
        return False
    isa = isa or host_isa()
    if not isa.ort_fused_int8_saturates:
        return False
    if what not in _warned:
        _warned.add(what)
        warnings.warn(NumericsWarning(saturation_message(what, isa)), stacklevel=2)
    return True
