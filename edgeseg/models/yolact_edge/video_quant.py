"""Calibration and quantization of YolactEdge's video graphs (key, flow, warped).

The ``key`` graph is the frame graph with three more outputs, but the ``flow`` and
``warped`` graphs take features as inputs (the contract's ``TensorSpec`` extra inputs),
so a table measured on images through the frame graph cannot cover them. Each graph is
calibrated on its own feeds, made by running the FP32 graphs of the export the way the
tracker does:

* key: the calibration image;
* flow: a *later frame* and the key graph's ``lat3`` of the image. With still images
  there is no later frame: the image translated by ``SHIFT`` pixels (edges repeated)
  stands in for motion between keyframe and frame, as the paper calibrates FeatFlowNet
  on pairs of video frames;
* warped: the flow graph's ``lat3`` and the host warp of the key graph's ``p4``/``p5``.

Then every graph is quantized with the frame graph's plan restricted to its components;
``flow_net`` (which the frame plan does not name) runs at ``flow_precision``, by default
the backbone's (the paper: INT8 FeatFlowNet with an INT8 backbone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.models.yolact_edge.video import ROLES, pick_warp_graphs
from edgeseg.models.yolact_edge.warp import warp_features

SHIFT = (6, 4)  # (dy, dx) pixels between a calibration "keyframe" and its "later frame"


def shifted(image: np.ndarray, dy: int = SHIFT[0], dx: int = SHIFT[1]) -> np.ndarray:
    """The image moved down by ``dy`` and right by ``dx`` pixels, borders repeated."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)), mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return padded[y0:y0 + h, x0:x0 + w]


class VideoFeeds:
    """Re-iterable calibration feeds of one video graph (recomputed on every pass)."""

    def __init__(self, role: str, files: list[Path], spec, runtimes: dict[str, Any]):
        self.role, self.files, self.spec, self.rt = role, files, spec, runtimes

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from edgeseg.data.preprocess import load_image, preprocess

        name = self.spec.name
        for path in self.files:
            image = load_image(path)
            key_x = preprocess(image, self.spec)
            if self.role == "key":
                yield {name: key_x}
                continue
            cur_x = preprocess(shifted(image), self.spec)
            k = self.rt["key"].run({name: key_x})
            flow_feed = {name: cur_x, "key_lat3": k["lat3"]}
            if self.role == "flow":
                yield flow_feed
                continue
            f = self.rt["flow"].run(flow_feed)
            yield {"lat3": f["lat3"], "w4": warp_features(k["p4"], f["flow4"], f["scale4"], f["bias4"]),
                   "w5": warp_features(k["p5"], f["flow5"], f["scale5"], f["bias5"])}


