"""Where the time goes inside a model: ONNX Runtime's per-node profile rolled up by component.

    profile = profile_components("out/bm/blitzmask_mobilenetv2.onnx", feeds=feed, runs=50, warmup=10, core=3)
    profile.table()   # component -> p50 ms per run, share, and the least disturbed split

ONNX Runtime (one intra-op thread, sequential, every thread pinned to one core) records
each kernel's duration; every run's kernels are summed per component. A kernel is matched
to its component through the ``edgeseg.component`` tag of the ONNX node it came from (by
node name, or by the output tensor name ORT names its optimised nodes after), then by the
component map's module scopes (``/backbone/...``). Kernels ORT adds itself (NCHWc layout
reorders) belong to no ONNX node: each goes to the component of the kernel next to it that
it serves (a ``ReorderOutput`` to the producer before it, anything else to the consumer
after it), so the per-component totals add up to the profiled total.

On a shared machine every kernel is stretched by whatever else runs; each kernel's shortest
duration over the runs, summed per component (``least_disturbed``), is the split to quote
there. Profiling costs a little per kernel, so the end-to-end latency to quote comes from the
benchmark harness (``edgeseg bench``); the split is what this gives.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError

_KERNEL_SUFFIX = "_kernel_time"
_LAYOUT_SUFFIXES = ("_nchwc",)


@dataclass
class ComponentTime:
    component: str
    p50_ms: float          # median over runs of the component's summed kernel time
    mean_ms: float
    share: float           # of the mean profiled total (0..1)
    kernels: int           # kernels per run
    best_ms: float = 0.0   # its kernels' shortest durations summed (least_disturbed)
    best_share: float = 0.0  # of the summed shortest durations (0..1)


@dataclass
class ComponentProfile:
    model: str
    runs: int
    warmup: int
    core: int | None
    total_p50_ms: float            # median over runs of all kernels summed
    components: list[ComponentTime]
    per_run_ms: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = ["| component | p50 ms | mean ms | share (mean) | least disturbed ms | share (least disturbed) | kernels |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for c in self.components:
            lines.append(f"| {c.component} | {c.p50_ms:.2f} | {c.mean_ms:.2f} | {100 * c.share:.1f}% | "
                         f"{c.best_ms:.2f} | {100 * c.best_share:.1f}% | {c.kernels} |")
        best_total = sum(c.best_ms for c in self.components)
        lines.append(f"| **total (kernels)** | {self.total_p50_ms:.2f} | | 100% | {best_total:.2f} | 100% | |")
        return "\n".join(lines)


def node_components(onnx_model, component_map=None) -> tuple[dict[str, str], Any]:
    """``{node name or output tensor name: component}`` from the ONNX tags, and a scope
    resolver from the component map (or None)."""
    from edgeseg.export.tags import get_component

    names: dict[str, str] = {}
    for node in onnx_model.graph.node:
        comp = get_component(node)
        if not comp:
            continue
        if node.name:
            names[node.name] = comp
        for out in node.output:
            names.setdefault(out, comp)
    return names, component_map


def _strip(name: str) -> str:
    if name.endswith(_KERNEL_SUFFIX):
        name = name[: -len(_KERNEL_SUFFIX)]
    for suffix in _LAYOUT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def attribute_kernels(kernel_names: list[str], names: dict[str, str], component_map=None) -> list[str | None]:
    """The component of each kernel of one run, in execution order (None: unattributable)."""
    comps: list[str | None] = []
    for raw in kernel_names:
        base = _strip(raw)
        comp = names.get(base) or names.get(raw[: -len(_KERNEL_SUFFIX)] if raw.endswith(_KERNEL_SUFFIX) else raw)
        if comp is None and component_map is not None and base.startswith("/"):
            comp = component_map.component_for_scope(base)
        comps.append(comp)
    # Runtime-inserted kernels: a ReorderOutput serves the kernel before it, others the one after.
    resolved = list(comps)
    for i, (raw, comp) in enumerate(zip(kernel_names, comps)):
        if comp is not None:
            continue
        before = next((comps[j] for j in range(i - 1, -1, -1) if comps[j] is not None), None)
        after = next((comps[j] for j in range(i + 1, len(comps)) if comps[j] is not None), None)
        resolved[i] = (before or after) if raw.startswith("ReorderOutput") else (after or before)
    return resolved


def _kernels_per_run(events: list[dict[str, Any]], skip_runs: int = 0) -> list[list[dict[str, Any]]]:
    """The kernel events of each profiled run (after ``skip_runs``), in execution order."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(_KERNEL_SUFFIX)),
                     key=lambda e: e["ts"])
    if not runs or not kernels:
        raise EdgesegError("the ONNX Runtime profile holds no model runs or no kernel events",
                           "profile with SessionOptions.enable_profiling and run the model at least once")
    out: list[list[dict[str, Any]]] = []
    k = 0
    for run in runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        mine = []
        while k < len(kernels) and kernels[k]["ts"] < start:
            k += 1
        while k < len(kernels) and kernels[k]["ts"] <= end:
            mine.append(kernels[k])
            k += 1
        out.append(mine)
    return out[skip_runs:]


