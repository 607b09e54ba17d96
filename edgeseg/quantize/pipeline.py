"""The calibrate and quantize steps as the CLI (and ``edgeseg export --plan``) run them.

Each step writes its files atomically and, when the model sits in an artifact folder
(``manifest.json`` beside it), records itself there: the calibration table and TensorRT
cache as artifacts, the quantized ONNX with its precision plan, calibration and fidelity,
and one ``history`` entry per step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgeseg.errors import EdgesegError
from edgeseg.quantize.cache import CalibrationTable
from edgeseg.quantize.plan import PrecisionPlan


def update_manifest(model_path: Path, change: Callable[[Any], None]) -> bool:
    """Apply ``change`` to the manifest beside ``model_path`` and save it; False if there is none."""
    from edgeseg.export.manifest import Manifest, find_manifest

    found = find_manifest(model_path)
    if found is None:
        return False
    manifest = Manifest.load(found)
    change(manifest)
    manifest.save(found.parent)
    return True


def _in_folder(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` when it lies inside it (manifest artifact key), else None."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


# ============================================================================ --calib
CALIB_HELP = ("Calibration: a folder of images (calibrated here with KL on --calib-num of them; the others are "
              "held out for fidelity) or a table from `edgeseg calibrate` (JSON).")


def calib_num_arg(num: int | None, flag: str = "--calib-num") -> int | None:
    """``--calib-num``: how many images to calibrate on (0 = all of them), checked up front."""
    if num is None or num == 0:
        return None
    if num < 0:
        raise EdgesegError(f"{flag} must be 0 (all images) or more, got {num}", f"e.g. {flag} 100")
    return num


def calib_kind(calib: str | os.PathLike, flag: str = "--calib") -> str:
    """What ``--calib`` names, the same in every verb: ``"images"`` (a folder of images to
    calibrate on) or ``"table"`` (a calibration table file); a clear error otherwise."""
    p = Path(calib)
    if p.is_dir():
        return "images"
    if p.is_file():
        return "table"
    raise EdgesegError(f"{flag} {calib} does not exist",
                       f"pass {flag} DIR (a folder of JPEG/PNG images) or {flag} TABLE.json "
                       "(a table from `edgeseg calibrate`)")


def check_calib(calib: str | os.PathLike, flag: str = "--calib") -> str:
    """Validate ``--calib`` before any work: a folder must hold images, a table must load."""
    kind = calib_kind(calib, flag)
    if kind == "images":
        from edgeseg.data.images import list_images

        if not list_images(calib):
            raise EdgesegError(f"{flag} {calib} holds no JPEG/PNG images",
                               "put calibration images in it, or make some with `edgeseg data synth`")
    else:
        CalibrationTable.load(calib)
    return kind


def check_outputs_beside(model_path: Path, files: list[tuple[str | os.PathLike | None, str]],
                         overwrite: bool = False) -> None:
    """Before the work: every output file (path, flag) can be written without replacing a
    file edgeseg did not write, and the model's manifest (updated at the end) is writable."""
    from edgeseg.export.manifest import find_manifest
    from edgeseg.utils.outputs import check_output_file, check_writable

    for path, flag in files:
        if path is not None:
            check_output_file(path, flag=flag, overwrite=overwrite, inputs=[model_path])
    found = find_manifest(model_path)
    if found is not None:
        check_writable(found, want_dir=False, flag="")


# ============================================================================ calibrate
@dataclass
class CalibrationOutcome:
    table: CalibrationTable
    table_path: Path
    trt_cache_path: Path | None
    images: Any  # ImageSet
    spec_source: str  # "manifest" or "graph"
    seconds: float


