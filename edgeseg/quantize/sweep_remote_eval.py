"""AP measured on the Jetson itself: ``edgeseg eval`` of the engine trtexec built there.

Opt-in (``edgeseg sweep --target ssh://... --ap-from device``) and only where the device
can run it: ``python3`` there (or ``--device-python``) must import both ``edgeseg`` and ``tensorrt`` (JetPack
ships the TensorRT bindings; ``pip install edgeseg`` adds the rest). Per plan:

1. the dataset (annotations + the images they name) is pushed once, cached on the device
   by content (``WORKDIR/datasets/<sha256>/``, complete only with its ``.complete`` marker);
2. a folder ``WORKDIR/eval/<engine>/`` gets the sweep's ``manifest.json`` (input spec,
   model, post-processing) and a link to the plan's engine as its primary artifact;
3. ``python3 -m edgeseg eval FOLDER --dataset ... -o result.json`` runs there, with the
   engine in TensorRT through ``runtimes/tensorrt.py``; the JSON comes back and its
   metrics become the plan's AP (the host's AP stays in the record for comparison).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError

PROBE = "import edgeseg, tensorrt; print(edgeseg.__version__, tensorrt.__version__)"


def check_device_python(transport, python: str = "python3") -> str:
    res = transport.run([python, "-c", PROBE], 120)
    if res.rc != 0:
        why = (res.stdout + res.stderr).strip().splitlines()[-1:] or ["no output"]
        raise EdgesegError(f"AP on the device needs edgeseg and TensorRT's Python bindings on {transport.address} "
                           f"({why[0]})",
                           "install them there (JetPack has python3-libnvinfer; `pip install edgeseg`) or name "
                           "that Python with --device-python, or measure AP on the host: --ap-from host")
    return res.stdout.strip()


def push_dataset(transport, dataset_json: Path, images_dir: Path) -> tuple[str, str]:
    """(remote annotations path, remote images folder), pushed once per content."""
    from edgeseg.benchmark.targets.runner import group_digest
    from edgeseg.data.coco import CocoDataset

    dataset = CocoDataset(dataset_json, images_dir)
    images = dataset.images  # all of them: the reader checks every listed file exists (--limit applies later)
    files = [Path(dataset_json)] + [im.path for im in images]
    root = f"{transport.workdir}/datasets/{group_digest(files)[:16]}"
    marker = f"{root}/.complete"
    ann = f"{root}/{Path(dataset_json).name}"
    if transport.run(["test", "-f", marker], 30).rc != 0:
        transport.push(Path(dataset_json), ann)
        for im in images:
            transport.push(im.path, f"{root}/images/{im.file_name}")
        transport.run(["touch", marker], 30).check("finishing the dataset on the device")
    return ann, f"{root}/images"


def remote_ap(target, plan, settings, dataset_json: Path, images_dir: Path, limit: int | None,
              manifest_path: Path) -> dict[str, Any]:
    """Run ``edgeseg eval`` on ``target``'s engine on the device; returns its result dict."""
    from edgeseg.export.manifest import Manifest

    t = target.transport
    version = check_device_python(t, settings.python)
    ann, imgs = push_dataset(t, dataset_json, images_dir)
    engine = target.engine
    folder = f"{t.workdir}/eval/{Path(engine).stem}"
    manifest = Manifest.load(manifest_path)
    manifest.artifacts = {"model.engine": {"kind": "tensorrt-engine", "primary": True,
                                           "precision": plan.to_dict(), "built_by": "trtexec on the device"}}
    with tempfile.TemporaryDirectory() as tmp:
        manifest.save(tmp)
        t.push(Path(tmp) / "manifest.json", f"{folder}/manifest.json")
    t.run(["ln", "-sf", engine, f"{folder}/model.engine"], 30).check("linking the engine for evaluation")
    out = f"{folder}/result.json"
    argv = [settings.python, "-m", "edgeseg", "eval", folder, "--dataset", ann, "--images", imgs, "-o", out]
    if limit:
        argv += ["--limit", str(limit)]
    res = t.run(argv, settings.timeout_s)
    if res.rc != 0:
        tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-3:])
        raise EdgesegError(f"`edgeseg eval` failed on {t.address} (exit {res.rc}): {tail}",
                           f"run it there to see why: {' '.join(shlex.quote(a) for a in argv)}")
    text = t.run(["cat", out], 60).stdout
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgesegError(f"the device's eval result is not JSON: {e}", f"look at {out} on {t.address}") from e
    return {"metrics": result["metrics"], "images": result.get("images"), "backend": result.get("backend"),
            "device_versions": version, "command": " ".join(shlex.quote(a) for a in argv)}
