"""PyTorch -> ONNX: static-shape export, simplification, component tags, parity check.

The steps, in order, each checked:

1. ``torch.onnx.export(..., dynamo=False, opset_version=17)``. The TorchScript exporter
   names nodes after their module scope (``/backbone/stages.0/conv/Conv``), which is how we
   learn each node's component; the dynamo exporter keeps scopes only in metadata that the
   simplifiers drop.
2. Simplification (onnxslim by default: see ``SIMPLIFIERS`` for why) folds constants and
   fuses what it can; static shapes let ``Shape``/``Gather`` chains fold away, which mobile
   runtimes (TNN on ARM) need.
3. Tagging: every node gets ``metadata_props["edgeseg.component"]`` from its scope, and nodes
   that lost their scope in step 2 get the component of their producers/consumers
   (:mod:`edgeseg.export.tags`). Export fails if any node is left untagged.
4. Parity: ONNX Runtime vs PyTorch on the same seeded input, per output max abs error and
   cosine similarity. A broken export is an error, not a warning.

Artifacts are written into a temporary folder and renamed into place at the end, so a
failure at any step leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.export import tags
from edgeseg.export.manifest import MANIFEST_NAME, Manifest, tool_versions
from edgeseg.utils import atomic, progress
from edgeseg.utils.hashing import sha256_file

OPSET = 17

# Parity limits. fp32 export of the same graph normally agrees to ~1e-5; the limits are
# loose enough for accumulated reordering error in deep nets, tight enough to catch a
# wrong op mapping (which gives cosine far below 0.999).
PARITY_MIN_COSINE = 0.9999
PARITY_MAX_REL_ERROR = 1e-2


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float  # max abs error / max |reference|
    cosine: float

    @property
    def ok(self) -> bool:
        return self.cosine >= PARITY_MIN_COSINE and self.max_rel_error <= PARITY_MAX_REL_ERROR

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": self.shape, "max_abs_error": self.max_abs_error,
                "max_rel_error": self.max_rel_error, "cosine": self.cosine, "ok": self.ok}


@dataclass
class GraphExport:
    """One exported graph (the frame graph, or the features graph for video)."""

    graph: str
    path: Path
    parity: list[OutputParity]
    node_counts: dict[str, int]
    simplifier: str
    nodes_before_simplify: int
    nodes_after_simplify: int
    scoped_before: int  # nodes whose names carry a component scope, before/after simplify
    scoped_after: int


@dataclass
class ExportResult:
    folder: Path
    manifest: Manifest
    graphs: dict[str, GraphExport] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        """The primary (frame) graph."""
        return self.graphs["frame"].path

    @property
    def parity(self) -> dict[str, list[OutputParity]]:
        return {g: e.parity for g, e in self.graphs.items()}


# --------------------------------------------------------------------------- simplify

def _simplify_onnxslim(model):
    import onnxslim

    return onnxslim.slim(model)


def _simplify_onnxsim(model):
    try:
        import onnxsim
    except ImportError as e:
        raise EdgesegError("onnxsim is not installed", "pip install onnxsim, or use --simplifier onnxslim") from e

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise EdgesegError("onnxsim could not verify the simplified model",
                           "export with --simplifier onnxslim or --simplifier none")
    return simplified


# Both are supported; onnxslim is the default because on MobileInst it keeps the module
# scope in the name of every surviving node (onnxsim too), runs faster, installs as a
# pure-Python wheel, and its fusions leave fewer nodes (see README, "Simplifier").
SIMPLIFIERS = {
    "onnxslim": _simplify_onnxslim,
    "onnxsim": _simplify_onnxsim,
    "none": lambda m: m,
}


def simplify(model, simplifier: str = "onnxslim"):
    if simplifier not in SIMPLIFIERS:
        raise EdgesegError(f"unknown simplifier {simplifier!r}", f"use one of {', '.join(SIMPLIFIERS)}")
    with contextlib.redirect_stdout(io.StringIO()):
        return SIMPLIFIERS[simplifier](model)


# --------------------------------------------------------------------------- export

def _count_scoped(model, component_map) -> int:
    return sum(1 for n in model.graph.node if component_map.component_for_scope(n.name) is not None)


def _torch_export(module, example, path: Path, input_name: str, output_names: list[str]) -> None:
    import torch

    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation on every call; we use it on purpose.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, (example,), os.fspath(path), opset_version=OPSET, dynamo=False,
                              input_names=[input_name], output_names=list(output_names),
                              do_constant_folding=True, external_data=False)


def check_parity(onnx_path: Path, module, example_np: np.ndarray, input_name: str,
                 output_names: list[str]) -> list[OutputParity]:
    """ONNX Runtime vs PyTorch on one input: per-output max abs/rel error and cosine."""
    import torch

    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    with torch.no_grad():
        ref = module(torch.from_numpy(example_np))
    if isinstance(ref, torch.Tensor):
        ref = (ref,)
    rt = OnnxRuntimeRuntime(onnx_path, threads=1)
    got = rt.run({input_name: example_np})
    result = []
    for name, r in zip(output_names, ref):
        a = r.detach().float().numpy().astype(np.float64)
        b = got[name].astype(np.float64)
        if a.shape != b.shape:
            raise EdgesegError(f"exported output {name!r} has shape {b.shape}, PyTorch gives {a.shape}",
                               "the model's forward must return static shapes; report this as a bug")
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        cos = float(np.dot(a.ravel(), b.ravel()) / denom) if denom > 0 else (1.0 if err == 0 else 0.0)
        result.append(OutputParity(name, list(a.shape), err, err / scale if scale > 0 else err, cos))
    return result


# The steps of one graph's export, in order (what the progress bar shows).
EXPORT_STEPS = ("tracing", "simplifying", "tagging", "checking", "parity")


def export_graph(module, input_spec, component_map, output_names: list[str], path: Path,
                 simplifier: str = "onnxslim", seed: int = 0, graph: str = "frame",
                 step: Callable[[str], None] | None = None) -> GraphExport:
    """Export one nn.Module to a tagged, simplified, parity-checked ONNX file at ``path``.

    ``step(name)`` is called as each of :data:`EXPORT_STEPS` starts (progress display).
    """
    import onnx
    import torch

    step = step or (lambda name: None)

    module.eval()
    rng = np.random.default_rng(seed)
    # A normalised-image-like input (zero mean, unit variance) exercises every activation
    # range the way real images do; all-zero inputs hide sign errors.
    example_np = rng.standard_normal(input_spec.shape).astype(np.float32)
    example = torch.from_numpy(example_np)

    raw_path = path.with_name(path.stem + ".raw.onnx")
    step("tracing")
    try:
        _torch_export(module, example, raw_path, input_spec.name, output_names)
    except Exception as e:
        raise EdgesegError(f"torch.onnx.export failed for the {graph} graph: {type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                           "check that the model runs at this input size and uses ONNX-exportable ops") from e
    raw = onnx.load(os.fspath(raw_path))
    raw_path.unlink()
    nodes_before, scoped_before = len(raw.graph.node), _count_scoped(raw, component_map)

    step("simplifying")
    slim = simplify(raw, simplifier)
    step("tagging")
    counts = tags.tag_graph(slim, component_map)
    leftover = tags.untagged_nodes(slim)
    if leftover:  # tag_graph raises first; this guards against future edits
        raise EdgesegError(f"{len(leftover)} nodes have no component", "report this as a bug")
    slim.producer_name = "edgeseg"
    step("checking")
    onnx.save(slim, os.fspath(path))
    try:
        onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as e:
        raise EdgesegError(f"the exported {graph} graph is not valid ONNX: {e}",
                           f"retry with --simplifier none (current: {simplifier})") from e

    step("parity")
    parity = check_parity(path, module, example_np, input_spec.name, output_names)
    bad = [p for p in parity if not p.ok]
    if bad:
        detail = ", ".join(f"{p.name}: cos {p.cosine:.6f}, rel err {p.max_rel_error:.2e}" for p in bad)
        raise EdgesegError(f"ONNX output differs from PyTorch ({detail})",
                           f"retry with --simplifier none (current: {simplifier}); if it persists, an op "
                           "is exported wrongly: report it")
    return GraphExport(graph, path, parity, counts, simplifier, nodes_before, len(slim.graph.node),
                       scoped_before, _count_scoped(slim, component_map))


def _graphs_of(model, which: tuple[str, ...]) -> dict[str, Any]:
    """Graph name -> module: ``frame`` is the model itself, the others come from the
    contract's optional ``graph_modules()`` (e.g. MobileInst's ``features`` graph)."""
    extra = model.graph_modules() if hasattr(model, "graph_modules") else {}
    out = {}
    for g in which:
        if g == "frame":
            out[g] = model
        elif g in extra:
            out[g] = extra[g]
        else:
            have = ", ".join(["frame", *extra])
            raise EdgesegError(f"model {getattr(model, 'model_name', '?')} has no {g} graph",
                               f"export with --graphs chosen from: {have}")
    return out


def default_graphs(model) -> tuple[str, ...]:
    """Every graph the model has (the frame graph first): video strategies need them all."""
    extra = model.graph_modules() if hasattr(model, "graph_modules") else {}
    return ("frame", *extra)


def export_into(model, folder: str | os.PathLike, *, simplifier: str = "onnxslim",
                graphs: tuple[str, ...] | None = None, weights: dict[str, Any] | None = None, seed: int = 0,
                on_graph: Callable[[str, Path], None] | None = None) -> ExportResult:
    """Export a zoo model into ``folder`` (an existing, usually temporary, folder):
    ``<name>.onnx`` (+ ``<name>.features.onnx``) and ``manifest.json``.

    ``on_graph(graph, path)`` runs after each graph is written and checked, before the next
    one is exported: target preflights use it to refuse a plan within seconds.
    """
    import onnx

    name = getattr(model, "model_name", type(model).__name__.lower())
    spec = model.input_spec
    graphs = tuple(graphs or default_graphs(model))
    modules = _graphs_of(model, graphs)
    folder = Path(folder)
    results: dict[str, GraphExport] = {}
    with progress.steps(f"exporting {name}", total=len(modules) * len(EXPORT_STEPS)) as steps:
        for g, module in modules.items():
            fname = f"{name}.onnx" if g == "frame" else f"{name}.{g}.onnx"
            results[g] = export_graph(module, spec, module.component_map, list(module.output_names),
                                      folder / fname, simplifier=simplifier, seed=seed, graph=g,
                                      step=lambda what, g=g: steps.step(f"{g} graph: {what}"))
            if on_graph is not None:
                on_graph(g, results[g].path)

    manifest = Manifest.from_model(model, weights=weights)
    manifest.outputs = [{"name": p.name, "shape": p.shape} for p in results[graphs[0]].parity]
    for g, res in results.items():
        proto = onnx.load(os.fspath(res.path), load_external_data=False)
        manifest.add_artifact(
            res.path.name, kind="onnx", graph=g, primary=(g == "frame"), opset=OPSET,
            precision={"name": "fp32", "spec": ",".join(f"{c}=fp32" for c in model.component_map.names()),
                       "precisions": {c: "fp32" for c in model.component_map.names()}},
            outputs=[{"name": p.name, "shape": p.shape} for p in res.parity],
            sha256=sha256_file(res.path),
            simplifier={"name": res.simplifier, "nodes_before": res.nodes_before_simplify,
                        "nodes_after": res.nodes_after_simplify,
                        "scoped_before": res.scoped_before, "scoped_after": res.scoped_after},
            components=tags.nodes_by_component(proto),
            parity=[p.to_dict() for p in res.parity],
        )
    manifest.record("export", graphs=list(graphs), simplifier=simplifier, opset=OPSET,
                    versions=tool_versions("torch", "onnx", "onnxruntime", simplifier))
    manifest.save(folder)
    return ExportResult(folder, manifest, results)


def expected_files(model_name: str, graphs: tuple[str, ...] = ("frame", "features")) -> list[str]:
    """The files an export of ``model_name`` writes (checked for clashes before the work)."""
    return [MANIFEST_NAME] + [f"{model_name}.onnx" if g == "frame" else f"{model_name}.{g}.onnx" for g in graphs]


def export_onnx(model, out_dir: str | os.PathLike, *, simplifier: str = "onnxslim",
                graphs: tuple[str, ...] | None = None, weights: dict[str, Any] | None = None,
                seed: int = 0, overwrite: bool = False) -> ExportResult:
    """Export a zoo model into an artifact folder (see :func:`export_into`). The new files
    appear together or not at all; an earlier export there is replaced, files edgeseg did
    not write are kept, and a non-empty foreign folder needs ``overwrite``
    (:mod:`edgeseg.utils.outputs`)."""
    from edgeseg.utils import outputs

    name = getattr(model, "model_name", type(model).__name__.lower())
    graphs = tuple(graphs or default_graphs(model))
    checked = outputs.check_output_folder(out_dir, outputs.EXPORT, overwrite=overwrite,
                                          expected=expected_files(name, graphs))
    final = Path(out_dir)
    with atomic.atomic_directory(final, owned=checked.owned_now) as tmp:
        result = export_into(model, tmp, simplifier=simplifier, graphs=graphs, weights=weights, seed=seed)
    return rebase(result, final)


def rebase(result: ExportResult, final: Path) -> ExportResult:
    """The same result with its paths inside ``final`` (after the temporary folder moved there)."""
    for res in result.graphs.values():
        res.path = Path(final) / res.path.name
    result.folder = Path(final)
    return result
