"""Small artifacts for the benchmark tests: a conv net built with onnx.helper (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_conv_onnx(path: Path, size: int = 32, channels: int = 8) -> Path:
    """Conv -> Relu -> Conv on a 1x3xSxS input; tagged like an edgeseg export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeseg.export.tags import set_component

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, channels, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], name="/backbone/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/backbone/act/Relu"),
        helper.make_node("Conv", ["r1", "w2"], ["masks"], name="/head/conv/Conv"),
    ]
    for node in nodes:
        set_component(node, "backbone" if node.name.startswith("/backbone") else "head")
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 4, size, size])],
        initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_artifact_folder(folder: Path, plan: dict | None = None, size: int = 32) -> Path:
    """An export-style folder: tiny.onnx + manifest.json recording it (and optionally a plan)."""
    from edgeseg.data.preprocess import InputSpec
    from edgeseg.export.manifest import Manifest
    from edgeseg.utils.hashing import sha256_file

    onnx_path = tiny_conv_onnx(folder / "tiny.onnx", size=size)
    m = Manifest(model="tiny_conv", input=InputSpec(height=size, width=size).to_dict(),
                 components={"backbone": {"module": "backbone"}, "head": {"module": "head"}})
    info = {"kind": "onnx", "primary": True, "sha256": sha256_file(onnx_path),
            "components": {"backbone": ["/backbone/conv/Conv", "/backbone/act/Relu"], "head": ["/head/conv/Conv"]}}
    if plan is not None:
        info["precision"] = plan
    m.add_artifact(onnx_path.name, **info)
    m.save(folder)
    return folder
