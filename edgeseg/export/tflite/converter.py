"""ONNX -> TFLite for a per-component precision plan.

    export_tflite("out/mobileinst/mobileinst_topformer.onnx", plan="backbone=int8,*=fp16",
                  table="out/mobileinst/calibration.json", images="data/synth/val")

What happens, in order (everything checked before TensorFlow is started):

1. The ONNX file, its components (the ``edgeseg.component`` tag of every node), the
   plan, the calibration table (it must have been computed on this very file) and the
   representative images are validated.
2. A work copy of the ONNX file gets short, sanitizer-proof node and tensor names
   (onnx2tf rewrites ``/`` and ``:`` in names, and rewrites its input file in place).
3. A child process (:mod:`edgeseg.export.tflite.worker`) runs onnx2tf and the TFLite
   converter; all of its output goes to ``<artifact>.log`` beside the artifact.
4. The result is opened with LiteRT (XNNPACK, one thread) and compared with ONNX Runtime
   on a real image: an FP32 artifact must match (cosine >= 0.9999), quantized ones have
   their error recorded.
5. ``<stem>.<plan>.tflite``, its log and ``<...>.tflite.json`` (I/O table, op ->
   component map, the ranges written) are renamed into the artifact folder and the
   manifest gets an entry. On any failure no artifact appears (the log stays, for
   diagnosis).

INT8 activation ranges come from our :class:`~edgeseg.quantize.cache.CalibrationTable`
(``calib_source="edgeseg"``) so that TFLite, ONNX Runtime and TensorRT run on identical
ranges; ``calib_source="tflite"`` keeps TFLite's own min/max calibration instead.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.export import tags
from edgeseg.export.manifest import Manifest, find_manifest, tool_versions
from edgeseg.quantize.plan import PrecisionPlan
from edgeseg.utils import atomic
from edgeseg.utils.hashing import sha256_file

CALIB_SOURCES = ("edgeseg", "tflite")
DEFAULT_NUM_IMAGES = 32  # representative images for TFLite's calibration pass
PARITY_MIN_COSINE = 0.9999  # FP32 TFLite vs ONNX Runtime (same gate as the ONNX export)
DEFAULT_TIMEOUT_S = 3600
# What the progress display shows while a conversion runs (the child reports the first four).
CONVERSION_STAGES = ("onnx2tf", "SavedModel", "converting", "mapping ops to components",
                     "parity check vs ONNX Runtime")

# Installed with `pip install 'edgeseg[tflite]'`, except onnx2tf and tf-keras which go in
# with --no-deps (their exact pins would downgrade numpy/onnx/protobuf and pull the
# 570 MB `tensorflow` wheel next to `tensorflow-cpu`); scripts/setup.sh does both.
TOOLCHAIN = {"tensorflow": "tensorflow-cpu", "tf_keras": "tf-keras", "onnx2tf": "onnx2tf",
             "ai_edge_litert": "ai-edge-litert", "onnx_graphsurgeon": "onnx-graphsurgeon",
             "sng4onnx": "sng4onnx", "psutil": "psutil"}
INSTALL_FIX = ("run `scripts/setup.sh .venv test,tflite` (or: pip install 'edgeseg[tflite]' && "
               "pip install --no-deps onnx2tf==1.29.24 tf-keras==2.21.0)")


def check_toolchain() -> None:
    missing = [pkg for mod, pkg in TOOLCHAIN.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise EdgesegError(f"the TFLite toolchain is not installed (missing: {', '.join(missing)})", INSTALL_FIX)


@dataclass
class TFLiteExport:
    path: Path
    plan: PrecisionPlan
    calib_source: str | None
    parity: list[dict[str, Any]]
    entry: dict[str, Any]  # the manifest entry
    log: Path
    report: Path
    unmapped_ops: list[str] = field(default_factory=list)


# ============================================================================ inputs
def _load_onnx(path: Path):
    import onnx

    if not path.is_file():
        raise EdgesegError(f"ONNX model {path} not found", "check the path, or export one with `edgeseg export`")
    try:
        model = onnx.load(os.fspath(path))
    except Exception as e:  # protobuf DecodeError and friends
        raise EdgesegError(f"{path.name} is not a readable ONNX model ({type(e).__name__})",
                           "the file is corrupt or not ONNX; re-export it with `edgeseg export`") from e
    if not model.graph.node:
        raise EdgesegError(f"{path.name} has an empty graph", "re-export it with `edgeseg export`")
    quant = sorted({n.op_type for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")})
    if quant:
        raise EdgesegError(f"{path.name} is already quantized ({', '.join(quant)} nodes)",
                           "give the FP32 ONNX from `edgeseg export`; TFLite quantizes it itself from the plan")
    return model


def _components(model, manifest: Manifest | None) -> list[str]:
    """Component names in pipeline order (the manifest's), plus any tag only the graph has.

    Untagged nodes (an ONNX file not made by `edgeseg export`) count as component "model".
    """
    order = manifest.component_names() if manifest and manifest.components else []
    for node in model.graph.node:
        c = tags.get_component(node) or "model"
        if c not in order:
            order.append(c)
    return order


def _input_spec(model, manifest: Manifest | None):
    from edgeseg.data.preprocess import InputSpec
    from edgeseg.export.manifest import input_spec_of

    if manifest is not None and manifest.input:
        return input_spec_of(manifest)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise EdgesegError(f"the model has {len(inputs)} inputs; edgeseg converts single-image models",
                           "export the model with `edgeseg export`")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims) <= 0:
        raise EdgesegError(f"input {inputs[0].name!r} has shape {dims}; TFLite needs a static 4-D image shape",
                           "export with a fixed --input-size")
    return InputSpec(height=dims[2], width=dims[3], channels=dims[1], name=inputs[0].name)


def _as_plan(plan, components: list[str], manifest: Manifest | None) -> PrecisionPlan:
    if isinstance(plan, PrecisionPlan):
        missing = [c for c in components if c not in plan.precisions]
        extra = [c for c in plan.precisions if c not in components]
        if missing or extra:
            raise EdgesegError(f"precision plan does not match the model's components "
                               f"(missing {missing}, unknown {extra})", f"components: {', '.join(components)}")
        return plan
    presets = manifest.presets if manifest else {}
    return PrecisionPlan.parse(plan or "fp32", components, presets)


def _as_table(table):
    from edgeseg.quantize.cache import CalibrationTable

    if table is None or isinstance(table, CalibrationTable):
        return table
    return CalibrationTable.load(table)


def _samples(images, spec, num: int, need_real: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocessed images in the ONNX input layout (the representative set), or seeded noise.

    Noise is only allowed when nothing is calibrated: onnx2tf needs sample inputs for its
    own conversion checks, and the parity check then compares ONNX and TFLite on noise.
    """
    if images is None:
        if need_real:
            raise EdgesegError("INT8 needs representative images and none were given",
                               "pass a folder of JPEG/PNG images (--calib DIR), e.g. from `edgeseg data synth`")
        return (np.random.default_rng(0).standard_normal([2] + spec.shape[1:]).astype(np.float32),
                {"source": "random"})
    from edgeseg.data.images import ImageSet, select_images

    chosen = images if isinstance(images, ImageSet) else select_images(images, spec, num=num, seed=0)
    arrays = [x[0] for x, _ in zip(chosen.arrays(), range(num))]
    return np.stack(arrays).astype(np.float32), {"source": "images", "folder": str(chosen.root),
                                                 "count": len(arrays), "sha256": chosen.sha256}


# ============================================================================ work copy
def _work_copy(model, components: list[str]) -> tuple[Any, dict[str, Any]]:
    """Copy with names ``n<i>``/``t<i>`` that survive onnx2tf's sanitizing, plus the maps back."""
    import copy

    import onnx
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    numel: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            numel[vi.name] = int(math.prod(dims))

    work = copy.deepcopy(model)
    g = work.graph
    keep = {i.name for i in g.input} | {o.name for o in g.output}
    rename: dict[str, str] = {}

    def new_name(old: str) -> str:
        if not old or old in keep:
            return old
        if old not in rename:
            rename[old] = f"t{len(rename)}"
        return rename[old]

    node_names: dict[str, str] = {}
    node_components: dict[str, str] = {}
    tensor_nodes: dict[str, str] = {}
    for i, node in enumerate(g.node):
        work_name = f"n{i}"
        original = model.graph.node[i].name
        node_names[work_name] = original
        node_components[original] = tags.get_component(node) or components[0]
        for out in model.graph.node[i].output:
            tensor_nodes[out] = original
        node.name = work_name
        for j, x in enumerate(node.input):
            node.input[j] = new_name(x)
        for j, x in enumerate(node.output):
            node.output[j] = new_name(x)
    for init in g.initializer:
        init.name = new_name(init.name)
    tensor_names = {v: k for k, v in rename.items()}
    tensor_names.update({n: n for n in keep})
    # onnx2tf decides where to transpose (NCHW -> NHWC) from the intermediate shapes, so
    # every tensor must carry one: a graph without value_info converts into wrong layouts.
    del g.value_info[:]
    g.value_info.extend(vi for vi in inferred.graph.value_info if vi.name in rename)
    for vi in g.value_info:
        vi.name = rename[vi.name]
    onnx.checker.check_model(work)
    return work, {"node_names": node_names, "node_components": node_components, "tensor_names": tensor_names,
                  "tensor_numel": numel, "tensor_nodes": tensor_nodes}


def _shapes(values) -> list[list[int]]:
    return [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


# ============================================================================ child process
_FIXES = {
    "onnx2tf": "run `edgeseg check MODEL.onnx --target tflite` to see which ops TFLite cannot take, "
               "and the log for onnx2tf's own message",
    "tflite": "run `edgeseg check MODEL.onnx --target tflite` for the ONNX ops behind them and their "
              "replacements (e.g. GELU with approximate='tanh')",
    "quantize": "try --calib-source tflite, or keep the failing component in fp16/fp32 in the plan",
    "calibrate": "check the representative images (--calib DIR)",
}


def _wait_showing_stages(proc, progress_file: Path, timeout: float, on_stage) -> None:
    """Wait for the converter, passing each stage it reports (``progress_file``) to ``on_stage``."""
    import time

    deadline = time.monotonic() + timeout
    shown = None
    while True:
        try:
            proc.wait(timeout=0.5)
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise
        try:
            current = progress_file.read_text().strip()
        except OSError:
            continue
        if current and current != shown:
            shown = current
            on_stage(current)


def _run_worker(job: dict[str, Any], work: Path, log: Path, timeout: float,
                on_stage=lambda name: None) -> dict[str, Any]:
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU conversion; never grab a GPU that a benchmark may use
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "ab") as fh:
        fh.write(f"$ {sys.executable} -m edgeseg.export.tflite.worker {job_path}\n".encode())
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "edgeseg.export.tflite.worker", os.fspath(job_path)],
                                cwd=work, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_showing_stages(proc, Path(job["progress"]), timeout, on_stage)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.wait()
            raise EdgesegError(f"the TFLite conversion did not finish within {timeout:.0f} s",
                               f"see {log}; raise the timeout for very large models") from e
        except BaseException:
            proc.kill()  # Ctrl-C or an error here: never leave the converter running
            proc.wait()
            raise
    _tidy_log(log, job)
    report_path = Path(job["report"])
    if not report_path.is_file():
        raise EdgesegError(f"the TFLite conversion process died (exit code {proc.returncode}) without a report",
                           f"see the last lines of {log}")
    report = json.loads(report_path.read_text())
    if not report.get("ok"):
        stage = report.get("stage", "unexpected")
        msg = report.get("message", "unknown error")
        if report.get("op"):
            msg += f" (node {report.get('node') or '?'})"
        raise EdgesegError(f"TFLite export failed ({stage}): {msg}",
                           f"{_FIXES.get(stage, 'this is a bug; please report it with the log')}; log: {log}")
    return report


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tidy_log(log: Path, job: dict[str, Any]) -> None:
    """Strip onnx2tf's terminal colours and append the work-name -> ONNX-name table.

    The log names nodes and tensors as the work copy does (``n12``, ``t40``); the table
    lets a reader find them in the original graph.
    """
    text = _ANSI.sub("", log.read_text(errors="replace"))
    lines = ["", "# names in this log -> ONNX names"]
    lines += [f"{k}\t{v}" for k, v in job["node_names"].items()]
    lines += [f"{k}\t{v}" for k, v in job["tensor_names"].items() if k != v]
    log.write_text(text + "\n".join(lines) + "\n")


