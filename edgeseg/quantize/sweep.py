"""The precision sweep: every plan built from ONE calibration, then its AP and its latency.

``run_sweep(source, dataset, ...)``:

1. **Check everything cheap first**: the model's components (from the manifest, also the
   one embedded in an edgeseg checkpoint), the plans, the dataset, the output folder.
   A typo in a plan fails in milliseconds, not after a calibration.
2. **Source -> FP32 ONNX in the work dir** (``WORK/<model>/``): a checkpoint (or a zoo name
   with committed weights) is exported; an artifact folder / ONNX file is copied, so the
   user's folder is never written into.
3. **Calibrate once** (only if a plan has an INT8 component): one KL table serves all plans.
4. **Build** each plan's artifact (QDQ/FP16 ONNX, or ``.tflite`` with ``backend="tflite"``).
5. **Evaluate** mask AP of each artifact on the dataset (``sweep_device.evaluate_plan_ap``:
   the target's numerics on the host).
6. **Time** all artifacts on one pinned core in interleaved rounds
   (:mod:`edgeseg.quantize.sweep_latency`), or, with ``settings.device``, each plan's
   target artifact on the phone / Jetson itself (:mod:`edgeseg.quantize.sweep_device`);
   latency ratios are to FP32 from this same run.
7. Mark the Pareto front and return a :class:`~edgeseg.quantize.sweep_report.SweepReport`;
   :func:`write_reports` writes JSON, Markdown and PNG together (all or none).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeseg.errors import EdgesegError
from edgeseg.quantize.plan import GENERIC_PRESETS, PrecisionPlan, all_combinations
from edgeseg.quantize.sweep_device import evaluate_plan_ap
from edgeseg.quantize.sweep_latency import LatencySettings
from edgeseg.quantize.sweep_report import SweepReport

BACKENDS = ("onnxruntime", "tflite", "tensorrt")
WORK_MARKER = ".edgeseg-sweep-work"  # only folders holding this are ever cleared by the sweep
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
REPORT_NAMES = ("sweep.json", "sweep.md", "sweep_pareto.png")


@dataclass
class SweepSettings:
    plans: str = "default"  # "SPEC;SPEC;..." with "default" = FP32 + every fp16/int8 combination
    backend: str = "onnxruntime"
    latency: LatencySettings = field(default_factory=LatencySettings)
    limit: int | None = None  # evaluate the first N images (None: all)
    eval_threads: int = 1  # AP does not depend on it; only the eval's wall time does
    calib_method: str = "kl"
    calib_num: int | None = 100
    calib_seed: int = 0
    max_ap_drop: float | None = None
    device: Any = None  # sweep_device.DeviceSweepSettings: latency on that target; None: this host
    # How AP runs int8 on ONNX Runtime (edgeseg.runtimes.numerics): simulated Q/DQ, the
    # same on every host; latency always times the fused kernels deployment runs.
    numerics: str = "simulated"


@dataclass
class SweepSource:
    """The FP32 ONNX the sweep works from, with the manifest beside it."""

    onnx: Path
    manifest: Any  # Manifest
    checkpoint: dict[str, Any] | None  # {path, sha256} of the weights, when known
    origin: str


# ============================================================================ plans

def _ranges_sha256(table) -> str:
    """sha256 of the table's ranges (tensor -> range) as canonical JSON."""
    import hashlib
    import json

    ranges = {k: v.to_dict() for k, v in sorted(table.ranges.items())}
    return hashlib.sha256(json.dumps(ranges, sort_keys=True).encode()).hexdigest()

def _preset_names(manifest) -> dict[str, str]:
    """canonical spec -> preset name, so table rows and plot labels can say "mixed"."""
    comps = manifest.component_names()
    names = {}
    for name, text in {**GENERIC_PRESETS, **(manifest.presets or {})}.items():
        try:
            names.setdefault(PrecisionPlan.parse(text, comps).spec(), name)
        except EdgesegError:
            continue  # a preset for components this graph lacks
    return names


