"""Probe which ONNX ops convert to builtin-only TFLite through edgeseg's TFLite path.

Each probe is a one-op ONNX graph (opset 17) converted by exactly the code the export
uses (onnx2tf -> SavedModel -> TFLiteConverter with TFLITE_BUILTINS only), then run in
LiteRT and compared with ONNX Runtime. The table it prints is the evidence behind
``edgeseg/export/tflite/compat.py``; re-run it after upgrading onnx2tf or TensorFlow:

    .venv/bin/python benchmarks/tflite_op_support.py [OP ...]

Needs the TFLite extra. Takes about 5 s per op (one TensorFlow import for all).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

X = [1, 4, 8, 8]


def _model(nodes, inputs, outputs, inits=()):
    """A one-op model; output shapes come from running it once (inference leaves some unset)."""
    import onnxruntime as ort

    graph = helper.make_graph(nodes, "probe", inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(None, {"x": np.zeros(X, np.float32) + 0.5})
    for out, v in zip(m.graph.output, values):
        out.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(v.dtype)
        out.type.tensor_type.shape.CopyFrom(helper.make_tensor_type_proto(1, list(v.shape)).tensor_type.shape)
    return onnx.shape_inference.infer_shapes(m)


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def unary(op, **attrs):
    return _model([helper.make_node(op, ["x"], ["y"], name=f"/probe/{op}", **attrs)], [_vi("x", X)], [_vi("y", None)])


def binary_const(op, value, **attrs):
    c = numpy_helper.from_array(np.asarray(value, np.float32), "c")
    return _model([helper.make_node(op, ["x", "c"], ["y"], name=f"/probe/{op}", **attrs)], [_vi("x", X)],
                  [_vi("y", None)], [c])


def probes():
    p = {op: (lambda op=op: unary(op)) for op in (
        "Erf", "Round", "Atan", "Asin", "Acos", "Sinh", "Cosh", "Tan", "Sign", "Softplus",
        "Reciprocal", "Floor", "Ceil", "HardSigmoid", "Selu", "Elu", "Celu", "Sqrt", "Exp", "Log",
        "Neg", "Abs", "Sigmoid", "Tanh", "Relu", "HardSwish", "Sin", "Cos")}
    p["IsNaN"] = lambda: _model([helper.make_node("IsNaN", ["x"], ["y"], name="/probe/IsNaN")], [_vi("x", X)],
                                [_vi("y", None, TensorProto.BOOL)])
    p["Mod(fmod=1)"] = lambda: binary_const("Mod", 3.0, fmod=1)
    p["Pow(x, 3.0)"] = lambda: binary_const("Pow", 3.0)
    p["Softmax(axis=-1)"] = lambda: unary("Softmax", axis=-1)
    p["CumSum"] = lambda: _model([helper.make_node("CumSum", ["x", "a"], ["y"], name="/probe/CumSum")],
                                 [_vi("x", X)], [_vi("y", None)],
                                 [numpy_helper.from_array(np.asarray(3, np.int64), "a")])
    p["TopK"] = lambda: _model([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="/probe/TopK")],
                               [_vi("x", X)], [_vi("y", None), _vi("i", None, TensorProto.INT64)],
                               [numpy_helper.from_array(np.asarray([3], np.int64), "k")])
    p["Einsum(bchw,bchw->bhw)"] = lambda: _model(
        [helper.make_node("Einsum", ["x", "x"], ["y"], name="/probe/Einsum", equation="bchw,bchw->bhw")],
        [_vi("x", X)], [_vi("y", None)])
    p["GridSample"] = lambda: _model(
        [helper.make_node("GridSample", ["x", "g"], ["y"], name="/probe/GridSample", align_corners=0)],
        [_vi("x", X)], [_vi("y", None)],
        [numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 2)).astype(np.float32), "g")])
    p["ArgMax"] = lambda: _model([helper.make_node("ArgMax", ["x"], ["y"], name="/probe/ArgMax", axis=1)],
                                 [_vi("x", X)], [_vi("y", None, TensorProto.INT64)])
    p["LayerNormalization"] = lambda: _model(
        [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], name="/probe/LN", axis=-1)],
        [_vi("x", X)], [_vi("y", None)],
        [numpy_helper.from_array(np.ones(8, np.float32), "s"), numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    p["InstanceNormalization"] = lambda: _model(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="/probe/IN")],
        [_vi("x", X)], [_vi("y", None)],
        [numpy_helper.from_array(np.ones(4, np.float32), "s"), numpy_helper.from_array(np.zeros(4, np.float32), "b")])
    p["Resize(linear, align_corners)"] = lambda: _model(
        [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="/probe/Resize", mode="linear",
                          coordinate_transformation_mode="align_corners")],
        [_vi("x", X)], [_vi("y", None)], [numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "sc")])
    p["ConvTranspose"] = lambda: _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="/probe/ConvT", strides=[2, 2],
                          kernel_shape=[2, 2])],
        [_vi("x", X)], [_vi("y", None)],
        [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4, 2, 2)).astype(np.float32), "w")])
    p["DepthToSpace"] = lambda: unary("DepthToSpace", blocksize=2)
    p["ReduceL2"] = lambda: unary("ReduceL2", axes=[1], keepdims=1)
    p["Trilu"] = lambda: unary("Trilu")
    p["NonZero"] = lambda: _model([helper.make_node("NonZero", ["x"], ["y"], name="/probe/NonZero")],
                                  [_vi("x", X)], [_vi("y", None, TensorProto.INT64)])
    p.update(_torch_probes())
    return p


def _torch_probe(fn):
    """A conv -> fn -> conv net exported like `edgeseg export` does (TorchScript, opset 17)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(4, 4, 1)
            self.b = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.b(fn(self.a(x)))

    path = Path(tempfile.mkdtemp()) / "t.onnx"
    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), (torch.randn(*X),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    from edgeseg.export.onnx import simplify

    return simplify(onnx.load(str(path)))  # onnxslim, as `edgeseg export` does


def _torch_probes():
    import torch
    import torch.nn.functional as F

    return {
        "GELU (erf, torch default)": lambda: _torch_probe(F.gelu),
        "GELU (approximate='tanh')": lambda: _torch_probe(lambda x: F.gelu(x, approximate="tanh")),
        "SiLU": lambda: _torch_probe(F.silu),
        "GroupNorm(2)": lambda: _torch_probe(lambda x: F.group_norm(x, 2)),
        "interpolate(bilinear)": lambda: _torch_probe(
            lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)),
        "softmax over HW (attention)": lambda: _torch_probe(
            lambda x: torch.softmax(x.flatten(2), dim=-1).reshape(x.shape)),
        "einsum (bchw,bkc->bkhw)": lambda: _torch_probe(
            lambda x: torch.einsum("bchw,bkc->bkhw", x, torch.ones(1, 4, 4))),
    }


