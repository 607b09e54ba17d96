"""COCO mask AP (pycocotools) for predictions from any runtime.

Two entry points:

* :func:`evaluate_detections`: already post-processed predictions (``Detection``: 0-based
  ``label``, ``score``, HxW bool ``mask`` at the image's size) -> AP figures.
* :func:`evaluate_artifact`: artifact folder / ONNX / TFLite / checkpoint -> run every
  image through the generic runtime with the manifest's preprocessing and the model's
  post-processing -> :class:`EvalResult`.

Figures are on COCO's 0-100 scale. A size bucket without ground truth gives ``None``
(pycocotools' -1), never a made-up 0. pycocotools' console chatter is captured, so
stdout stays clean for tables and JSON.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from edgeseg.data.coco import CocoDataset
from edgeseg.errors import EdgesegError

# pycocotools' COCOeval.stats order (12 figures for segm and bbox).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _figure(x: float) -> float | None:
    """pycocotools' -1 ("no ground truth here") -> None; else the 0-100 figure."""
    return None if x < 0 else round(float(x) * 100.0, 3)


def _encode_masks(masks: list[np.ndarray]) -> list[dict[str, Any]]:
    from edgeseg.data.rle import mask_api

    mask_utils = mask_api()

    stack = np.asfortranarray(np.stack(masks, axis=-1).astype(np.uint8))
    rles = mask_utils.encode(stack)  # one C call for all masks of an image
    for r in rles:
        if isinstance(r["counts"], bytes):
            r["counts"] = r["counts"].decode("ascii")  # JSON-ready
    return rles


def detections_to_results(dataset: CocoDataset, detections_by_image: Mapping[int, Sequence[Any]],
                          ) -> list[dict[str, Any]]:
    """COCO results list (``image_id``, ``category_id``, ``score``, RLE ``segmentation``)."""
    results: list[dict[str, Any]] = []
    for image_id, dets in detections_by_image.items():
        im = dataset.image(int(image_id))
        if not dets:
            continue
        masks = []
        for d in dets:
            m = np.asarray(d.mask)
            if m.shape != (im.height, im.width):
                raise EdgesegError(
                    f"a detection for image {image_id} has a {m.shape[1] if m.ndim == 2 else '?'}x"
                    f"{m.shape[0] if m.ndim == 2 else '?'} mask; the image is {im.width}x{im.height}",
                    "post-processing must resize masks to the original image size")
            masks.append(m.astype(bool))
        for d, rle in zip(dets, _encode_masks(masks)):
            score = float(d.score)
            if not np.isfinite(score):
                raise EdgesegError(f"a detection for image {image_id} has score {score}",
                                   "the model produced NaN/inf; check the artifact (parity, calibration)")
            results.append({"image_id": im.id, "category_id": dataset.categories.category_id_of(int(d.label)),
                            "score": score, "segmentation": rle})
    return results