def parse_plans(text: str, manifest) -> list[PrecisionPlan]:
    """``"default"`` or ``"SPEC;SPEC"`` -> plans, FP32 first, duplicates dropped."""
    comps = manifest.component_names()
    if not comps:
        raise EdgesegError("the model's manifest lists no components, so no plan can be built",
                           "re-export the model with `edgeseg export` (it records the components)")
    tokens = [t.strip() for t in (text or "").split(";") if t.strip()]
    if not tokens:
        raise EdgesegError("--plans is empty",
                           f"use 'default' or plans separated by ';', e.g. '{comps[0]}=int8,*=fp16;int8'")
    plans: list[PrecisionPlan] = [PrecisionPlan.uniform("fp32", comps)]  # the reference, always measured
    for tok in tokens:
        if tok == "default":
            plans.extend(all_combinations(comps))
        else:
            plans.append(manifest.plan(tok))
    names = _preset_names(manifest)
    out: list[PrecisionPlan] = []
    seen = set()
    for p in plans:
        if p.spec() in seen:
            continue
        seen.add(p.spec())
        out.append(PrecisionPlan(dict(p.precisions), name=p.name or names.get(p.spec())))
    return out


# ============================================================================ source
def _model_cfg(manifest) -> dict[str, Any]:
    cfg = dict(manifest.model_cfg or {})
    if isinstance(cfg.get("input_size"), list):  # JSON turned the tuple into a list
        cfg["input_size"] = tuple(cfg["input_size"])
    return cfg


def describe_source(source: str | os.PathLike):
    """(kind, path, manifest) without doing any work: kind is 'checkpoint' or 'onnx'."""
    from edgeseg.export.manifest import find_manifest, manifest_for_artifact

    p = Path(source)
    if not p.exists():
        from edgeseg.models.registry import list_models

        if str(source) in list_models():
            from edgeseg.models.pretrained import zoo_checkpoint

            ckpt = zoo_checkpoint(str(source))  # the shipped weights, or a clear error naming those there are
            return "checkpoint", ckpt, manifest_for_artifact(ckpt)
        raise EdgesegError(f"{source} is neither a file, a folder nor a zoo model name",
                           "pass an artifact folder (edgeseg export), an .onnx file beside its manifest.json, "
                           "an edgeseg checkpoint (.safetensors) or a zoo model with committed weights")
    if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint", p, manifest_for_artifact(p)
    if p.is_dir() or p.suffix.lower() == ".onnx":
        if find_manifest(p) is None:
            raise EdgesegError(f"no manifest.json beside {p}, so the sweep cannot tell the model's components, "
                               "preprocessing or post-processing",
                               "export the model with `edgeseg export MODEL -o DIR` and pass DIR")
        return "onnx", p, manifest_for_artifact(p)
    raise EdgesegError(f"cannot sweep {p.name}: not an artifact folder, .onnx or checkpoint",
                       "pass an export folder, an .onnx beside its manifest.json, or a .safetensors checkpoint")


def prepare_work(work: Path, model_name: str, *, overwrite: bool = False, inputs=()) -> Path:
    """``WORK/<model>/``, cleared of the files an earlier sweep wrote there (only those:
    anything else stays); a non-empty folder the sweep did not make needs ``overwrite``."""
    from edgeseg.utils import outputs

    folder = work / model_name
    checked = outputs.check_output_folder(folder, outputs.SWEEP_WORK, flag="--work-dir", overwrite=overwrite,
                                          inputs=inputs)
    for name in sorted(checked.owned, key=lambda n: -n.count("/")):
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)  # a recorded folder (a kept SavedModel) is the sweep's own
        elif target.exists() or target.is_symlink():
            target.unlink()
        parent = target.parent
        while parent != folder and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return folder


