"""``export_tensorrt``: an export folder + a precision plan -> a TensorRT engine beside it.

    export_tensorrt("out/mobileinst", plan="mixed", table="out/mobileinst/model.kl.calib.json",
                    options=BuildOptions.parse(["workspace=2048", "timing-cache=out/trt.cache"]))

In order (everything cheap is checked before TensorRT is imported, and TensorRT before
any file is written):

1. the source: the FP32 export ONNX (then the plan is applied here) or a quantized ONNX
   written by ``edgeseg quantize`` (then its recorded plan is used); the plan, parsed
   against the manifest's components; for INT8 from the FP32 ONNX, the calibration table,
   which must have been computed on this very file;
2. the installed TensorRT's version picks the path (``versions.choose_typing``) and the
   :class:`~edgeseg.export.tensorrt.build_plan.EngineBuildPlan`;
3. the ONNX TensorRT parses: strongly typed builds need the plan inside it, so the FP32
   export is quantized here with int8 activations (``<stem>.<plan>.trt.onnx``); a uint8
   QDQ artifact gets its zero points rewritten to int8 (same values);
4. the engine cache is asked first (key: ONNX, build plan, ranges, TensorRT, GPU); else
   the engine is built (``builder.build_engine``) and stored there;
5. ``<stem>.<plan>.engine``, its layer information (``.layers.json``) and the
   planned-vs-actual precision report (``.precision.json`` / ``.md``) are written
   atomically and recorded in the manifest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.export.tensorrt.build_plan import BuildOptions, EngineBuildPlan, make_build_plan
from edgeseg.export.tensorrt.versions import choose_typing

ENGINE_KIND = "tensorrt-engine"


@dataclass
class TensorRTExport:
    path: Path
    build: EngineBuildPlan
    cache_key: str
    from_cache: bool
    onnx: Path  # what TensorRT parsed
    report: Any | None  # PrecisionReport (None without layer information)
    seconds: float
    entry: dict[str, Any]


@dataclass
class _Source:
    onnx: Path
    manifest: Any | None
    quantized: bool  # the ONNX already carries a plan (QDQ / fp16)
    recorded_plan: Any | None  # PrecisionPlan recorded for a quantized ONNX


def _source(path) -> _Source:
    from edgeseg.export.manifest import Manifest, find_manifest
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.runtimes.base import resolve_artifact

    p = resolve_artifact(path)
    if p.suffix.lower() != ".onnx":
        raise EdgesegError(f"TensorRT engines are built from ONNX, not {p.name}",
                           "pass the export folder or its .onnx (the FP32 export or a quantized ONNX)")
    manifest = Manifest.load(p) if find_manifest(p) is not None else None
    info = (manifest.artifacts.get(p.name, {}) if manifest else {}) or {}
    recorded = info.get("precision")
    plan = PrecisionPlan.from_dict(recorded) if isinstance(recorded, dict) and recorded.get("precisions") else None
    quantized = plan is not None and not plan.is_fp32
    return _Source(p, manifest, quantized, plan)


def _plan(src: _Source, plan, onnx_model):
    from edgeseg.quantize.pipeline import parse_plan
    from edgeseg.quantize.plan import PrecisionPlan

    if isinstance(plan, PrecisionPlan):
        given = plan
    elif plan:
        given = parse_plan(src.onnx, str(plan), onnx_model)
    else:
        given = None
    if src.quantized:
        if given is not None and (given.precisions != src.recorded_plan.precisions
                                  or given.exceptions != src.recorded_plan.exceptions):
            raise EdgesegError(f"{src.onnx.name} was quantized with plan {src.recorded_plan.spec()}, "
                               f"not {given.spec()}",
                               "pass the FP32 export to build another plan, or drop --plan")
        return src.recorded_plan
    if given is None:
        return parse_plan(src.onnx, "fp32", onnx_model)
    return given


def _table(src: _Source, plan, table, check: bool = True):
    """The calibration table for an INT8 plan built from the FP32 ONNX (checked against it).

    ``check=False`` for a second graph of the same export (the features graph): the table
    was computed on the frame graph, whose tensors it shares.
    """
    from edgeseg.quantize.cache import CalibrationTable, read_trt_cache
    from edgeseg.utils.hashing import sha256_file

    if src.quantized or not plan.needs_calibration:
        return None
    if table is None and src.manifest is not None:
        names = [n for n, i in src.manifest.artifacts.items()
                 if i.get("kind") == "calibration-table" and (i.get("model") == src.onnx.name or not check)]
        if names:
            table = src.onnx.parent / names[-1]
    if table is None:
        raise EdgesegError(f"plan {plan.spec()} has int8 components and no calibration table was found",
                           f"run `edgeseg calibrate {src.onnx} --images DIR` (recorded in the manifest), "
                           "or pass --calib TABLE.json")
    if not isinstance(table, CalibrationTable):
        path = Path(table)
        table = CalibrationTable.load(path) if path.suffix == ".json" else read_trt_cache(path)
    if check:
        table.check_model(sha256_file(src.onnx), what=f"ONNX file than {src.onnx.name}")
    return table


def _check_owned(path: Path, manifest, kinds: tuple[str, ...]) -> None:
    """Refuse to replace a file edgeseg did not write (the manifest says what it wrote)."""
    if not path.exists():
        return
    info = (manifest.artifacts.get(path.name, {}) if manifest else {}) or {}
    if info.get("kind") not in kinds and info.get("written_for") != "tensorrt":
        raise EdgesegError(f"{path} exists and was not written by `edgeseg export --to tensorrt`",
                           "move it away, or pass another output folder")


def _prepare_onnx(src: _Source, plan, table, build: EngineBuildPlan, out_dir: Path, onnx_model,
                  other_graph: bool = False):
    """(path TensorRT parses, its model) for ``build``; writes the prepared ONNX when one is needed."""
    import onnx

    from edgeseg.export.tensorrt.onnx_prep import activation_types, to_int8_activations
    from edgeseg.utils import atomic

    if build.typing == "strong" and not src.quantized and not plan.is_fp32:
        from edgeseg.quantize.qdq import quantize_model
        from edgeseg.quantize.units import plan_for_graph

        out = out_dir / f"{src.onnx.stem}.{plan.label()}.trt.onnx"
        _check_owned(out, src.manifest, ("onnx",))
        # int8 activations: TensorRT's Q/DQ are symmetric int8 (see onnx_prep). The plan's
        # units go into the Q/DQ and casts too (quantize_model expands them).
        fp32 = onnx.load(str(src.onnx))
        qmodel, _ = quantize_model(fp32, plan_for_graph(plan, fp32) if other_graph else plan, table,
                                   activation_dtype="int8")
        with atomic.atomic_path(out) as tmp:
            onnx.save(qmodel, os.fspath(tmp))
            _runs_in_onnxruntime(tmp, out.name)
        return out, qmodel
    if src.quantized and "uint8" in activation_types(onnx_model):
        converted, _ = to_int8_activations(onnx_model)
        out = out_dir / f"{src.onnx.stem}.trt.onnx"
        _check_owned(out, src.manifest, ("onnx",))
        with atomic.atomic_path(out) as tmp:
            onnx.save(converted, os.fspath(tmp))
        return out, converted
    return src.onnx, onnx_model


def _runs_in_onnxruntime(path: Path, label: str) -> None:
    """The prepared ONNX must at least run on the CPU before TensorRT spends minutes on it."""
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    try:
        rt = OnnxRuntimeRuntime(path, threads=1)
        rt.run(rt.random_feeds())
    except Exception as e:
        problem = e.problem if isinstance(e, EdgesegError) else str(e)
        raise EdgesegError(f"the ONNX prepared for TensorRT ({label}) does not run in ONNX Runtime: {problem}",
                           "please report this with the model and plan") from e


def export_tensorrt(source: str | os.PathLike, plan=None, table=None, out_dir: str | os.PathLike | None = None,
                    options: BuildOptions | None = None, *, trt: Any = None, device: str | None = None,
                    check_table: bool = True, other_graph: bool = False) -> TensorRTExport:
    """Build a TensorRT engine for ``source`` under ``plan`` (see the module docstring).

    A plan's units below the component level are carried to every layer: weak typing
    sets each network layer's precision from its node's unit; the strongly typed ONNX is
    quantized with them. ``other_graph``: units absent from this graph are skipped."""
    import onnx

    from edgeseg.export.manifest import Manifest, tool_versions
    from edgeseg.export.tensorrt.calibrator import calibration_cache
    from edgeseg.export.tensorrt.deps import import_tensorrt, tensorrt_version
    from edgeseg.export.tensorrt.engine_cache import EngineCache, ranges_sha256
    from edgeseg.export.tensorrt.names import OnnxIndex
    from edgeseg.utils import atomic
    from edgeseg.utils.hashing import sha256_file

    options = options or BuildOptions()
    options.validate()
    # ---- 1. inputs, before TensorRT
    src = _source(source)
    onnx_model = onnx.load(str(src.onnx), load_external_data=False)
    precision_plan = _plan(src, plan, onnx_model)
    table = _table(src, precision_plan, table, check=check_table)
    out = Path(out_dir) if out_dir is not None else src.onnx.parent
    stem = src.onnx.stem if src.quantized else f"{src.onnx.stem}.{precision_plan.label()}"
    engine_path = out / f"{stem}.engine"
    manifest = src.manifest if out.resolve() == src.onnx.parent.resolve() else None
    _check_owned(engine_path, manifest, (ENGINE_KIND,))

    # ---- 2. the installed TensorRT decides the path
    trt = trt if trt is not None else import_tensorrt()
    version = tensorrt_version(trt)
    typing = choose_typing(version, options.typing)
    # Strongly typed builds parse a QDQ/fp16 ONNX, prepared below from the FP32 export.
    qdq = src.quantized or (typing == "strong" and not precision_plan.is_fp32)
    # Per node: its component, or its unit of the plan (a virtual component of its own).
    from edgeseg.quantize.units import node_tags

    _, unit_precisions = node_tags(onnx_model, precision_plan, other_graph=other_graph)
    build = make_build_plan(unit_precisions, version, "qdq" if qdq else "fp32", options,
                            plan_spec=precision_plan.spec())
    out.mkdir(parents=True, exist_ok=True)

    # ---- 3. what TensorRT parses
    parse_path, parse_model = _prepare_onnx(src, precision_plan, table, build, out, onnx_model, other_graph)
    index = OnnxIndex.from_model(parse_model, node_tags(parse_model, precision_plan, other_graph=other_graph)[0])
    cache_bytes = calibration_cache(table, version) if build.calibration == "cache" else None

    # ---- 4. cache, else build
    if device is None:
        from edgeseg.export.tensorrt.cuda import device_description

        device = device_description()
    key = build.cache_key(sha256_file(parse_path), ranges_sha256(table) if build.calibration == "cache" else None,
                          device)
    cache = EngineCache(options.engine_cache)
    t0 = time.perf_counter()
    hit = cache.get(key)
    if hit is not None:
        engine_bytes, meta = hit
        layer_info = meta.get("layer_information")
        warnings: list[str] = []
        layer_rules = meta.get("layer_rules")
    else:
        from edgeseg.export.tensorrt.builder import build_engine

        result = build_engine(trt, parse_path, build, index, calibration_cache=cache_bytes,
                              timing_cache=options.timing_cache)
        engine_bytes, layer_info, warnings = result.engine, result.layer_information, result.warnings
        layer_rules = None
        if result.layer_plan is not None:
            layer_rules = {"constrained_layers": len(result.layer_plan.precisions),
                           "rules": result.layer_plan.rules, "unassigned": result.layer_plan.unassigned[:50],
                           "skipped_non_float": result.layer_plan.skipped_non_float}
        cache.put(key, engine_bytes, {"build": build.to_dict(), "onnx": parse_path.name, "device": device,
                                      "layer_information": layer_info, "layer_rules": layer_rules})
    seconds = time.perf_counter() - t0

    # ---- 5. files and manifest
    report = None
    files: dict[str, str] = {}
    atomic.write_bytes(engine_path, engine_bytes)
    if layer_info:
        from edgeseg.export.tensorrt.layerinfo import parse_layer_information, precision_report

        layers_path = engine_path.with_name(engine_path.name + ".layers.json")
        atomic.write_text(layers_path, layer_info if isinstance(layer_info, str) else json.dumps(layer_info))
        report = precision_report(parse_layer_information(layer_info), index, build.precisions)
        atomic.write_json(engine_path.with_name(engine_path.name + ".precision.json"), report.to_dict())
        atomic.write_text(engine_path.with_name(engine_path.name + ".precision.md"), report.to_markdown())
        files = {"layer_information": layers_path.name, "precision_report": engine_path.name + ".precision.md"}
    entry = {"kind": ENGINE_KIND, "source": src.onnx.name, "parsed_onnx": parse_path.name,
             "precision": precision_plan.to_dict(), "build": build.to_dict(), "cache_key": key,
             "from_cache": hit is not None, "device": device, "tensorrt": version.text,
             "sha256": sha256_file(engine_path), "layer_rules": layer_rules, "warnings": warnings[:20],
             "precision_summary": {c.component: c.verdict for c in report.components} if report else None,
             "tool_versions": tool_versions("onnx", "tensorrt"), **files}
    if manifest is not None:
        m = Manifest.load(src.onnx)
        if parse_path != src.onnx:
            m.add_artifact(parse_path.name, kind="onnx", written_for="tensorrt", source=src.onnx.name,
                           precision=precision_plan.to_dict(), sha256=sha256_file(parse_path))
        m.add_artifact(engine_path.name, **entry)
        m.record("export-tensorrt", source=src.onnx.name, engine=engine_path.name, plan=precision_plan.spec(),
                 typing=build.typing, tensorrt=version.text, from_cache=hit is not None, seconds=round(seconds, 2))
        m.save(src.onnx.parent)
    return TensorRTExport(engine_path, build, key, hit is not None, parse_path, report, seconds, entry)


def export_tensorrt_graphs(onnx_paths: list[str | os.PathLike], plan_spec: str | None = None,
                           table_path: str | os.PathLike | None = None,
                           options: BuildOptions | None = None) -> list[TensorRTExport]:
    """An engine per graph (frame, features); the table is checked against the first graph only."""
    paths = [Path(p) for p in onnx_paths]
    out = []
    for i, p in enumerate(paths):
        out.append(export_tensorrt(p, plan=plan_spec, table=table_path, options=options, check_table=(i == 0),
                                   other_graph=(i > 0)))
    return out


def print_tensorrt_results(results: list[TensorRTExport]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="TensorRT")
    for col in ("engine", "TensorRT", "typing", "plan", "size", "cached", "precision (planned vs actual)"):
        table.add_column(col, overflow="fold")
    for r in results:
        summary = "; ".join(f"{c}: {v}" for c, v in (r.entry.get("precision_summary") or {}).items()) or "-"
        table.add_row(r.path.name, r.build.trt_version, r.build.typing, r.build.plan_spec,
                      f"{r.path.stat().st_size / 1e6:.1f} MB", "yes" if r.from_cache else "no", summary)
    console.print(table)
