"""COCO mask AP: perfect = 100, empty = 0, hand-computed cases, error paths, the
artifact pipeline and `edgeseg eval` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from edgeseg.data.coco import CocoDataset
from edgeseg.data.rle import encode_uncompressed
from edgeseg.data.synthetic import SynthConfig, generate
from edgeseg.errors import EdgesegError
from edgeseg.eval.coco import EvalResult, evaluate_artifact, evaluate_detections


@dataclass
class Det:  # the shape of edgeseg.models.contract.Detection
    label: int
    score: float
    mask: np.ndarray


def edgeseg(*args):
    env = {**os.environ, "EDGESEG_PROGRESS": "0", "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Synthetic val split at the default 256x256, so every COCO size bucket has objects."""
    root = tmp_path_factory.mktemp("eval") / "shapes"
    generate(root, SynthConfig(train=0, val=8, videos=0, val_videos=0, seed=1))
    return root


@pytest.fixture(scope="module")
def dataset(shapes):
    return CocoDataset(shapes / "coco/annotations/val.json", shapes / "coco/val")


def perfect(dataset, score=0.9):
    out = {}
    for sample in dataset:
        out[sample.image_id] = [Det(int(l), score, m) for l, m in zip(sample.labels, sample.masks)]
    return out


def test_perfect_predictions_give_100(dataset):
    r = evaluate_detections(dataset, perfect(dataset), box=True)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100"):
        assert r[key] == 100.0, key
    assert set(r["per_class"]) == {"circle", "triangle", "rectangle", "star"}
    assert all(v == 100.0 for v in r["per_class"].values())
    assert r["box"]["AP"] == 100.0
    assert r["images"] == 8 and r["detections"] == sum(len(v) for v in perfect(dataset).values())


def test_empty_predictions_give_0(dataset):
    r = evaluate_detections(dataset, {})
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR100"):
        assert r[key] == 0.0, key
    r = evaluate_detections(dataset, {i: [] for i in dataset.image_ids})
    assert r["AP"] == 0.0 and r["detections"] == 0


def test_wrong_classes_give_0(dataset):
    shifted = {k: [Det((d.label + 1) % 4, d.score, d.mask) for d in v] for k, v in perfect(dataset).items()}
    assert evaluate_detections(dataset, shifted)["AP"] == 0.0


# ----------------------------------------------------------------------- hand-computed
def tiny_dataset(tmp_path, masks_by_image, categories=((1, "a"),), size=(20, 20)):
    """COCO file + blank PNGs: masks_by_image = [[(category_id, mask), ...] per image]."""
    from PIL import Image

    h, w = size
    images, anns = [], []
    (tmp_path / "img").mkdir(exist_ok=True)
    for i, objs in enumerate(masks_by_image, start=1):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        for cat, m in objs:
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": 0,
                         "segmentation": encode_uncompressed(m), "area": float(m.sum()),
                         "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": c, "name": n} for c, n in categories]}))
    return CocoDataset(ann, tmp_path / "img")


def box(y0, y1, x0, x1, size=(20, 20)):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_crossing_known_thresholds(tmp_path):
    # Prediction 10x7 inside a 10x10 object: IoU 0.7 -> hits at 0.50..0.70 (5 of 10).
    ds = tiny_dataset(tmp_path, [[(1, box(0, 10, 0, 10))]])
    r = evaluate_detections(ds, {1: [Det(0, 0.9, box(0, 10, 0, 7))]})
    assert r["AP"] == pytest.approx(50.0) and r["AP50"] == 100.0 and r["AP75"] == 0.0


def test_higher_scored_false_positive_halves_precision(tmp_path):
    ds = tiny_dataset(tmp_path, [[(1, box(0, 10, 0, 10))]])
    fp, tp = Det(0, 0.9, box(12, 18, 12, 18)), Det(0, 0.5, box(0, 10, 0, 10))
    assert evaluate_detections(ds, {1: [tp, fp]})["AP"] == pytest.approx(50.0)  # FP ranked first
    fp.score = 0.1
    assert evaluate_detections(ds, {1: [tp, fp]})["AP"] == 100.0


def test_size_bucket_without_ground_truth_is_none_not_zero(tmp_path):
    ds = tiny_dataset(tmp_path, [[(1, box(0, 10, 0, 10))]])  # one small object only
    r = evaluate_detections(ds, perfect(ds))
    assert r["APs"] == 100.0 and r["APm"] is None and r["APl"] is None


