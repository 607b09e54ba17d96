"""Fidelity of a quantized artifact against its FP32 source, per output and per component.

Both graphs run on the same held-out images (never the calibration images: those would
flatter the ranges). For every graph output, and for the output tensors of every
component (``component_boundary_tensors``: what a component hands to the next one), we
accumulate over all images:

* max abs error,
* cosine similarity of the flattened tensors,
* SQNR in dB: 10 log10(sum ref^2 / sum (ref - quantized)^2), the signal-to-quantization-
  noise ratio (higher is better; ~40 dB is near-lossless, below ~20 dB usually hurts AP).

Errors propagate, so component outputs read top to bottom show where fidelity is lost:
the component whose SQNR drops most is the one to move to a higher precision.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass
class TensorFidelity:
    name: str
    component: str | None  # None for graph outputs
    shape: list[int]
    max_abs_error: float
    cosine: float
    sqnr_db: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "component": self.component, "shape": self.shape,
                "max_abs_error": self.max_abs_error, "cosine": self.cosine, "sqnr_db": self.sqnr_db}


class _Accumulator:
    """Streaming sums so that the figures cover all images without keeping any output."""

    def __init__(self):
        self.dot = self.ref2 = self.cand2 = self.err2 = 0.0
        self.max_abs = 0.0
        self.shape: list[int] = []

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.astype(np.float64, copy=False).ravel()
        c = cand.astype(np.float64, copy=False).ravel()
        if r.shape != c.shape:
            raise EdgesegError(f"shapes differ between the models: {ref.shape} vs {cand.shape}",
                               "compare a quantized model with the exact FP32 file it was made from")
        self.shape = list(ref.shape)
        d = r - c
        self.dot += float(r @ c)
        self.ref2 += float(r @ r)
        self.cand2 += float(c @ c)
        self.err2 += float(d @ d)
        if d.size:
            self.max_abs = max(self.max_abs, float(np.nanmax(np.abs(d))))

    def result(self, name: str, component: str | None) -> TensorFidelity:
        denom = math.sqrt(self.ref2) * math.sqrt(self.cand2)
        if denom > 0:
            cosine = self.dot / denom
        else:  # both all-zero is perfect agreement; one all-zero is none
            cosine = 1.0 if self.ref2 == self.cand2 else 0.0
        if self.err2 == 0:
            sqnr = math.inf
        elif self.ref2 == 0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.ref2 / self.err2)
        return TensorFidelity(name, component, self.shape, self.max_abs, cosine, sqnr)


@dataclass
class FidelityReport:
    reference: str
    candidate: str
    num_images: int
    images_sha256: str
    outputs: list[TensorFidelity] = field(default_factory=list)
    components: dict[str, list[TensorFidelity]] = field(default_factory=dict)
    plan: dict[str, str] | None = None
    # How ONNX Runtime computed the candidate's int8 (edgeseg.runtimes.numerics) and on what CPU.
    numerics: str = "simulated"
    host_isa: str = ""

    def worst_component(self) -> str | None:
        """The component with the lowest SQNR at its outputs."""
        best = None
        for comp, rows in self.components.items():
            low = min((r.sqnr_db for r in rows), default=math.inf)
            if best is None or low < best[1]:
                best = (comp, low)
        return best[0] if best else None

    def min_output_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | str:
            return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")

        def row(t: TensorFidelity) -> dict[str, Any]:
            d = t.to_dict()
            d["sqnr_db"] = clean(d["sqnr_db"])
            return d

        return {"reference": self.reference, "candidate": self.candidate, "num_images": self.num_images,
                "images_sha256": self.images_sha256, "plan": self.plan,
                "numerics": self.numerics, "host_isa": self.host_isa,
                "outputs": [row(o) for o in self.outputs],
                "components": {c: [row(t) for t in rows] for c, rows in self.components.items()},
                "worst_component": self.worst_component()}

    def to_markdown(self) -> str:
        lines = [f"Fidelity of `{self.candidate}` vs `{self.reference}` on {self.num_images} held-out images", ""]
        if self.plan:
            lines += ["Plan: " + ", ".join(f"{c}={p}" for c, p in self.plan.items()), ""]
        lines += [f"Int8 numerics: {self.numerics} (host {self.host_isa or 'unknown'})", ""]
        lines += ["| where | tensor | shape | max abs err | cosine | SQNR (dB) |", "|---|---|---|---:|---:|---:|"]

        def fmt(where: str, t: TensorFidelity) -> str:
            return (f"| {where} | `{t.name}` | {'x'.join(map(str, t.shape))} | {t.max_abs_error:.4g} | "
                    f"{t.cosine:.6f} | {t.sqnr_db:.2f} |")

        for t in self.outputs:
            lines.append(fmt("output", t))
        for comp, rows in self.components.items():
            for t in rows:
                lines.append(fmt(f"{comp} ({self.plan.get(comp, '?') if self.plan else '?'})", t))
        worst = self.worst_component()
        if worst:
            lines += ["", f"Lowest SQNR at the outputs of: **{worst}**"]
        return "\n".join(lines) + "\n"

    def save(self, json_path: str | os.PathLike, markdown_path: str | os.PathLike | None = None) -> None:
        from edgeseg.utils import atomic
        from edgeseg.utils.outputs import mark_text

        atomic.write_json(json_path, {"format": "edgeseg-fidelity", **self.to_dict()})
        if markdown_path:
            atomic.write_text(markdown_path, mark_text(self.to_markdown(), ".md"))


def fidelity_report(reference: str | os.PathLike, candidate: str | os.PathLike, images,
                    plan: dict[str, str] | None = None, threads: int = 0,
                    numerics: str = "simulated") -> FidelityReport:
    """Compare ``candidate`` (quantized) with ``reference`` (FP32) on an ImageSet.

    ``numerics``: the candidate's int8 as a correct int8 engine computes it (simulated Q/DQ,
    the same on every host), or ONNX Runtime's fused kernels of this CPU (``fused``).
    """
    from edgeseg.benchmark.cpu_isa import host_isa
    from edgeseg.export.tags import component_boundary_tensors
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.runtimes.numerics import check_numerics, warn_if_saturating
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    check_numerics(numerics)

    ref_model = load_onnx(reference)
    outputs = [o.name for o in ref_model.graph.output]
    boundaries = component_boundary_tensors(ref_model)
    order = list(plan) if plan else sorted(boundaries)
    # A component's outputs include the graph outputs it produces (the last component
    # has nothing else), so every component gets a row.
    comp_tensors = {c: list(boundaries[c]) for c in order if boundaries.get(c)}
    extra = list(dict.fromkeys(t for ts in comp_tensors.values() for t in ts if t not in outputs))
    del ref_model
    # Between two fp16 components a boundary tensor is never cast back to float32, so it
    # only exists under the fp16 converter's inner name (``<name>_fp16``): read that one.
    produced = {o for node in load_onnx(candidate).graph.node for o in node.output}
    in_candidate = {t: t if t in produced or f"{t}_fp16" not in produced else f"{t}_fp16" for t in extra}

    ref_rt = OnnxRuntimeRuntime(reference, threads=threads, extra_outputs=extra, numerics=numerics)
    cand_rt = OnnxRuntimeRuntime(candidate, threads=threads, extra_outputs=list(in_candidate.values()),
                                 numerics=numerics)
    if plan is None or "int8" in plan.values():
        warn_if_saturating(cand_rt.numerics, "the fidelity report")
    names = outputs + extra
    cand_names = outputs + [in_candidate[t] for t in extra]
    acc = {n: _Accumulator() for n in names}
    from edgeseg.utils.progress import track

    n = 0
    for feed in track(images.feeds(), "fidelity", total=len(images)):
        r = ref_rt.run(feed, output_names=names)
        c = cand_rt.run(feed, output_names=cand_names)
        for name, cand_name in zip(names, cand_names):
            acc[name].add(np.asarray(r[name]), np.asarray(c[cand_name]))
        n += 1
    if n == 0:
        raise EdgesegError("no held-out images for the fidelity report", "pass a folder with JPEG/PNG images")
    return FidelityReport(
        reference=Path(reference).name, candidate=Path(candidate).name, num_images=n,
        images_sha256=images.sha256, plan=plan, numerics=cand_rt.numerics, host_isa=host_isa().summary(),
        outputs=[acc[o].result(o, None) for o in outputs],
        components={c: [acc[t].result(t, c) for t in ts] for c, ts in comp_tensors.items() if ts},
    )