def calibration_files(table) -> list[Path]:
    """The images a table was computed on (recorded in its settings by ``edgeseg calibrate``)."""
    root, names = table.settings.get("images_root"), table.settings.get("images")
    if not root or not names:
        raise EdgesegError("the calibration table does not record its images",
                           "calibrate the frame graph with `edgeseg calibrate` (it records them)")
    files = [Path(root) / n for n in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise EdgesegError(f"{len(missing)} calibration images are gone (e.g. {missing[0]})",
                           "re-calibrate the frame graph on images that exist")
    return files


def calibrate_video_graphs(folder: str | os.PathLike, graphs: dict[str, str], files: list[Path],
                           method: str = "kl") -> dict[str, Any]:
    """One :class:`~edgeseg.quantize.cache.CalibrationTable` per FP32 video graph (role -> table)."""
    from edgeseg.export.manifest import Manifest, input_spec_of
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.calibrate import HistogramCalibrator
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from edgeseg.utils.hashing import sha256_file, sha256_lines

    folder = Path(folder)
    spec = input_spec_of(Manifest.load(folder))
    runtimes = {r: OnnxRuntimeRuntime(folder / graphs[r], threads=1) for r in ("key", "flow")}
    tables = {}
    for role in ROLES:
        path = folder / graphs[role]
        calibrator = HistogramCalibrator(path)
        stats = calibrator.collect(VideoFeeds(role, files, spec, runtimes), total=len(files))
        tables[role] = CalibrationTable(
            method=method, ranges=calibrator.compute(method), num_images=stats.images,
            model_sha256=sha256_file(path), images_sha256=sha256_lines([f.as_posix() for f in files]),
            settings={"video_graph": role, "pairs": f"image and the image shifted by {SHIFT} (dy, dx) pixels",
                      "images": [f.name for f in files], "model_file": path.name})
    return tables


def video_plan(frame_precisions: dict[str, str], components: list[str], flow_precision: str | None = None):
    from edgeseg.quantize.plan import PrecisionPlan

    from edgeseg.models.yolact_edge.family import COMPONENTS

    out = {}
    for c in sorted(components, key=lambda c: COMPONENTS.index(c) if c in COMPONENTS else len(COMPONENTS)):
        if c in frame_precisions:
            out[c] = frame_precisions[c]
        elif c == "flow_net":
            out[c] = flow_precision or frame_precisions.get("backbone", "fp32")
        else:
            raise EdgesegError(f"the frame plan does not cover {c}", "quantize the frame graph with a full plan")
    return PrecisionPlan(out)


def video_name(frame_file: str, role: str) -> str:
    """``m.yolact_edge.onnx`` -> ``m.key.yolact_edge.onnx`` (the export's naming, plan kept)."""
    stem, dot, rest = frame_file.partition(".")
    return f"{stem}.{role}.{rest}" if dot else f"{stem}.{role}"


def quantize_video_graphs(folder: str | os.PathLike, frame_file: str, table=None,
                          flow_precision: str | None = None) -> dict[str, str]:
    """Write (and record in the manifest) the key / flow / warped graphs at the plan of the
    quantized ``frame_file``; returns role -> file name."""
    import onnx

    from edgeseg.export.manifest import Manifest
    from edgeseg.export.tags import nodes_by_component
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.quantize.qdq import quantize_model
    from edgeseg.utils import atomic
    from edgeseg.utils.hashing import sha256_file

    folder = Path(folder)
    manifest = Manifest.load(folder)
    entry = manifest.artifact(frame_file)
    source = entry.get("source")
    if not source or source not in manifest.artifacts:
        raise EdgesegError(f"{frame_file} is not a quantized frame graph recorded with its source",
                           "quantize the exported frame graph with `edgeseg quantize`")
    _, fp32 = pick_warp_graphs(manifest, source)
    missing = [r for r in ROLES if fp32[r] is None]
    if missing:
        raise EdgesegError(f"the export has no FP32 {', '.join(missing)} graph", "re-export with `edgeseg export MODEL`")
    precisions = (entry.get("precision") or {}).get("precisions") or {}
    calibration = entry.get("calibration") or {}
    needs_int8 = "int8" in precisions.values() or (flow_precision == "int8")
    tables: dict[str, Any] = {}
    if needs_int8:
        if table is None:
            name = calibration.get("table")
            if not name or not (folder / name).is_file():
                raise EdgesegError(f"{frame_file} has int8 components but its calibration table is not in {folder}",
                                   "pass the table used for it (table=...), or re-quantize with a table in the folder")
            table = CalibrationTable.load(folder / name)
        tables = calibrate_video_graphs(folder, fp32, calibration_files(table), table.method)
    activation = (entry.get("quantization") or {}).get("activation_dtype", "uint8")
    made: dict[str, str] = {}
    for role in ROLES:
        model = load_onnx(folder / fp32[role])
        comps = [c for c in nodes_by_component(model) if c]
        plan = video_plan(precisions, comps, flow_precision)
        plan.name = (entry.get("precision") or {}).get("name")
        qmodel, report = quantize_model(model, plan, tables.get(role) if plan.needs_calibration else None, activation)
        out_name = video_name(frame_file, role)
        with atomic.atomic_path(folder / out_name) as tmp:
            onnx.save(qmodel, os.fspath(tmp))
        table_name = None
        if role in tables and plan.needs_calibration:
            table_name = f"{Path(out_name).stem}.calib.json"
            tables[role].save(folder / table_name)
        made[role] = out_name
        manifest.add_artifact(out_name, kind="onnx", graph=role, primary=False, source=fp32[role],
                              precision=plan.to_dict(), quantization=report.to_dict(), sha256=sha256_file(folder / out_name),
                              calibration=None if table_name is None else {"table": table_name, "method": tables[role].method,
                                                                          "num_images": tables[role].num_images},
                              frame_graph=frame_file)
    manifest.artifact(frame_file)["video_graphs"] = dict(made)
    manifest.record("quantize-video-graphs", frame_graph=frame_file, outputs=made)
    manifest.save(folder)
    return made


SAMPLE_PAIRS = 8  # sample inputs given to a TFLite conversion of the flow / warped graph


def graph_settings(settings, plan, table, plans_only: bool = False):
    """The family's ``graph_calibration`` hook (:mod:`edgeseg.export.graph_settings`): the
    key / flow / warped graphs of an export get the frame plan plus ``flow_net`` (at the
    backbone's precision), their own tables (:func:`calibrate_video_graphs` on the frame
    table's images) and, for TFLite, real sample values of their feature inputs."""
    from dataclasses import replace

    from edgeseg.export.manifest import Manifest, input_spec_of
    from edgeseg.export.tags import nodes_by_component
    from edgeseg.quantize.calibrate import load_onnx
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    if plans_only:  # a preflight: the graph's own tags say what it holds (no manifest needed)
        out = []
        for s in settings:
            comps = [c for c in nodes_by_component(load_onnx(s.path)) if c]
            extra = {c: p for c, p in video_plan(plan.precisions, comps).precisions.items() if c not in plan.precisions}
            out.append(replace(s, plan=PrecisionPlan({**plan.precisions, **extra}, name=plan.name)))
        return out
    folder = settings[0].path.parent
    manifest = Manifest.load(folder)
    roles = {s.path.name: manifest.artifacts.get(s.path.name, {}).get("graph") for s in settings}
    video = [s for s in settings if roles[s.path.name] in ROLES]
    if not video:
        return settings
    plans = {}
    # The manifest's components (the frame graph's) at the given plan, plus what a graph
    # adds (flow_net: as the plan says when it names it, else at the backbone's precision).
    base = {c: plan.precisions[c] for c in manifest.component_names() if c in plan.precisions}
    for s in video:
        comps = [c for c in nodes_by_component(load_onnx(s.path)) if c]
        extra = {c: plan.precisions.get(c) or p for c, p in video_plan(base, comps).precisions.items()
                 if c not in base}
        plans[s.path.name] = PrecisionPlan({**base, **extra}, name=plan.name)
    tables: dict[str, Any] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    files = {roles[s.path.name]: s.path.name for s in video}
    _, fp32 = pick_warp_graphs(manifest)
    for role in ROLES:
        files.setdefault(role, fp32[role])
    missing = [r for r in ROLES if not files.get(r)]
    if missing:
        raise EdgesegError(f"the export lacks its {', '.join(missing)} graph", "re-export with `edgeseg export MODEL`")
    calib_files = calibration_files(table) if table is not None else None
    if any(p.needs_calibration for p in plans.values()):
        if table is None:
            raise EdgesegError("the plan has int8 components but no calibration table was given",
                               "pass --calib DIR (the frame graph is calibrated there, the video graphs from it)")
        tables = calibrate_video_graphs(folder, files, calib_files, table.method)
    if calib_files:
        spec = input_spec_of(manifest)
        runtimes = {r: OnnxRuntimeRuntime(folder / files[r], threads=1) for r in ("key", "flow")}
        for role in ("flow", "warped"):
            feeds = list(zip(range(SAMPLE_PAIRS), VideoFeeds(role, calib_files, spec, runtimes)))
            names = [n for n in feeds[0][1] if n != spec.name]
            samples[role] = {n: np.concatenate([f[n] for _, f in feeds]) for n in names}
    out = []
    for s in settings:
        role = roles[s.path.name]
        if role not in ROLES:
            out.append(s)
            continue
        p = plans[s.path.name]
        out.append(replace(s, plan=p, table=tables.get(role) if p.needs_calibration else None,
                           check_table=True, extra_samples=samples.get(role)))
    return out