def probe(name, model, root: Path) -> dict:
    from edgeseg.export import tags
    from edgeseg.export.tflite.converter import _work_copy
    from edgeseg.export.tflite.worker import StageError, convert
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime
    from edgeseg.runtimes.tflite import TFLiteRuntime

    for n in model.graph.node:
        tags.set_component(n, "probe")
    work = root / name.replace("/", "_").replace(" ", "_")
    work.mkdir(parents=True)
    onnx.save(model, str(work / "orig.onnx"))
    wm, names = _work_copy(model, ["probe"])
    onnx.save(wm, str(work / "work.onnx"))
    x = np.random.default_rng(0).uniform(0.1, 0.9, X).astype(np.float32)  # inside every op's domain
    np.save(work / "s.npy", x)
    shapes = lambda vs: [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in vs]  # noqa: E731
    job = {"onnx": str(work / "work.onnx"), "saved_model": str(work / "sm"), "samples": str(work / "s.npy"),
           "output": str(work / "m.tflite"), "report": str(work / "r.json"), "inputs": ["x"],
           "input_shapes": [X], "outputs": [o.name for o in model.graph.output],
           "output_shapes": shapes(model.graph.output), "precisions": {"probe": "fp32"},
           "component_order": ["probe"], "calib_source": "tflite", "ranges": {}, "int8_io": False, **names}
    t = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # onnx2tf narrates every op
            report = convert(job)
    except StageError as e:
        return {"op": name, "result": f"FAIL ({e.stage})", "detail": str(e)[:120]}
    except Exception as e:  # noqa: BLE001 - a probe reports whatever happens
        return {"op": name, "result": "FAIL (crash)", "detail": f"{type(e).__name__}: {e}"[:120]}
    ref = OnnxRuntimeRuntime(work / "orig.onnx").run({"x": x})
    got = TFLiteRuntime(work / "m.tflite", io=report["io"]).run({"x": x})
    err = max(float(np.max(np.abs(ref[k].astype(np.float64) - got[k].astype(np.float64)))) for k in ref)
    ops = sorted(set(report["mapping"] and [o["op"] for o in report["op_components"]]))
    return {"op": name, "result": "ok" if err < 1e-3 else "WRONG", "max_abs_error": err, "tflite_ops": ops,
            "seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    table = probes()
    chosen = sys.argv[1:] or list(table)
    root = Path(tempfile.mkdtemp(prefix="tflite-probe-"))
    cwd = os.getcwd()
    results = []
    try:
        for name in chosen:
            os.chdir(root)
            try:
                model = table[name]()
            except Exception as e:  # noqa: BLE001 - ONNX Runtime itself rejects the probe
                results.append({"op": name, "result": "FAIL (onnx)", "detail": str(e).splitlines()[0][:120]})
            else:
                results.append(probe(name, model, root))
            os.chdir(cwd)
            r = results[-1]
            print(f"{r['op']:32s} {r['result']:14s} "
                  f"{r.get('detail') or ('err %.1e  ops %s' % (r['max_abs_error'], ','.join(r['tflite_ops'])))}",
                  flush=True)
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"onnx2tf": _version("onnx2tf"), "tensorflow": _version("tensorflow-cpu"),
                      "failed": [r["op"] for r in results if r["result"] != "ok"]}))


def _version(pkg):
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