def default_table_path(model_path: str | os.PathLike, method: str = "kl") -> Path:
    """Where a calibration table goes unless named: ``MODEL.<method>.calib.json`` beside the model."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.{method}.calib.json")


def run_calibration(model_path: str | os.PathLike, images_dir: str | os.PathLike, *, method: str = "kl",
                    percentile: float = 99.99, num: int | None = 100, seed: int = 0,
                    out: str | os.PathLike | None = None, trt_cache: str | os.PathLike | None = None,
                    trt_version: str | None = None, threads: int = 0,
                    max_pass_mb: float = 1024, histogram: str = "pow2") -> CalibrationOutcome:
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.quantize.cache import write_trt_cache
    from edgeseg.quantize.calibrate import calibrate, load_onnx

    model_path = Path(model_path)
    onnx_model = load_onnx(model_path)  # one clear error for a missing/corrupt file, before any work
    spec, source = spec_for_model(model_path, onnx_model)
    del onnx_model
    images = select_images(images_dir, spec, num=num, seed=seed)
    t0 = time.perf_counter()
    table = calibrate(model_path, images, method=method, percentile=percentile, threads=threads,
                      max_pass_mb=max_pass_mb, histogram=histogram)
    seconds = time.perf_counter() - t0
    # Record which images were used (relative to the folder) so held-out sets can avoid them.
    table.settings["images_root"] = str(Path(images_dir).resolve())
    table.settings["images"] = images.names
    table.settings["model_file"] = model_path.name
    table_path = Path(out) if out else default_table_path(model_path, method)
    table.save(table_path)
    cache_path = None
    if trt_cache:
        cache_path = write_trt_cache(table, trt_cache, trt_version=trt_version)

    def record(m) -> None:
        folder = model_path.parent
        key = _in_folder(table_path, folder)
        info = {"method": method, "histogram": histogram, "num_images": table.num_images, "model": model_path.name,
                "model_sha256": table.model_sha256, "images_sha256": table.images_sha256,
                "tensors": len(table)}
        if key:
            m.add_artifact(key, kind="calibration-table", **info)
        if cache_path is not None and (ckey := _in_folder(cache_path, folder)):
            m.add_artifact(ckey, kind="tensorrt-calibration-cache", table=str(table_path.name),
                           trt_version=trt_version or table.settings.get("trt_version") or "8.5.2")
        m.record("calibrate", model=model_path.name, table=str(key or table_path), method=method,
                 num_images=table.num_images, images_skipped=len(images.skipped),
                 seconds=round(seconds, 2), trt_cache=str(cache_path) if cache_path else None)

    update_manifest(model_path, record)
    return CalibrationOutcome(table, table_path, cache_path, images, source, seconds)


# ============================================================================ quantize
@dataclass
class QuantizeOutcome:
    path: Path
    plan: PrecisionPlan
    report: Any  # QuantizeReport
    fidelity: Any | None  # FidelityReport
    fidelity_paths: tuple[Path, ...] | None  # json, md, then the node-error files when asked for
    seconds: float
    features_path: Path | None = None  # the matching quantized features graph, when the export has one


def parse_plan(model_path: Path, spec: str, onnx_model=None,
               components: dict[str, str] | None = None) -> PrecisionPlan:
    """Parse against the manifest's components and presets, else the graph's component tags.

    A foreign ONNX (no manifest, no tags) takes whole-model plans as one component
    (``model``), or component plans over ``components`` (name -> regex over node names),
    which are then recorded in a manifest beside it (:mod:`edgeseg.export.foreign`).
    """
    from edgeseg.export import foreign
    from edgeseg.export.manifest import Manifest, find_manifest, verify_artifact
    from edgeseg.export.tags import nodes_by_component

    if find_manifest(model_path) is not None:
        verify_artifact(model_path)  # the manifest's components and presets are only true of its own files
        manifest = Manifest.load(model_path)
        if components and not foreign.patterns_of(manifest):
            raise EdgesegError(f"{model_path.name} was exported by edgeseg with its components "
                               f"({', '.join(manifest.component_names())}); --components is for foreign ONNX files",
                               "drop --components and name those components in --plan")
        if components:
            manifest = foreign.adopt(model_path, components)  # checks the recorded patterns agree
        if manifest.components:
            return manifest.plan(spec)
    if onnx_model is None:
        from edgeseg.quantize.calibrate import load_onnx

        onnx_model = load_onnx(model_path)
    comps = [c for c in nodes_by_component(onnx_model) if c]
    if comps and not components:
        return PrecisionPlan.parse(spec, comps)
    if components:
        return foreign.adopt(model_path, components).plan(spec)
    try:
        return PrecisionPlan.parse(spec, [foreign.WHOLE_MODEL])
    except EdgesegError as e:
        raise EdgesegError(f"{model_path.name} has no components (no edgeseg tags, no manifest): {e.problem}",
                           "use a whole-model plan (--plan '*=fp16', --plan int8), or name components by "
                           "node-name patterns: --components backbone=^/backbone/,head=^/head/") from None


def default_output(model_path: Path, plan: PrecisionPlan) -> Path:
    return model_path.with_name(f"{model_path.stem}.{plan.file_label()}.onnx")


def run_quantize(model_path: str | os.PathLike, plan_spec: str, calib: str | os.PathLike | CalibrationTable | None,
                 *, out: str | os.PathLike | None = None, fidelity_images: str | os.PathLike | None = None,
                 fidelity_num: int = 20, seed: int = 0, activation_type: str = "uint8",
                 threads: int = 0, with_fidelity: bool = True, with_features: bool = True,
                 calib_num: int | None = 100, calib_method: str = "kl",
                 components: dict[str, str] | None = None,
                 numerics: str = "simulated", node_error: bool = False) -> QuantizeOutcome:
    """Quantize, check the artifact runs, and report fidelity on held-out images.

    Held-out images come from ``fidelity_images``, else from the calibration folder
    recorded in the table when it holds images calibration did not use. When the export
    also wrote a features graph (video kernel reuse), it is quantized with the same plan
    and table (``with_features``). ``numerics``: how the fidelity report runs int8
    (:mod:`edgeseg.runtimes.numerics`; simulated Q/DQ unless ``fused`` is asked for).
    ``node_error``: also write the per-node SQNR / cosine on the same held-out images
    (:mod:`edgeseg.quantize.node_error`: Model Explorer node data and an HTML page).
    """
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.quantize.qdq import quantize_file
    from edgeseg.runtimes.numerics import check_numerics

    check_numerics(numerics)

    model_path = Path(model_path)
    onnx_model = load_onnx(model_path)
    plan = parse_plan(model_path, plan_spec, onnx_model, components)
    del onnx_model
    table = None
    calib_name = None
    if plan.needs_calibration and calib is None:
        raise EdgesegError(f"plan {plan.spec()} has int8 components and needs calibration",
                           "pass --calib DIR (images to calibrate on) or --calib TABLE.json "
                           f"(from `edgeseg calibrate {model_path} --images DIR`)")
    out_path = Path(out) if out else default_output(model_path, plan)
    if out_path.resolve() == model_path.resolve():
        raise EdgesegError("the output would overwrite the FP32 source model", "pass another -o path")
    if isinstance(calib, CalibrationTable):
        table = calib
    elif calib is not None and calib_kind(calib) == "images":
        if plan.needs_calibration:  # the same folder then serves fidelity with the images it did not use
            calibration = run_calibration(model_path, calib, method=calib_method, num=calib_num, seed=seed,
                                          threads=threads)
            table, calib_name = calibration.table, calibration.table_path.name
        elif with_fidelity and fidelity_images is None:
            fidelity_images = calib  # nothing calibrated: every image is held out
    elif calib is not None:
        table = CalibrationTable.load(calib)
        calib_name = Path(calib).name
    t0 = time.perf_counter()
    result = quantize_file(model_path, plan, table if plan.needs_calibration else None, out_path,
                           activation_dtype=activation_type)
    seconds = time.perf_counter() - t0

    fidelity = None
    fidelity_paths = None
    if with_fidelity and fidelity_images is None:
        fidelity_images = _held_out_folder(table)
    if with_fidelity and fidelity_images is not None:
        fidelity, fidelity_paths = _fidelity(model_path, out_path, plan, table, fidelity_images,
                                             fidelity_num, seed, threads, numerics, node_error)

    def record(m) -> None:
        folder = model_path.parent
        key = _in_folder(out_path, folder)
        calibration = None
        if table is not None and plan.needs_calibration:
            calibration = {"table": calib_name, "method": table.method, "num_images": table.num_images,
                           "images_sha256": table.images_sha256, "settings": {
                               k: v for k, v in table.settings.items() if k not in ("images", "input")}}
        source = m.artifacts.get(model_path.name, {})
        if key:
            m.add_artifact(key, kind="onnx", graph=source.get("graph", "frame"), source=model_path.name,
                           precision=plan.to_dict(), calibration=calibration,
                           quantization=result.report.to_dict(), sha256=result.sha256,
                           fidelity=fidelity.to_dict() if fidelity else None)
        if key and fidelity_paths:
            m.add_files(*(k for f in fidelity_paths if (k := _in_folder(f, folder))))
        m.record("quantize", model=model_path.name, output=str(key or out_path), plan=plan.spec(),
                 activation_type=activation_type, seconds=round(seconds, 2),
                 fidelity=str(fidelity_paths[0].name) if fidelity_paths else None)

    update_manifest(model_path, record)
    features_path = None
    if with_features and _in_folder(out_path, model_path.parent):
        from edgeseg.quantize.features_graph import has_features_graph, quantize_features_graph

        # A plan applies to both graphs of a video export: reuse frames must see the same
        # quantized mask features as keyframes.
        if has_features_graph(model_path.parent, model_path.name):
            features_path = quantize_features_graph(model_path.parent, _in_folder(out_path, model_path.parent),
                                                    table=table if plan.needs_calibration else None)
    return QuantizeOutcome(out_path, plan, result.report, fidelity, fidelity_paths, seconds, features_path)


def _held_out_folder(table: CalibrationTable | None) -> Path | None:
    """The table's calibration folder, when it still exists and has images calibration did not use."""
    from edgeseg.data.images import list_images

    if table is None or not table.settings.get("images_root"):
        return None
    root = Path(table.settings["images_root"])
    if not root.is_dir():
        return None
    used = set(table.settings.get("images", []))
    if any(p.relative_to(root).as_posix() not in used for p in list_images(root)):
        return root
    return None