def roll_up(events: list[dict[str, Any]], names: dict[str, str], component_map=None,
            skip_runs: int = 0) -> dict[str, list[float]]:
    """Per component, the summed kernel milliseconds of every profiled run (after ``skip_runs``)."""
    per_run: list[dict[str, float]] = []
    for mine in _kernels_per_run(events):
        comps = attribute_kernels([e["name"] for e in mine], names, component_map)
        totals: dict[str, float] = {}
        for e, comp in zip(mine, comps):
            key = comp or "(unattributed)"
            totals[key] = totals.get(key, 0.0) + e["dur"] / 1000.0
        per_run.append(totals)
    # Every component seen in any run (warm-up included) gets a value for every kept run
    # (0 where it ran no kernel).
    keys = list(dict.fromkeys(key for totals in per_run for key in totals))
    return {key: [totals.get(key, 0.0) for totals in per_run[skip_runs:]] for key in keys}


def least_disturbed(events: list[dict[str, Any]], names: dict[str, str], component_map=None,
                    skip_runs: int = 0) -> dict[str, float]:
    """Per component, the sum over its kernels of each kernel's *shortest* duration across the
    runs (after ``skip_runs``), in ms. Other work on the core only ever lengthens a kernel
    (preemption, cache eviction), so on a shared machine this is the closest the profile gets
    to the undisturbed cost, as best-of-N is for a whole run. A kernel is the same one across
    runs by its name and its occurrence number within the run."""
    best: dict[tuple[str, int], float] = {}
    comp_of: dict[tuple[str, int], str] = {}
    for mine in _kernels_per_run(events, skip_runs):
        comps = attribute_kernels([e["name"] for e in mine], names, component_map)
        seen: dict[str, int] = {}
        for e, comp in zip(mine, comps):
            key = (e["name"], seen.get(e["name"], 0))
            seen[e["name"]] = key[1] + 1
            best[key] = min(best.get(key, float("inf")), e["dur"] / 1000.0)
            comp_of.setdefault(key, comp or "(unattributed)")
    out: dict[str, float] = {}
    for key, ms in best.items():
        out[comp_of[key]] = out.get(comp_of[key], 0.0) + ms
    return out


def profile_components(onnx_path: str | os.PathLike, *, feeds: dict[str, np.ndarray], runs: int = 50,
                       warmup: int = 10, core: int | None = None) -> ComponentProfile:
    """Profile ``runs`` runs of one input (``feeds``: name -> array) on one pinned core and roll
    the kernels up. Keyword arguments only, so no call site depends on their order."""
    import onnx
    import onnxruntime as ort

    from edgeseg.benchmark.targets.local import ProcessPinning, default_core
    from edgeseg.export.manifest import Manifest, find_manifest

    path = Path(onnx_path)
    if runs < 1 or warmup < 0:
        raise EdgesegError(f"runs must be >= 1 and warmup >= 0, got {runs} and {warmup}", "e.g. --runs 50 --warmup 10")
    model = onnx.load(str(path), load_external_data=False)
    manifest = Manifest.load(path) if find_manifest(path) is not None else None
    cmap = None
    if manifest is not None and manifest.components:
        from edgeseg.models.base import ComponentMap

        modules = {c: (v.get("module") if isinstance(v, dict) else None) for c, v in manifest.components.items()}
        if all(isinstance(m, str) for m in modules.values()):
            cmap = ComponentMap(modules)
    names, cmap = node_components(model, cmap)
    if not names:
        raise EdgesegError(f"{path.name} has no component tags", "export it with `edgeseg export` (every node is tagged)")
    core = default_core() if core is None else core
    with tempfile.TemporaryDirectory() as tmp, ProcessPinning(core):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    per_run = roll_up(events, names, cmap, skip_runs=warmup)
    order = [c for c in _component_order(model) if c in per_run] + sorted(c for c in per_run
                                                                          if c not in _component_order(model))
    totals = np.sum([per_run[c] for c in order], axis=0)
    mean_total = float(np.mean(totals))
    kernels_per_run = _kernel_counts(events, names, cmap, warmup)
    best = least_disturbed(events, names, cmap, skip_runs=warmup)
    best_total = sum(best.values())
    comps = [ComponentTime(c, float(np.median(per_run[c])), float(np.mean(per_run[c])),
                           float(np.mean(per_run[c])) / mean_total if mean_total else 0.0, kernels_per_run.get(c, 0),
                           best.get(c, 0.0), best.get(c, 0.0) / best_total if best_total else 0.0)
             for c in order]
    return ComponentProfile(path.name, runs, warmup, core, float(np.median(totals)), comps,
                            {c: [round(v, 4) for v in per_run[c]] for c in order})


def _component_order(model) -> list[str]:
    from edgeseg.export.tags import get_component

    seen: list[str] = []
    for node in model.graph.node:
        c = get_component(node)
        if c and c not in seen:
            seen.append(c)
    return seen


def _kernel_counts(events, names, cmap, warmup: int) -> dict[str, int]:
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    if len(runs) <= warmup:
        return {}
    run = runs[warmup]
    mine = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith(_KERNEL_SUFFIX)
            and run["ts"] <= e["ts"] <= run["ts"] + run["dur"]]
    mine.sort(key=lambda e: e["ts"])
    counts: dict[str, int] = {}
    for comp in attribute_kernels([e["name"] for e in mine], names, cmap):
        key = comp or "(unattributed)"
        counts[key] = counts.get(key, 0) + 1
    return counts