def _empty_results_like(gt):
    """A pycocotools COCO with no annotations (``loadRes([])`` crashes on empty lists)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def _run_cocoeval(dataset: CocoDataset, results: list[dict[str, Any]], iou_type: str,
                  image_ids: Sequence[int]) -> dict[str, Any]:
    from edgeseg.data.rle import mask_api

    mask_api()  # a clear error when pycocotools is missing
    from pycocotools.cocoeval import COCOeval

    gt = dataset.coco_api()
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results) if results else _empty_results_like(gt)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    figures: dict[str, Any] = {name: _figure(v) for name, v in zip(STAT_NAMES, ev.stats)}
    # Per class: precision[T, R, K, area=all, maxDets=100], averaged where defined.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        name = dataset.categories.names[dataset.categories.label_of(cat_id)]
        per_class[name] = _figure(float(p[p > -1].mean())) if (p > -1).any() else None
    figures["per_class"] = per_class
    return figures


def evaluate_results(dataset: CocoDataset, results: list[dict[str, Any]],
                     image_ids: Iterable[int] | None = None, box: bool = False) -> dict[str, Any]:
    """AP figures for a COCO results list (mask RLE per result) over ``image_ids`` (all)."""
    ids = list(image_ids) if image_ids is not None else dataset.image_ids
    if not ids:
        raise EdgesegError("no images to evaluate", "evaluate at least one image")
    known = set(dataset.image_ids)
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise EdgesegError(f"results refer to image ids not in {dataset.annotation_file.name}: {unknown[:5]}",
                           "evaluate predictions against the annotation file they were made for")
    segm = [{k: r[k] for k in ("image_id", "category_id", "score", "segmentation")} for r in results]
    out = _run_cocoeval(dataset, segm, "segm", ids)
    out["images"] = len(ids)
    out["detections"] = len(results)
    if box:
        from edgeseg.data.rle import mask_api

        mask_utils = mask_api()
        boxes = []
        for r in results:
            rle = {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"]}
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            boxes.append({"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                          "bbox": [float(x) for x in mask_utils.toBbox(rle)]})
        box_figures = _run_cocoeval(dataset, boxes, "bbox", ids)
        out["box"] = {k: box_figures[k] for k in HEADLINE}
    return out


def evaluate_detections(dataset: CocoDataset, detections_by_image: Mapping[int, Sequence[Any]],
                        box: bool = False, image_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """Mask AP of post-processed detections.

    ``detections_by_image``: image id -> list of objects with ``label`` (0-based class
    index), ``score`` and ``mask`` (HxW bool at the image's size), e.g.
    ``edgeseg.models.contract.Detection``. Images evaluated: ``image_ids`` (default all
    of the dataset; an image with no entry counts as "nothing detected").
    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
    "ARm", "ARl", "per_class", "images", "detections"}`` (+ ``"box"`` with ``box=True``).
    """
    return evaluate_results(dataset, detections_to_results(dataset, detections_by_image), image_ids, box=box)


# --------------------------------------------------------------------------- artifacts
@dataclass
class EvalResult:
    """Accuracy of one artifact on one dataset (JSON via :meth:`to_dict`)."""

    artifact: str  # what the user passed
    file: str  # the file actually run
    backend: str
    model: str
    dataset: str
    images_dir: str
    images: int
    detections: int
    metrics: dict[str, float | None]  # AP, AP50, ... on 0-100; None = no ground truth in that bucket
    per_class: dict[str, float | None]
    precision: dict[str, Any] | None = None  # the artifact's precision plan, from the manifest
    box: dict[str, float | None] | None = None
    seconds: float = 0.0
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    # How int8 was computed (edgeseg.runtimes.numerics): "simulated" | "fused" on ONNX
    # Runtime, "native" elsewhere; and the host's int8 instruction path.
    numerics: str = "simulated"
    host_isa: str = ""

    @property
    def ap(self) -> float:
        return self.metrics["AP"] or 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        from edgeseg.utils.atomic import write_json

        return write_json(path, {"format": "edgeseg-eval", **self.to_dict()})


def predict_dataset(run: Callable[[np.ndarray], dict[str, np.ndarray]], dataset: CocoDataset, spec,
                    postprocess: Callable[[dict[str, np.ndarray], tuple[int, int]], list[Any]],
                    images: Sequence[Any] | None = None, description: str = "evaluating",
                    threads: int = 1) -> dict[int, list[Any]]:
    """Image id -> detections, for any way of running a model.

    ``run`` maps the preprocessed input tensor (``spec``: an ``InputSpec``) to the output
    dict; a runtime, or during training a closure around the PyTorch module, so the
    trainer measures AP exactly as ``edgeseg eval`` does. Decoding uses at most
    ``threads`` BLAS threads, as the model run does.
    """
    from edgeseg.data.preprocess import preprocess
    from edgeseg.utils.blas import blas_threads
    from edgeseg.utils.progress import track

    images = list(images) if images is not None else dataset.images
    detections: dict[int, list[Any]] = {}
    with blas_threads(threads):
        for im in track(images, description, total=len(images)):
            outputs = run(preprocess(dataset.load_image(im), spec))
            detections[im.id] = list(postprocess(outputs, (im.height, im.width)))
    return detections


def _check_classes(manifest, dataset: CocoDataset) -> None:
    n = (manifest.model_cfg or {}).get("num_classes")
    if n is not None and int(n) != dataset.num_classes:
        raise EdgesegError(
            f"the model predicts {n} classes but {dataset.annotation_file.name} has {dataset.num_classes} "
            f"categories ({', '.join(dataset.class_names)})",
            "evaluate on the dataset the model was trained for, or export/train it with "
            f"--num-classes {dataset.num_classes}")


def evaluate_artifact(artifact_path: str | os.PathLike, dataset_json: str | os.PathLike,
                      images_dir: str | os.PathLike, backend: str | None = None, limit: int | None = None,
                      threads: int = 1, box: bool = False,
                      postprocess: Callable[[dict[str, np.ndarray], tuple[int, int]], list[Any]] | None = None,
                      numerics: str = "simulated") -> EvalResult:
    """Run an artifact over a COCO dataset and measure mask AP.

    The manifest (beside the artifact, or embedded in an edgeseg checkpoint) says how to
    preprocess (input spec) and which model's post-processing to apply; the runtime is
    chosen by suffix unless ``backend`` is given. ``limit`` evaluates the first N images.
    ``numerics``: how ONNX Runtime computes int8 (simulated Q/DQ by default, the same AP on
    every host; ``fused`` for ONNX Runtime's kernels of this CPU).
    """
    from edgeseg.benchmark.cpu_isa import host_isa
    from edgeseg.export.manifest import input_spec_of, manifest_for_artifact, verify_artifact
    from edgeseg.runtimes.base import load_runtime, resolve_artifact
    from edgeseg.runtimes.numerics import check_numerics, warn_if_saturating

    if limit is not None and limit < 1:
        raise EdgesegError(f"--limit must be at least 1, got {limit}", "drop --limit to evaluate every image")
    check_numerics(numerics)
    # Dataset first: a wrong path fails in milliseconds, before a model is loaded.
    dataset = CocoDataset(dataset_json, images_dir)
    images = dataset.images[:limit] if limit else dataset.images
    file = resolve_artifact(artifact_path)
    verify_artifact(file)  # a foreign file beside a manifest would be decoded as the recorded model
    manifest = manifest_for_artifact(file)
    _check_classes(manifest, dataset)
    spec = input_spec_of(manifest)
    if postprocess is None:
        from edgeseg.models.contract import decoder_for_manifest

        postprocess = decoder_for_manifest(manifest)
    info = manifest.artifacts.get(file.name, {}) if manifest.artifacts else {}
    start = time.perf_counter()
    with load_runtime(file, backend=backend, threads=threads, numerics=numerics) as runtime:
        if _may_hold_int8(info):
            warn_if_saturating(runtime.numerics, "mask AP")
        input_name = spec.name
        names = [i.name for i in runtime.inputs()]
        if input_name not in names and len(names) == 1:
            input_name = names[0]  # converters (TFLite) may rename the input
        detections = predict_dataset(lambda x: runtime.run({input_name: x}), dataset, spec, postprocess,
                                     images, threads=threads)
        backend_name = runtime.backend
        numerics_used = runtime.numerics
    figures = evaluate_detections(dataset, detections, box=box, image_ids=[im.id for im in images])
    return EvalResult(
        artifact=str(artifact_path), file=str(file), backend=backend_name, model=manifest.model,
        dataset=str(dataset_json), images_dir=str(images_dir), images=figures["images"],
        detections=figures["detections"], metrics={k: figures[k] for k in STAT_NAMES},
        per_class=figures["per_class"], precision=info.get("precision"), box=figures.get("box"),
        seconds=round(time.perf_counter() - start, 3), threads=threads,
        numerics=numerics_used, host_isa=host_isa().summary(),
    )


def _may_hold_int8(artifact_info: Mapping[str, Any]) -> bool:
    """Whether the manifest's record of a file allows int8 (a bare file: it may)."""
    precisions = (artifact_info.get("precision") or {}).get("precisions")
    return not precisions or "int8" in precisions.values()