def _fidelity(model_path: Path, out_path: Path, plan: PrecisionPlan, table: CalibrationTable | None,
              folder: str | os.PathLike, num: int, seed: int, threads: int, numerics: str = "simulated",
              node_error: bool = False):
    from edgeseg.data.images import select_images, spec_for_model
    from edgeseg.quantize.fidelity import fidelity_report

    spec, _ = spec_for_model(model_path)
    exclude = None
    if table is not None and table.settings.get("images_root") == str(Path(folder).resolve()):
        exclude = set(table.settings.get("images", []))  # held out: never the calibration images
    images = select_images(folder, spec, num=num, seed=seed, exclude=exclude)
    report = fidelity_report(model_path, out_path, images, plan=dict(plan.precisions), threads=threads,
                             numerics=numerics)
    json_path = out_path.with_name(out_path.stem + ".fidelity.json")
    md_path = out_path.with_name(out_path.stem + ".fidelity.md")
    report.save(json_path, md_path)
    paths: tuple[Path, ...] = (json_path, md_path)
    if node_error:
        from edgeseg.quantize.node_error import node_errors

        # The same held-out images as the fidelity report, so the per-node rows explain its totals.
        errors = node_errors(model_path, out_path, list(images.feeds()), threads=max(threads, 1))
        paths += tuple(errors.save(out_path.parent, out_path.stem))
    return report, paths


