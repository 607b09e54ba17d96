"""The graphs the INT8 benchmarks compare, built once per size (shared by int8_profile.py and int8_vs_ort.py).

Per size, in ``DIR/<size>/``:

* ``256``: the shipped checkpoint ``mobileinst_topformer_synth`` (real AP on the synthetic
  val split); other sizes: ``mobileinst_topformer`` with random weights (latency and size
  only, as ``benchmarks/artifact_sizes.py``);
* one KL calibration (ours) on ``--calib-num`` images of the train split;
* ``fp32``; ours: every plan asked for (default ``int8`` and the model's ``mixed`` preset);
* ONNX Runtime's ``quantize_static`` on the same calibration images (QDQ, per-channel,
  MinMax, its default op types): ``ort_s8`` with its default int8 activations and
  ``ort_u8`` with the uint8 activations its documentation advises for x86;
* optionally ``ort_ours``: ``quantize_static`` fed our table (symmetric overrides) with the
  nodes of non-INT8 components excluded: the alternative to our writer that issue 20
  asked to decide by measurement;
* optionally ``before_*``: the same plans written by another edgeseg checkout (``main``
  before the int8 chains), run in a subprocess with that checkout first on the path.

Every file is recorded in the folder's manifest, so ``edgeseg eval`` / ``bench`` accept it.
Files are reused when present (delete the folder to rebuild).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIPPED = "mobileinst_topformer_synth"
RANDOM = "mobileinst_topformer"
DATA = Path(os.environ.get("EDGESEG_SHAPES", "/work/data/shapes8k/coco"))


def export_model(size: int, folder: Path) -> Path:
    """The FP32 frame graph at ``size`` (the shipped checkpoint at its own 256)."""
    from edgeseg.export.onnx import export_onnx
    from edgeseg.models import create_model

    name = SHIPPED if size == 256 else RANDOM
    onnx_path = folder / f"{name}.onnx"
    if onnx_path.exists():
        return onnx_path
    if name == SHIPPED:
        from edgeseg.export.manifest import manifest_for_artifact
        from edgeseg.models.checkpoints import load_weights
        from edgeseg.models.pretrained import zoo_checkpoint

        ckpt = zoo_checkpoint(SHIPPED)
        cfg = dict(manifest_for_artifact(ckpt).model_cfg or {})
        if isinstance(cfg.get("input_size"), list):
            cfg["input_size"] = tuple(cfg["input_size"])
        net = create_model(manifest_for_artifact(ckpt).model, **cfg)
        load_weights(net, ckpt)
    else:
        net = create_model(RANDOM, input_size=(size, size))
    net.eval()
    res = export_onnx(net, folder, graphs=("frame",))
    return res.onnx_path


def record(folder: Path, path: Path, label: str, precisions: dict[str, str] | None) -> None:
    """List ``path`` in the folder's manifest (with its sha256) so edgeseg's verbs accept it."""
    from edgeseg.export.manifest import Manifest
    from edgeseg.utils.hashing import sha256_file

    m = Manifest.load(folder)
    info: dict[str, Any] = {"kind": "onnx", "graph": "frame", "sha256": sha256_file(path),
                            "written_for": f"benchmark:{label}"}
    if precisions:
        info["precision"] = {"precisions": precisions}
    m.add_artifact(path.name, **info)
    m.save(folder)


def calibration_feeds(onnx_path: Path, num: int):
    from edgeseg.data.images import select_images, spec_for_model

    spec, _ = spec_for_model(onnx_path)
    return select_images(DATA / "train", spec, num=num, seed=0)


def prepare(size: int, root: Path, plans: list[str], calib_num: int = 32, ort_variants: tuple[str, ...] = ("s8", "u8"),
            with_ort_ours: bool = False, before_checkout: Path | None = None, log=print) -> dict[str, Path]:
    """Build (or reuse) every graph for ``size``; returns label -> file, FP32 first."""
    import onnx

    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.cache import CalibrationTable
    from edgeseg.quantize.pipeline import run_calibration
    from edgeseg.quantize.qdq import quantize_file

    folder = root / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    src = export_model(size, folder)
    files: dict[str, Path] = {"fp32": src}
    table_path = folder / f"{src.stem}.kl.calib.json"
    if not table_path.exists():
        log(f"[{size}] calibrating (KL, {calib_num} images)")
        run_calibration(src, DATA / "train", method="kl", num=calib_num, out=table_path, threads=1)
    table = CalibrationTable.load(table_path)
    manifest = Manifest.load(folder)
    for spec in plans:
        plan = manifest.plan(spec)
        out = folder / f"{src.stem}.{plan.file_label()}.onnx"
        if not out.exists():
            log(f"[{size}] quantizing {plan.file_label()} ({plan.spec()})")
            quantize_file(src, plan, table, out)
            record(folder, out, "edgeseg", plan.precisions)
        files[spec] = out
    for variant in ort_variants:
        out = folder / f"{src.stem}.ort_{variant}.onnx"
        if not out.exists():
            from edgeseg.quantize.ort_reference import quantize_static_reference

            log(f"[{size}] ONNX Runtime quantize_static ({variant} activations, {calib_num} images)")
            quantize_static_reference(src, out, calibration_feeds(src, calib_num).feeds(),
                                      activation_type={"s8": "int8", "u8": "uint8"}[variant])
            record(folder, out, f"quantize_static_{variant}", None)
        files[f"ort_{variant}"] = out
    if with_ort_ours:
        from edgeseg.export.tags import get_component
        from edgeseg.quantize.ort_reference import quantize_static_reference

        for spec in plans:
            plan = manifest.plan(spec)
            out = folder / f"{src.stem}.ort_ours.{plan.file_label()}.onnx"
            if not out.exists():
                log(f"[{size}] quantize_static fed our table, {plan.file_label()}")
                model = onnx.load(os.fspath(src))
                exclude = [n.name for n in model.graph.node if plan.precisions.get(get_component(n)) != "int8"]
                ranges = {k: v.amax for k, v in table.ranges.items()}
                quantize_static_reference(src, out, calibration_feeds(src, 2).feeds(), nodes_to_exclude=exclude,
                                          ranges=ranges, activation_type="uint8")
                if plan.precisions and "fp16" in plan.precisions.values():
                    _fp16_after(out, plan)
                record(folder, out, "quantize_static_our_ranges", plan.precisions)
            files[f"ort_ours:{spec}"] = out
    if before_checkout is not None:
        for spec in plans:
            plan = manifest.plan(spec)
            out = folder / f"{src.stem}.before.{plan.file_label()}.onnx"
            if not out.exists():
                log(f"[{size}] {plan.file_label()} written by {before_checkout}")
                code = ("import sys; from edgeseg.quantize.cache import CalibrationTable; "
                        "from edgeseg.quantize.plan import PrecisionPlan; from edgeseg.quantize.qdq import quantize_file; "
                        "import json; p = PrecisionPlan(json.loads(sys.argv[2])); "
                        "quantize_file(sys.argv[1], p, CalibrationTable.load(sys.argv[3]), sys.argv[4])")
                env = {**os.environ, "PYTHONPATH": str(before_checkout)}
                # Absolute paths: the subprocess runs in the other checkout.
                subprocess.run([sys.executable, "-c", code, str(src.resolve()), json.dumps(plan.precisions),
                                str(table_path.resolve()), str(out.resolve())], check=True, env=env,
                               cwd=str(before_checkout))
                record(folder, out, f"edgeseg@{before_checkout}", plan.precisions)
            files[f"before:{spec}"] = out
    return files


def _fp16_after(path: Path, plan) -> None:
    """fp16 components of a plan, converted by our writer after ONNX Runtime quantized the rest."""
    import onnx

    from edgeseg.export.tags import get_component, set_component
    from edgeseg.quantize.plan import PrecisionPlan
    from edgeseg.quantize.qdq import quantize_model

    model = onnx.load(os.fspath(path))
    # ONNX Runtime's new nodes carry no component: give them the one of a node they touch.
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if get_component(n) is None:
            near = [producer.get(x) for x in n.input] + [c for c in model.graph.node if set(c.input) & set(n.output)]
            comps = [get_component(m) for m in near if m is not None and get_component(m)]
            set_component(n, comps[0] if comps else next(iter(plan.precisions)))
    only16 = PrecisionPlan({c: ("fp16" if p == "fp16" else "fp32") for c, p in plan.precisions.items()})
    q, _ = quantize_model(model, only16, None)
    onnx.save(q, os.fspath(path))