def materialize_source(kind: str, path: Path, manifest, folder: Path, origin: str) -> SweepSource:
    """Put the FP32 ONNX + manifest into ``folder`` (export a checkpoint, or copy an export)."""
    from edgeseg.export.manifest import Manifest
    from edgeseg.runtimes.base import resolve_artifact
    from edgeseg.utils.hashing import sha256_file

    if kind == "checkpoint":
        from edgeseg.export.onnx import export_onnx
        from edgeseg.models import create_model
        from edgeseg.models.checkpoints import load_weights

        model = create_model(manifest.model, **_model_cfg(manifest))
        load_weights(model, path)
        model.eval()
        weights = {"path": str(path), "sha256": sha256_file(path), "format": path.suffix.lstrip(".")}
        # Only the frame graph: the sweep measures images, not video kernel reuse. The
        # folder was checked and cleared by prepare_work (files of yours there stay).
        result = export_onnx(model, folder, graphs=("frame",), weights=weights, overwrite=True)
        (folder / WORK_MARKER).write_text("made by edgeseg sweep; cleared on the next sweep\n")
        return SweepSource(result.onnx_path, result.manifest, {"path": str(path), "sha256": weights["sha256"]},
                           origin)
    src = resolve_artifact(path)
    info = manifest.artifacts.get(src.name, {})
    precisions = (info.get("precision") or {}).get("precisions") or {}
    if info.get("graph", "frame") != "frame":
        raise EdgesegError(f"{src.name} is the {info.get('graph')} graph; the sweep needs the frame graph",
                           "pass the export folder or its main .onnx")
    if precisions and any(p != "fp32" for p in precisions.values()):
        raise EdgesegError(f"{src.name} is already quantized ({(info.get('precision') or {}).get('spec')})",
                           "pass the FP32 export: the sweep builds every plan from it")
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    if dst.exists() or (folder / "manifest.json").exists():
        raise EdgesegError(f"{dst.name} or manifest.json in the work folder {folder} was not written by the sweep",
                           "move it elsewhere, or pass another --work-dir")
    (folder / WORK_MARKER).write_text("made by edgeseg sweep; cleared on the next sweep\n")
    shutil.copyfile(src, dst)
    copy = Manifest.from_dict(manifest.to_dict())
    copy.artifacts = {src.name: dict(info, primary=True)}  # the other files were not copied
    copy.record("sweep-copy", source=str(src))
    copy.save(folder)
    return SweepSource(dst, copy, manifest.weights, origin)


# ============================================================================ checks
def check_dataset(dataset_json, images_dir, manifest):
    from edgeseg.data.coco import CocoDataset

    dataset = CocoDataset(dataset_json, images_dir)
    n = (manifest.model_cfg or {}).get("num_classes")
    if n is not None and int(n) != dataset.num_classes:
        raise EdgesegError(f"the model predicts {n} classes but {Path(dataset_json).name} has "
                           f"{dataset.num_classes} categories",
                           "sweep on the dataset the model was trained for")
    return dataset


def check_output_dir(out_dir: Path, *, overwrite: bool = False, inputs=()) -> None:
    """The report folder, before any work: writable, and a new or empty folder or an earlier
    sweep's (its reports are replaced); anything else needs ``overwrite`` (files there stay)."""
    from edgeseg.utils import outputs

    outputs.check_output_folder(out_dir, outputs.SWEEP_REPORTS, overwrite=overwrite, inputs=inputs,
                                expected=REPORT_NAMES)


def _tool_versions(backend: str) -> dict[str, str]:
    from edgeseg.export.manifest import tool_versions

    mods = ["numpy", "torch", "onnx", "onnxruntime", "onnxslim", "pycocotools"]
    if backend == "tflite":
        mods += ["tensorflow-cpu", "tensorflow", "ai-edge-litert", "onnx2tf"]
    if backend == "tensorrt":
        mods += ["tensorrt", "cuda-python", "pycuda"]
    return tool_versions(*mods)