def test_category_ids_map_to_labels_sorted_by_id(tmp_path):
    # categories listed out of order with gaps: label 0 = id 3, 1 = id 5, 2 = id 9
    ds = tiny_dataset(tmp_path, [[(9, box(0, 10, 0, 10)), (3, box(12, 20, 12, 20))]],
                      categories=((9, "nine"), (3, "three"), (5, "five")))
    assert ds.categories.ids == [3, 5, 9] and ds.class_names == ["three", "five", "nine"]
    assert ds.categories.label_of(9) == 2 and ds.categories.category_id_of(0) == 3
    r = evaluate_detections(ds, {1: [Det(2, 0.9, box(0, 10, 0, 10)), Det(0, 0.8, box(12, 20, 12, 20))]})
    assert r["AP"] == 100.0 and r["per_class"]["five"] is None


def test_subset_of_images(tmp_path):
    ds = tiny_dataset(tmp_path, [[(1, box(0, 10, 0, 10))], [(1, box(5, 15, 5, 15))]])
    dets = {1: [Det(0, 0.9, box(0, 10, 0, 10))]}
    assert evaluate_detections(ds, dets)["AP"] < 100.0  # image 2 missed
    assert evaluate_detections(ds, dets, image_ids=[1])["AP"] == 100.0


# ----------------------------------------------------------------------- errors
def test_prediction_errors(dataset):
    im = dataset.images[0]
    with pytest.raises(EdgesegError, match="post-processing must resize masks") as e:
        evaluate_detections(dataset, {im.id: [Det(0, 0.5, np.zeros((8, 8), bool))]})
    assert "8x8" in e.value.problem
    with pytest.raises(EdgesegError, match="out of range for 4 categories"):
        evaluate_detections(dataset, {im.id: [Det(7, 0.5, np.zeros((im.height, im.width), bool))]})
    with pytest.raises(EdgesegError, match="image id 12345"):
        evaluate_detections(dataset, {12345: [Det(0, 0.5, np.zeros((im.height, im.width), bool))]})
    with pytest.raises(EdgesegError, match="NaN"):
        evaluate_detections(dataset, {im.id: [Det(0, float("nan"), np.zeros((im.height, im.width), bool))]})