# ============================================================================ export --plan
def check_plan_for_model(model, plan_spec: str, calib_dir: str | os.PathLike | None) -> PrecisionPlan:
    """Validate ``--plan``/``--calib`` against a zoo model *before* spending time on export."""
    plan = PrecisionPlan.parse(plan_spec, model.component_map.names(), dict(getattr(model, "precision_presets", {})))
    if plan.needs_calibration and calib_dir is None:
        raise EdgesegError(f"plan {plan.spec()} has int8 components and needs calibration",
                           "add --calib DIR (a folder of JPEG/PNG images) or --calib TABLE.json")
    if calib_dir is not None:
        check_calib(calib_dir)
    return plan


@dataclass
class ExportQuantizeOutcome:
    calibration: CalibrationOutcome | None
    quantize: QuantizeOutcome


def quantize_exported(onnx_path: str | os.PathLike, plan_spec: str, calib_dir: str | os.PathLike | None,
                      *, num: int = 100, seed: int = 0, method: str = "kl", fidelity_num: int = 20,
                      threads: int = 0) -> ExportQuantizeOutcome:
    """export -> calibrate -> quantize -> fidelity, all recorded in the artifact's manifest.

    Fidelity uses the images of ``calib_dir`` that calibration did not use; when there
    are none left the report is skipped (calibration images would flatter it).
    """
    onnx_path = Path(onnx_path)
    plan = parse_plan(onnx_path, plan_spec)
    calibration = None
    table_path = None
    images = calib_dir is not None and calib_kind(calib_dir) == "images"
    if plan.needs_calibration and images:
        calibration = run_calibration(onnx_path, calib_dir, method=method, num=num, seed=seed, threads=threads)
        table_path = calibration.table_path
    elif plan.needs_calibration:
        table_path = Path(calib_dir)  # a table: it must have been computed on this very export
    fidelity_dir = None
    if images and calibration is None:  # fp16-only plan: every image is held out
        fidelity_dir = calib_dir
    # With a calibration, run_quantize holds out the folder's images that it did not use.
    outcome = run_quantize(onnx_path, plan_spec, table_path, fidelity_images=fidelity_dir,
                           fidelity_num=fidelity_num, seed=seed, threads=threads)
    return ExportQuantizeOutcome(calibration, outcome)