# ============================================================================ building
def build_artifact(src: SweepSource, plan: PrecisionPlan, table, backend: str, images) -> Path:
    """One plan's artifact in the work folder (the FP32 ONNX itself for FP32 on ONNX Runtime)."""
    if backend == "tensorrt":  # an engine built here (a GPU host or a Jetson): AP and latency on TensorRT
        from edgeseg.export.tensorrt.export import export_tensorrt

        return export_tensorrt(src.onnx, plan=plan, table=table if plan.needs_calibration else None).path
    if backend == "tflite":
        from edgeseg.export.tflite import build_tflite_artifact

        return Path(build_tflite_artifact(src.onnx, plan, table if plan.needs_calibration else None,
                                          src.onnx.parent, images))
    if plan.is_fp32:
        return src.onnx
    from edgeseg.quantize.pipeline import run_quantize

    out = src.onnx.with_name(f"{src.onnx.stem}.{plan.file_label()}.onnx")
    # No fidelity report: the sweep measures AP itself, which is what fidelity predicts;
    # no features graph: the sweep times single images.
    return run_quantize(src.onnx, plan.spec(), table if plan.needs_calibration else None, out=out,
                        with_fidelity=False, with_features=False).path


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise EdgesegError(f"unknown sweep backend {backend!r}", f"use one of: {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        from edgeseg.export.tensorrt.deps import import_tensorrt

        import_tensorrt()  # one clear error with the install line, before any work
    if backend == "tflite":
        try:
            from edgeseg.export.tflite import check_toolchain
        except ImportError as e:
            raise EdgesegError(f"the TFLite exporter is not available in this build: {e}",
                               "use --backend onnxruntime") from e
        check_toolchain()


# ============================================================================ the sweep
def run_sweep(source: str | os.PathLike, dataset_json: str | os.PathLike, images_dir: str | os.PathLike,
              calib: str | os.PathLike | None, work_dir: str | os.PathLike,
              settings: SweepSettings | None = None,
              progress: Callable[[str], None] | None = None, overwrite: bool = False) -> SweepReport:
    from edgeseg.benchmark.stats import percentile
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.sweep_latency import measure_interleaved
    from edgeseg.quantize.sweep_report import PlanResult
    from edgeseg.runtimes.numerics import check_numerics
    from edgeseg.utils.hashing import sha256_file

    settings = settings or SweepSettings()
    say = progress or (lambda msg: None)
    # ---- 1. cheap checks, before any heavy work
    if settings.device is not None:
        settings.device.check()
        settings.backend = settings.device.host_backend  # AP on the host with the target's artifact/numerics
    _check_backend(settings.backend)
    check_numerics(settings.numerics)
    settings.latency.validate()
    if settings.device is not None and settings.latency.clock != "wall":
        raise EdgesegError("--clock cpu times runs on this machine, not on a --target device",
                           "drop --clock (the device's own tool reports its latency)")
    if settings.limit is not None and settings.limit < 1:
        raise EdgesegError(f"--limit must be at least 1, got {settings.limit}", "drop --limit to evaluate every image")
    if settings.max_ap_drop is not None and settings.max_ap_drop < 0:
        raise EdgesegError(f"--max-ap-drop cannot be negative ({settings.max_ap_drop})", "e.g. --max-ap-drop 1.0")
    kind, path, manifest = describe_source(source)
    plans = parse_plans(settings.plans, manifest)
    dataset = check_dataset(dataset_json, images_dir, manifest)
    needs_int8 = any(p.needs_calibration for p in plans)
    calib_path = Path(calib) if calib is not None else None
    if needs_int8:
        if calib_path is None:
            raise EdgesegError("some plans have INT8 components and no calibration was given",
                               "pass --calib DIR (images to calibrate on, e.g. the train split) "
                               "or --calib TABLE.json from `edgeseg calibrate`")
        if not calib_path.exists():
            raise EdgesegError(f"--calib {calib_path} does not exist",
                               "pass a folder of calibration images or a table from `edgeseg calibrate`")
    if settings.calib_num is not None and settings.calib_num < 1:
        raise EdgesegError(f"--calib-num must be at least 1, got {settings.calib_num}", "e.g. --calib-num 100")

    # ---- 2. FP32 ONNX in the work folder
    target = (Path(work_dir) / manifest.model).resolve()
    if Path(path).resolve() == target or target in Path(path).resolve().parents:
        raise EdgesegError(f"{path} lies in the sweep's own work folder {target}, which every sweep clears",
                           "copy the artifact elsewhere, or pass another --work-dir")
    folder = prepare_work(Path(work_dir), manifest.model, overwrite=overwrite,
                          inputs=[path, dataset_json, images_dir, calib_path])
    say(f"preparing FP32 ONNX of {manifest.model} in {folder}")
    t0 = time.perf_counter()
    src = materialize_source(kind, path, manifest, folder, str(source))
    onnx_sha = sha256_file(src.onnx)
    prep_s = time.perf_counter() - t0

    # ---- 3. one calibration for every plan
    table = None
    calibration = None
    if needs_int8:
        t0 = time.perf_counter()
        if calib_path.is_dir():
            from edgeseg.quantize.pipeline import run_calibration

            say(f"calibrating ({settings.calib_method}) on {calib_path}")
            outcome = run_calibration(src.onnx, calib_path, method=settings.calib_method, num=settings.calib_num,
                                      seed=settings.calib_seed,
                                      out=folder / f"{src.onnx.stem}.{settings.calib_method}.calib.json")
            table, table_path = outcome.table, outcome.table_path
            if outcome.images.shortfall():
                say(f"note: --calib-num {outcome.images.shortfall()}")
        else:
            table_path = calib_path
            table = CalibrationTable.load(calib_path)
            table.check_model(onnx_sha, what=f"model than {src.onnx.name} (exported from {source})")
        calibration = {"method": table.method, "num_images": table.num_images,
                       "num_requested": settings.calib_num if calib_path.is_dir() else None,
                       "table": str(table_path), "table_sha256": sha256_file(table_path),
                       # The table file also records where its images were (a path that
                       # differs per machine); the ranges alone say whether it calibrates the same.
                       "ranges_sha256": _ranges_sha256(table),
                       "images_sha256": table.images_sha256, "images_dir": str(calib_path),
                       "seconds": round(time.perf_counter() - t0, 2)}

    # ---- 4 + 5. build and evaluate each plan
    rep_images = calib_path if (calib_path is not None and calib_path.is_dir()) else Path(images_dir)
    built: dict[str, tuple[PrecisionPlan, Path, float]] = {}
    evals: dict[str, Any] = {}
    for i, plan in enumerate(plans, 1):
        tag = f"[{i}/{len(plans)}] {plan.name or plan.label()}"
        say(f"{tag}: building")
        t0 = time.perf_counter()
        file = build_artifact(src, plan, table, settings.backend, rep_images)
        built[plan.spec()] = (plan, file, time.perf_counter() - t0)
        say(f"{tag}: evaluating {file.name}")
        res = evaluate_plan_ap(file, dataset_json, images_dir, limit=settings.limit, threads=settings.eval_threads,
                               numerics=settings.numerics)
        evals[plan.spec()] = res
        say(f"{tag}: AP {res.metrics['AP']}, AP50 {res.metrics['AP50']} ({res.seconds:.1f} s)")

    # ---- 6. latency, interleaved: one pinned core here, or on the target device
    lat = settings.latency
    sources: dict[str, dict[str, str]] = {}
    if settings.device is not None:
        from edgeseg.quantize.sweep_device import build_device_artifact, measure_on_device

        dev = settings.device
        say(f"building {len(plans)} plans for {dev.spec.kind} {dev.spec.address} ({dev.artifact})")
        files = {spec: (plan, build_device_artifact(src, plan, table, dev, f)) for spec, (plan, f, _) in built.items()}
        timing = measure_on_device(files, dev, lat, table_path=Path(table_path) if table is not None else None,
                                   say=say, evaluation={"dataset_json": Path(dataset_json),
                                                        "images_dir": Path(images_dir), "limit": settings.limit,
                                                        "manifest_path": src.onnx.parent / "manifest.json"})
        for spec in built:
            on_device = timing.ap_on_device.get(spec)
            if on_device:  # the device's own AP; the host's stays in the record for comparison
                timing.per_plan[spec]["host_metrics"] = dict(evals[spec].metrics)
                evals[spec].metrics = dict(on_device["metrics"])
            sources[spec] = {"ap": dev.ap_source(settings.backend), "latency": timing.latency_sources[spec]}
    else:
        say(f"timing {len(plans)} plans on one pinned core: {lat.runs} runs each in {lat.repeats} interleaved rounds")
        timing = measure_interleaved({spec: f for spec, (_, f, _) in built.items()}, lat,
                                     on_round=lambda r, n: say(f"  round {r}/{n} done"))
    ref_spec = plans[0].spec()

    def p10(spec: str) -> float:
        return percentile(sorted(timing.stats[spec].samples_ms), 10)

    ref = {"p10": p10(ref_spec), "p50": float(timing.stats[ref_spec].p50_ms)}

    # ---- 7. the report
    results = []
    for spec, (plan, file, build_s) in built.items():
        st = timing.stats[spec]
        ev = evals[spec]
        results.append(PlanResult(
            spec=spec, precisions=dict(plan.precisions), name=plan.name, metrics=dict(ev.metrics),
            detections=ev.detections, runs=st.n,
            latency_ms={"p10": p10(spec), "p50": st.p50_ms, "mean": st.mean_ms, "min": st.min_ms,
                        "p90": st.p90_ms, "max": st.max_ms, "std": st.std_ms,
                        "per_round_p50": timing.per_round_p50[spec]},
            latency_ratio=float(st.p50_ms) / ref["p50"],
            latency_ratios={"p10": p10(spec) / ref["p10"], "p50": float(st.p50_ms) / ref["p50"]},
            file=file.name, file_sha256=sha256_file(file),
            seconds={"build": round(build_s, 2), "eval": ev.seconds}, sources=sources.get(spec, {}),
            device=timing.per_plan.get(spec, {}) if settings.device is not None else {}))
    images_evaluated = next(iter(evals.values())).images
    report = SweepReport(
        model={"name": manifest.model, "components": manifest.component_names(),
               "input_size": [(manifest.input or {}).get("height"), (manifest.input or {}).get("width")],
               "input": manifest.input, "source": str(source), "source_kind": kind,
               "checkpoint_sha256": (src.checkpoint or {}).get("sha256"), "onnx_sha256": onnx_sha,
               "onnx": str(src.onnx), "prepare_seconds": round(prep_s, 2)},
        dataset={"annotations": str(dataset_json), "annotations_sha256": sha256_file(dataset_json),
                 "images_dir": str(images_dir), "images": images_evaluated, "images_available": len(dataset.images),
                 "limit": settings.limit},
        backend=settings.backend,
        latency={"runs": lat.runs, "warmup": lat.warmup, "repeats": lat.repeats, "rewarm": lat.rewarm,
                 "clock": lat.clock, "interleaved": True, "core": timing.runtime.get("core"),
                 "threads": timing.runtime.get("threads_intra_op", 1), "runtime": timing.runtime,
                 "device_before": timing.device_before, "device_after": timing.device_after,
                 "target": settings.device.target if settings.device is not None else "local",
                 "statistic": getattr(timing, "statistic", "per-run latencies")},
        plans=results, calibration=calibration, tool_versions=_tool_versions(settings.backend),
        max_ap_drop=settings.max_ap_drop, numerics=_numerics_record(evals, timing))
    report.mark_pareto()
    return report


def _numerics_record(evals: dict[str, Any], timing) -> dict[str, Any]:
    """How int8 was computed for AP and for latency, read back from the runtimes, and the host."""
    from edgeseg.benchmark.cpu_isa import host_isa
    from edgeseg.runtimes.numerics import DESCRIPTIONS

    accuracy = sorted({ev.numerics for ev in evals.values()})
    latency = timing.runtime.get("numerics", "native")
    isa = host_isa()
    return {"accuracy": accuracy[0] if len(accuracy) == 1 else ",".join(accuracy), "latency": latency,
            "accuracy_description": DESCRIPTIONS.get(accuracy[0], "") if len(accuracy) == 1 else "",
            "latency_description": DESCRIPTIONS.get(latency, ""),
            "host_isa": isa.summary(), "host_int8_dot": isa.int8_dot,
            "ort_fused_int8_saturates": isa.ort_fused_int8_saturates}


def write_reports(report: SweepReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``sweep.json``, ``sweep.md`` and ``sweep_pareto.png`` in ``out_dir``: all three, or none."""
    import contextlib

    from edgeseg.quantize.sweep_plot import plot_pareto
    from edgeseg.utils.atomic import atomic_path

    from edgeseg.utils.outputs import mark_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT_NAMES[0], "markdown": out / REPORT_NAMES[1], "plot": out / REPORT_NAMES[2]}
    # Every file goes to a temporary sibling first; the renames happen only once all
    # three are written, so a failed plot never leaves a JSON that disagrees with it.
    with contextlib.ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in paths.items()}
        report.save(tmp["json"])
        tmp["markdown"].write_text(mark_text(report.to_markdown(), ".md"), encoding="utf-8")
        plot_pareto(report, tmp["plot"])
    return paths