# ----------------------------------------------------------------------- artifacts
def _tiny_artifact(folder, height=64, width=64, num_classes=4):
    """An artifact folder the generic runtime opens: a 1-node ONNX + manifest."""
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.data.preprocess import InputSpec
    from edgeseg.export.manifest import Manifest

    folder.mkdir(parents=True)
    node = helper.make_node("ReduceMean", ["image"], ["energy"], keepdims=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                           [1, 3, height, width])],
                              [helper.make_tensor_value_info("energy", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, folder / "fake.onnx")
    m = Manifest(model="fake_model", model_cfg={"num_classes": num_classes},
                 input=InputSpec(height=height, width=width).to_dict())
    m.add_artifact("fake.onnx", kind="onnx", primary=True, precision={"name": "fp32", "spec": "net=fp32"})
    m.save(folder)
    return folder


def test_evaluate_artifact_runs_every_image_through_runtime_and_postprocess(dataset, shapes, tmp_path):
    art = _tiny_artifact(tmp_path / "art")
    gt = perfect(dataset)
    seen = []

    def oracle(outputs, image_hw):
        # The runtime really ran: its output is the mean of the normalised image.
        assert set(outputs) == {"energy"} and np.isfinite(outputs["energy"]).all()
        image_id = dataset.images[len(seen)].id  # images are evaluated in dataset order
        seen.append(image_hw)
        return gt[image_id]

    r = evaluate_artifact(art, shapes / "coco/annotations/val.json", shapes / "coco/val", limit=5,
                          postprocess=oracle)
    assert isinstance(r, EvalResult)
    assert len(seen) == 5 and all(hw == (256, 256) for hw in seen)
    assert r.images == 5 and r.metrics["AP"] == 100.0
    assert r.backend == "onnxruntime" and r.model == "fake_model" and r.file.endswith("fake.onnx")
    assert r.precision == {"name": "fp32", "spec": "net=fp32"}
    out = r.save(tmp_path / "res" / "r.json")
    d = json.loads(out.read_text())
    assert d["metrics"]["AP"] == 100.0 and d["images"] == 5 and d["artifact"] == str(art)

    empty = evaluate_artifact(art / "fake.onnx", shapes / "coco/annotations/val.json", shapes / "coco/val",
                              postprocess=lambda outputs, hw: [])
    assert empty.metrics["AP"] == 0.0 and empty.images == 8 and empty.detections == 0


def test_predict_dataset_feeds_preprocessed_images_to_any_callable(dataset):
    from edgeseg.data.preprocess import InputSpec
    from edgeseg.eval.coco import predict_dataset

    spec = InputSpec(height=32, width=64)
    shapes_seen = []

    def run(x):  # e.g. a closure around a PyTorch module during training
        shapes_seen.append(x.shape)
        return {"x": x}

    gt = perfect(dataset)
    ids = iter(dataset.image_ids[:3])
    dets = predict_dataset(run, dataset, spec, lambda out, hw: gt[next(ids)], images=dataset.images[:3])
    assert shapes_seen == [(1, 3, 32, 64)] * 3 and list(dets) == dataset.image_ids[:3]
    assert evaluate_detections(dataset, dets, image_ids=list(dets))["AP"] == 100.0


def test_decoding_runs_with_the_threads_asked_for_not_blas_default(dataset):
    """OpenBLAS's default pool (one thread per core) spun against a busy machine and made
    FastInst's mask decoding 10x slower; decoding gets the eval's --threads."""
    from threadpoolctl import threadpool_info

    from edgeseg.data.preprocess import InputSpec
    from edgeseg.eval.coco import predict_dataset

    def blas_threads_now(outputs, hw):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return []

    for threads in (1, 2):
        seen: list[set[int]] = []
        predict_dataset(lambda x: {"x": x}, dataset, InputSpec(height=32, width=32), blas_threads_now,
                        images=dataset.images[:2], threads=threads)
        assert seen == [{threads}] * 2


def test_evaluate_artifact_refuses_a_class_count_mismatch(shapes, tmp_path):
    art = _tiny_artifact(tmp_path / "art80", num_classes=80)
    with pytest.raises(EdgesegError, match="predicts 80 classes") as e:
        evaluate_artifact(art, shapes / "coco/annotations/val.json", shapes / "coco/val",
                          postprocess=lambda o, hw: [])
    assert "--num-classes 4" in e.value.fix


def test_evaluate_artifact_bad_limit(shapes, tmp_path):
    with pytest.raises(EdgesegError, match="--limit must be at least 1"):
        evaluate_artifact(tmp_path, shapes / "coco/annotations/val.json", shapes / "coco/val", limit=0)


@pytest.mark.slow
def test_cli_eval_end_to_end_on_an_exported_mobileinst(shapes, tmp_path):
    art = tmp_path / "mobileinst"
    res = edgeseg("export", "mobileinst_test", "--input-size", 128, "--num-classes", 4, "-o", art)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "reports" / "eval.json"
    # --images defaults to coco/val beside coco/annotations/val.json
    res = edgeseg("eval", art, "--dataset", shapes / "coco/annotations/val.json", "--limit", 3, "--box", "-o", out)
    assert res.returncode == 0, res.stderr
    assert "AP50" in res.stdout and "circle" in res.stdout
    d = json.loads(out.read_text())
    assert d["images"] == 3 and d["model"] == "mobileinst_test" and d["backend"] == "onnxruntime"
    assert d["file"].endswith("mobileinst_test.onnx")
    assert set(d["metrics"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    # random weights: the figures exist and are on the 0-100 scale (near 0, honestly)
    assert all(v is None or 0.0 <= v <= 100.0 for v in d["metrics"].values())
    assert d["precision"]["name"] == "fp32" and set(d["box"]) >= {"AP", "AP50"}

    # the bare .onnx file works the same way (manifest found beside it), with the
    # model's own post-processing, and gives the same figures on the same images
    again = evaluate_artifact(art / "mobileinst_test.onnx", shapes / "coco/annotations/val.json",
                              shapes / "coco/val", limit=3)
    assert again.metrics == d["metrics"] and again.detections == d["detections"]


def test_cli_eval_errors_are_one_clear_message(shapes, tmp_path):
    art = _tiny_artifact(tmp_path / "art")
    res = edgeseg("eval", art, "--dataset", tmp_path / "missing.json", "--images", shapes / "coco/val",
                  "-o", tmp_path / "r.json")
    assert res.returncode != 0
    assert "annotation file" in res.stderr and "does not exist" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr
    res = edgeseg("eval", art, "--dataset", shapes / "coco/annotations/val.json", "--images", tmp_path)
    assert res.returncode != 0 and "are not in" in res.stderr and "Traceback" not in res.stderr
    lone = tmp_path / "lone.json"
    lone.write_text((shapes / "coco/annotations/val.json").read_text())
    res = edgeseg("eval", art, "--dataset", lone)
    assert res.returncode != 0 and "pass --images" in res.stderr
    assert not (tmp_path / "r.json").exists()


def test_cli_eval_help_shows_an_example():
    res = edgeseg("eval", "--help")
    assert res.returncode == 0 and "Examples:" in res.stdout and "edgeseg eval" in res.stdout