# ============================================================================ checks
def _compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    out = []
    for name, a in reference.items():
        b = got[name]
        if a.shape != b.shape:
            raise EdgesegError(f"TFLite output {name!r} has shape {b.shape}, ONNX gives {a.shape}",
                               "this is a layout bug in the conversion; please report it")
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        cos = float(a64 @ b64 / denom) if denom > 0 else (1.0 if err == 0 else 0.0)
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        out.append({"name": name, "shape": list(a.shape), "max_abs_error": err,
                    "max_rel_error": err / scale if scale > 0 else err, "cosine": cos})
    return out


def first_divergence(onnx_path: Path, model, built: Path, report: dict[str, Any],
                     feeds: dict[str, np.ndarray], min_cosine: float = 0.999) -> str | None:
    """The first TFLite tensor (in execution order) that disagrees with its ONNX tensor.

    Runs TFLite without XNNPACK (which fuses ops and hides intermediates) keeping every
    tensor, and ONNX Runtime with the mapped tensors as extra outputs. Layouts differ
    inside the graph (onnx2tf works in NHWC), so each pair is compared as is or with the
    channel-last transpose, whichever matches the shape.
    """
    from ai_edge_litert import interpreter as litert

    from edgeseg.export.tflite import flatbuffer as fb
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    tensor_to_onnx = {int(k): v for k, v in report.get("tensor_to_onnx", {}).items()}
    if not tensor_to_onnx:
        return None
    view = fb.describe(built.read_bytes())
    it = litert.Interpreter(model_path=os.fspath(built), experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    for entry in report["io"]:
        if entry["kind"] == "input":
            x = feeds[entry["name"]]
            it.set_tensor(view.signature_inputs[entry["key"]],
                          np.ascontiguousarray(x.transpose(entry["perm"]) if entry["perm"] else x))
    it.invoke()
    wanted = sorted(set(tensor_to_onnx.values()))
    ref = OnnxRuntimeRuntime(onnx_path, threads=1, extra_outputs=wanted).run(feeds, output_names=wanted)
    producer = {o: n for n in model.graph.node for o in n.output}
    for op in view.ops:
        for ti in op.outputs:
            name = tensor_to_onnx.get(ti)
            if name is None:
                continue
            a, b = ref[name], it.get_tensor(ti)
            if a.ndim >= 3 and b.shape != a.shape:
                a = a.transpose([0] + list(range(2, a.ndim)) + [1])
            if a.shape != b.shape:
                continue
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
            cos = float(a64 @ b64 / denom) if denom > 0 else 1.0
            if cos < min_cosine:
                node = producer.get(name)
                comp = tags.get_component(node) if node is not None else None
                return (f"{name!r} from ONNX node {node.name if node is not None else '?'} "
                        f"({node.op_type if node is not None else '?'}{', ' + comp if comp else ''}; "
                        f"TFLite {op.op_type}, cosine {cos:.4f})")
    return None


def _real_components(op_components: list[dict[str, Any]], units) -> list[dict[str, Any]]:
    """The worker's op -> (virtual) component map as real components plus the plan's units."""
    out = []
    for oc in op_components:
        tags_ = oc["components"]
        entry = {**oc, "components": list(dict.fromkeys(units.parent(c) for c in tags_))}
        named = [units.unit(c) for c in tags_ if units.unit(c)]
        if named:
            entry["units"] = list(dict.fromkeys(named))
        out.append(entry)
    return out


def _component_precision(view, op_components: list[dict[str, Any]], key: str = "components"
                         ) -> dict[str, dict[str, int]]:
    """Per component (or per unit, ``key="units"``): how many ops compute in int8 and how
    many in float (read from the file)."""
    out: dict[str, dict[str, int]] = {}
    for oc in op_components:
        if key not in oc:
            continue
        op = view.ops[oc["index"]]
        if op.op_type in ("QUANTIZE", "DEQUANTIZE"):
            kind = "convert_ops"
        else:
            dt = [view.tensors[t].dtype for t in op.outputs]
            kind = "int8_ops" if any(d in ("int8", "uint8", "int16") for d in dt) else "float_ops"
        for c in oc[key] or ["(unmapped)"]:
            d = out.setdefault(c, {"int8_ops": 0, "float_ops": 0, "convert_ops": 0})
            d[kind] += 1
    return out


# ============================================================================ public API
def export_tflite(onnx_path: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                  plan: str | PrecisionPlan | None = "fp32", table=None, images=None,
                  calib_source: str = "edgeseg", num_images: int = DEFAULT_NUM_IMAGES,
                  int8_io: bool = False, filename: str | None = None, check_table: bool = True,
                  timeout: float = DEFAULT_TIMEOUT_S, keep_saved_model: bool = False,
                  other_graph: bool = False) -> TFLiteExport:
    """Convert one ONNX file to ``.tflite`` for ``plan``; see the module docstring.

    ``check_table=False`` accepts a table computed on another graph of the same model (the
    features graph shares the frame graph's tensor names); unmatched tensors then fall
    back to TFLite's own ranges, and the manifest counts them. ``other_graph``: the plan
    was written for another graph of this export, so its units absent here are skipped.
    """
    onnx_path = Path(onnx_path)
    if calib_source not in CALIB_SOURCES:
        raise EdgesegError(f"unknown calibration source {calib_source!r}", f"use one of: {', '.join(CALIB_SOURCES)}")
    if num_images <= 0:
        raise EdgesegError(f"num_images must be positive, got {num_images}", "use e.g. 32")
    model = _load_onnx(onnx_path)
    manifest = Manifest.load(onnx_path) if find_manifest(onnx_path) else None
    components = _components(model, manifest)
    plan = _as_plan(plan, components, manifest)
    # Units below the component level: TFLite decides per op (the denylist, fp16 weights),
    # so the work copy carries one virtual component per unit and the plain plan over them.
    from edgeseg.quantize.units import unit_view

    units = unit_view(model, plan, other_graph=other_graph)
    precisions = units.plan.precisions
    untagged = tags.untagged_nodes(model)
    if untagged and len(set(precisions.values())) > 1:
        raise EdgesegError(f"{len(untagged)} nodes of the ONNX graph carry no component tag "
                           f"(e.g. {untagged[0]!r}), so a per-component plan cannot be applied",
                           "export the model with `edgeseg export` (it tags every node), or use a uniform plan")
    from edgeseg.export.tflite.compat import check as preflight

    report = preflight(model, plan=plan)  # Flex / unconvertible ops fail here, before TensorFlow starts
    if not report.ok:
        raise report.as_error()
    spec = _input_spec(model, manifest)
    table = _as_table(table)
    needs_int8 = plan.needs_calibration
    if int8_io and set(precisions.values()) != {"int8"}:
        raise EdgesegError("int8 inputs/outputs need an all-int8 plan",
                           "drop --int8-io, or use --plan int8")
    ranges: dict[str, dict[str, Any]] = {}
    source_used = None
    if needs_int8:
        source_used = calib_source
        if calib_source == "edgeseg":
            if table is None:
                raise EdgesegError("the plan has int8 components but no calibration table was given",
                                   "pass --calib DIR (images, calibrated first) or --calib TABLE.json (from "
                                   "`edgeseg calibrate MODEL.onnx --images DIR`), or use --calib-source tflite")
            if check_table:
                table.check_model(sha256_file(onnx_path), what="ONNX file")
            graph_tensors = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
            ranges = {k: v.to_dict() for k, v in table.ranges.items() if k in graph_tensors}
            if not ranges:
                raise EdgesegError("the calibration table has no range for any tensor of this graph",
                                   "re-run `edgeseg calibrate` on this ONNX file")
    samples, sample_info = _samples(images, spec, num_images, need_real=needs_int8)
    check_toolchain()

    # Absolute paths: the conversion process runs inside the build folder.
    out = (Path(out_dir) if out_dir is not None else onnx_path.parent).resolve()
    out.mkdir(parents=True, exist_ok=True)
    label = plan.file_label()
    name = filename or f"{onnx_path.stem}.{label}.tflite"
    if not name.endswith(".tflite"):
        raise EdgesegError(f"TFLite file name {name!r} must end in .tflite", "pick a name like model.int8.tflite")
    final = out / name
    log = out / f"{name}.log"
    report_name = f"{name}.json"
    from edgeseg.utils.outputs import check_output_file

    for path in (final, log, out / report_name):  # never replace a file of yours, found before converting
        check_output_file(path, flag="")
    log.write_text(f"edgeseg TFLite export of {onnx_path} with plan {plan.spec()}\n")

    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".build", dir=out))
    from edgeseg.utils import progress

    try:
        with progress.steps(f"TFLite {name}", total=len(CONVERSION_STAGES)) as steps:
            import onnx

            work_model, names = _work_copy(units.model, components)
            onnx.save(work_model, os.fspath(work / "work.onnx"))
            np.save(work / "samples.npy", samples)
            inits = {i.name for i in model.graph.initializer}
            graph_inputs = [i for i in model.graph.input if i.name not in inits]
            job = {
                "onnx": os.fspath(work / "work.onnx"), "saved_model": os.fspath(work / "saved_model"),
                "samples": os.fspath(work / "samples.npy"), "output": os.fspath(work / "model.tflite"),
                "report": os.fspath(work / "report.json"), "progress": os.fspath(work / "stage.txt"),
                "inputs": [i.name for i in graph_inputs], "input_shapes": _shapes(graph_inputs),
                "outputs": [o.name for o in model.graph.output], "output_shapes": _shapes(model.graph.output),
                "precisions": precisions, "component_order": units.components,
                "calib_source": calib_source, "ranges": ranges, "int8_io": int8_io, "input_layout": spec.layout,
                **names,
            }
            report = _run_worker(job, work, log, timeout, on_stage=steps.step)
            steps.step("parity check vs ONNX Runtime")

            from edgeseg.export.tflite import flatbuffer as fb
            from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
            from edgeseg.runtimes.tflite import TFLiteRuntime

            built = work / "model.tflite"
            view = fb.describe(built.read_bytes())
            feeds = {job["inputs"][0]: samples[:1]}
            reference = OnnxRuntimeRuntime(onnx_path, threads=1).run(feeds)
            with TFLiteRuntime(built, threads=1, io=report["io"]) as rt:
                got = rt.run(feeds)
            parity = _compare(reference, got)
            if plan.is_fp32:
                bad = [p for p in parity if p["cosine"] < PARITY_MIN_COSINE]
                if bad:
                    detail = ", ".join(f"{p['name']}: cosine {p['cosine']:.6f}, max abs err {p['max_abs_error']:.3g}"
                                       for p in bad)
                    where = first_divergence(onnx_path, model, built, report, feeds)
                    raise EdgesegError(
                        f"FP32 TFLite output differs from ONNX Runtime ({detail})"
                        + (f"; the first wrong tensor is {where}" if where else ""),
                        "onnx2tf converted that op with the wrong layout; simplify the graph around it "
                        f"(`edgeseg export` does with onnxslim) or rewrite that op; log: {log}")

            mapping = report.get("mapping", {})
            calib = report.get("calibration")
            op_components = _real_components(report["op_components"], units)
            entry = {
                "kind": "tflite", "primary": False, "source": onnx_path.name,
                "source_sha256": sha256_file(onnx_path),
                "graph": (manifest.artifacts.get(onnx_path.name, {}).get("graph") if manifest else None) or "frame",
                "precision": plan.to_dict(),
                "calibration": None if calib is None else {
                    "source": calib["source"],
                    "table": None if calib["source"] != "edgeseg" else {
                        "method": table.method, "num_images": table.num_images, "images_sha256": table.images_sha256},
                    "representative_images": sample_info,
                    "activation_tensors": calib["activation_tensors"],
                    "ranges_from_table": calib["from_table"], "ranges_from_tflite": calib["from_tflite"]},
                "int8_io": int8_io,
                "io": report["io"],
                "components": _component_precision(view, op_components),
                **({"units": _component_precision(view, op_components, key="units"),
                    "denylisted_ops": report.get("denylisted_ops", 0)} if plan.exceptions else {}),
                "op_mapping": {k: v for k, v in mapping.items() if k != "unmapped"},
                "unmapped_ops": mapping.get("unmapped", []),
                "fp16_constants": report.get("fp16_constants", 0),
                "parity": {"reference": "onnxruntime fp32", "input": sample_info.get("source"), "outputs": parity},
                "op_types": fb.summary(view)["op_types"],
                "seconds": report.get("seconds", {}),
                "log": log.name, "report": report_name,
                "versions": tool_versions("tensorflow-cpu", "tf-keras", "onnx2tf", "ai-edge-litert", "onnx"),
            }
            side = {"io": report["io"], "op_components": op_components, "mapping": mapping,
                    "calibration": calib, "record": report.get("record")}
            entry["sha256"] = sha256_file(built)
            # Everything is complete in the build folder; now rename into place (same
            # filesystem: each rename is atomic), the model file last.
            atomic.write_json(work / "side.json", side)
            if keep_saved_model:
                kept = out / f"{name}.saved_model"
                shutil.rmtree(kept, ignore_errors=True)
                os.replace(work / "saved_model", kept)
            os.replace(work / "side.json", out / report_name)
            os.replace(built, final)

            target = Manifest.load(out) if find_manifest(out) else _fresh_manifest(manifest, spec, components, onnx_path)
            target.add_artifact(name, **entry)
            target.add_files(log.name, report_name, *([f"{name}.saved_model"] if keep_saved_model else []))
            target.record("export-tflite", file=name, plan=plan.spec(), calib_source=source_used,
                          versions=entry["versions"])
            target.save(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TFLiteExport(final, plan, source_used, parity, entry, log, out / report_name,
                        list(mapping.get("unmapped", [])))


def _fresh_manifest(source: Manifest | None, spec, components: list[str], onnx_path: Path) -> Manifest:
    if source is not None:
        return Manifest(model=source.model, model_cfg=source.model_cfg, input=source.input, outputs=source.outputs,
                        components=source.components, presets=source.presets, weights=source.weights)
    return Manifest(model=onnx_path.stem, input=spec.to_dict(), components={c: {} for c in components})


def preflight(onnx_path: str | os.PathLike, plan: PrecisionPlan | None = None) -> None:
    """The checks :func:`export_tflite` makes before TensorFlow starts, on one graph: ops
    TFLite cannot take, and int8 layers it would get wrong. ``edgeseg export --to tflite``
    runs it right after each ONNX graph is written, before calibration."""
    from edgeseg.export.tflite.compat import check as compat_check

    model = _load_onnx(Path(onnx_path))
    if plan is not None:
        from edgeseg.quantize.units import plan_for_graph

        components = _components(model, None)
        plan = plan_for_graph(PrecisionPlan({c: plan.precision_of(c) for c in components}, name=plan.name,
                                            exceptions=dict(plan.exceptions)), model)
    report = compat_check(model, plan=plan)
    if not report.ok:
        raise report.as_error()


def build_tflite_artifact(onnx_path, plan, table, out_dir, images, **kwargs) -> Path:
    """For the sweep: one plan -> one ``.tflite`` in ``out_dir``; returns its path."""
    return export_tflite(onnx_path, out_dir, plan=plan, table=table, images=images, **kwargs).path


def export_tflite_graphs(onnx_paths, plan: str | None = None, table=None, images=None,
                         calib_source: str = "edgeseg", **kwargs) -> list[TFLiteExport]:
    """Every graph of an artifact folder (frame first, then e.g. features) with one plan.

    The table was computed on the first (frame) graph; the others share its tensor names.
    """
    paths = [Path(p) for p in onnx_paths]
    plan = plan or "fp32"
    return [export_tflite(p, plan=plan, table=table, images=images, calib_source=calib_source,
                          check_table=(i == 0), other_graph=(i > 0), **kwargs) for i, p in enumerate(paths)]


def print_tflite_results(results: list[TFLiteExport]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="TFLite (LiteRT, XNNPACK)")
    for col in ("file", "plan", "int8 / float ops", "ranges", "min cosine vs ONNX", "size"):
        table.add_column(col, overflow="fold")
    for r in results:
        comps = {**r.entry["components"], **r.entry.get("units", {})}  # units of the plan after the components
        ops = ", ".join(f"{c} {v['int8_ops']}/{v['float_ops']}" for c, v in comps.items())
        calib = r.entry.get("calibration")
        ranges = "-" if not calib else f"{calib['source']}: {calib['ranges_from_table']} ours, " \
                                       f"{calib['ranges_from_tflite']} TFLite's"
        cos = min(p["cosine"] for p in r.parity)
        table.add_row(r.path.name, str(r.plan), ops, ranges, f"{cos:.5f}", f"{r.path.stat().st_size / 1e6:.2f} MB")
    console.print(table)
    for r in results:
        if r.unmapped_ops:
            console.print(f"  [yellow]warn[/yellow] {r.path.name}: {len(r.unmapped_ops)} TFLite ops could not be "
                          f"traced to a component (kept float when the plan has a float component): "
                          f"{', '.join(r.unmapped_ops[:8])}")
