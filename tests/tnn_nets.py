"""Small ONNX graphs for the TNN tests: a torch-exported golden net and onnx.helper graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeseg.export.tags import set_component, tag_graph
from edgeseg.models.base import ComponentMap
from edgeseg.quantize.cache import CalibrationTable, TensorRange
from edgeseg.utils.hashing import sha256_file

GOLDEN_COMPONENTS = ComponentMap({"backbone": "backbone", "neck": "neck", "head": "head"})


def golden_torch_net(path: Path) -> Path:
    """conv/act/resize/matmul/layernorm/softmax net, exported like `edgeseg export` does."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.dw = nn.Conv2d(8, 8, 3, 1, 2, dilation=2, groups=8)
            self.act = nn.Hardswish()
            self.pw = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU6())
            self.grouped = nn.Conv2d(16, 16, 3, 1, 1, groups=4)

        def forward(self, x):
            y = self.pw(self.act(self.dw(self.stem(x))))
            return y + self.grouped(y)

    class Neck(nn.Module):
        def forward(self, x):
            small = F.max_pool2d(x, 2)
            up = F.interpolate(small, scale_factor=2.0, mode="nearest")
            smooth = F.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
            return torch.cat([up, smooth], dim=1)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(32, 16)
            self.norm = nn.LayerNorm(16)
            self.mask = nn.Conv2d(32, 16, 1)

        def forward(self, x):
            tokens = self.norm(self.proj(F.adaptive_avg_pool2d(x, 4).flatten(2).transpose(1, 2)))  # 1x16x16
            attn = torch.softmax(tokens @ tokens.transpose(1, 2) * 0.25, dim=-1)
            kernels = torch.sigmoid(attn @ tokens)  # 1x16x16
            feats = self.mask(x).flatten(2)  # 1x16x256
            return kernels, (kernels @ feats).reshape(1, 16, 16, 16)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone, self.neck, self.head = Backbone(), Neck(), Head()

        def forward(self, image):
            return self.head(self.neck(self.backbone(image)))

    net = Net().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so folding is exercised
        net.backbone.stem[1].running_mean.uniform_(-0.5, 0.5)
        net.backbone.stem[1].running_var.uniform_(0.5, 2.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["kernels", "masks"])
    model = onnx.load(str(path))
    tag_graph(model, GOLDEN_COMPONENTS, default="head")
    onnx.save(model, str(path))
    return path


# --------------------------------------------------------------------------- helper graphs


def make_model(nodes, inputs, outputs, inits=(), opset=17, component="backbone", components=None):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs),
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
        set_component(node, (components or {}).get(node.name, component))
    return model


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def ops_zoo_model() -> onnx.ModelProto:
    """One graph touching the converters the torch net does not: constants on either side of
    Sub/Div, Pow/Sqrt, Gemm, Slice (negative step), Gather, Split, ReduceMean, Squeeze/Unsqueeze,
    Clip, HardSigmoid, BatchNormalization, average pooling with padding, align_corners resize,
    asymmetric conv padding, Pad, Concat with a constant, opset-17 Softmax over axis 1."""
    rng = np.random.default_rng(1)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = {
        "w_asym": f(6, 4, 3, 3), "b_asym": f(6),
        "bn_g": rng.uniform(0.5, 1.5, 6).astype(np.float32), "bn_b": f(6), "bn_m": f(6),
        "bn_v": rng.uniform(0.5, 2, 6).astype(np.float32),
        "c_sub": f(6, 1, 1), "c_div": rng.uniform(1, 2, (1, 6, 1, 1)).astype(np.float32), "two": np.float32(2.0),
        "starts": np.array([-2, 0], np.int64), "ends": np.array([0, 6], np.int64),
        "axes": np.array([3, 1], np.int64), "steps": np.array([-2, 1], np.int64),
        "gidx": np.array([2, 0, -1], np.int64), "split": np.array([2, 4], np.int64),
        "sq_axes": np.array([2], np.int64), "unsq_axes": np.array([1], np.int64),
        "gemm_w": f(5, 6), "gemm_b": f(5), "clip_lo": np.float32(-0.5), "clip_hi": np.float32(0.5),
        "pads": np.array([0, 0, 1, 2, 0, 0, 0, 1], np.int64), "pad_v": np.float32(0.25),
        "cat_c": f(1, 2, 8, 10), "sizes": np.array([1, 6, 9, 12], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w_asym", "b_asym"], ["c"], pads=[0, 1, 1, 0], name="conv_asym"),  # 1x6x7x7
        helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn",
                         epsilon=1e-3),
        helper.make_node("Sub", ["c_sub", "bn"], ["s"], name="sub_const_first"),
        helper.make_node("Div", ["s", "c_div"], ["d"], name="div_const"),
        helper.make_node("Pow", ["d", "two"], ["p"], name="pow"),
        helper.make_node("Sqrt", ["p"], ["sq"], name="sqrt"),
        helper.make_node("HardSigmoid", ["d"], ["hs"], alpha=0.3, beta=0.4, name="hardsigmoid"),
        helper.make_node("Clip", ["d", "clip_lo", "clip_hi"], ["cl"], name="clip"),
        helper.make_node("Add", ["sq", "hs"], ["a1"], name="add"),
        helper.make_node("Mul", ["a1", "cl"], ["m1"], name="mul"),
        helper.make_node("AveragePool", ["m1"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                         name="avgpool_excl"),  # 1x6x4x4
        helper.make_node("AveragePool", ["m1"], ["ap2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                         count_include_pad=1, name="avgpool_incl"),
        helper.make_node("Add", ["ap", "ap2"], ["apsum"], name="add_pools"),
        helper.make_node("Resize", ["apsum", "", "", "sizes"], ["rz"], mode="linear",
                         coordinate_transformation_mode="align_corners", name="resize_ac"),  # 1x6x9x12
        helper.make_node("Slice", ["rz", "starts", "ends", "axes", "steps"], ["sl"], name="slice"),  # 1x6x9x5 (W: 10, 8, 6, 4, 2)
        helper.make_node("Gather", ["sl", "gidx"], ["g"], axis=1, name="gather"),  # 1x3x9x5
        helper.make_node("ReduceMean", ["g"], ["rm"], axes=[2], keepdims=1, name="reducemean"),  # 1x3x1x5
        helper.make_node("Squeeze", ["rm", "sq_axes"], ["sqz"], name="squeeze"),  # 1x3x5
        helper.make_node("Softmax", ["sqz"], ["sm"], axis=1, name="softmax_axis1"),
        helper.make_node("Unsqueeze", ["sm", "unsq_axes"], ["usq"], name="unsqueeze"),  # 1x1x3x5
        helper.make_node("Flatten", ["usq"], ["fl"], axis=1, name="flatten"),  # 1x15
        helper.make_node("GlobalAveragePool", ["m1"], ["gap"], name="gap"),  # 1x6x1x1
        helper.make_node("Flatten", ["gap"], ["gf"], axis=1, name="flatten_gap"),  # 1x6
        helper.make_node("Gemm", ["gf", "gemm_w", "gemm_b"], ["gm"], transB=1, alpha=0.5, beta=2.0, name="gemm"),
        helper.make_node("Split", ["m1", "split"], ["sp0", "sp1"], axis=1, name="split"),
        helper.make_node("Pad", ["sp1", "pads", "pad_v"], ["pd"], mode="constant", name="pad"),  # 1x4x8x10
        helper.make_node("Pad", ["sp0", "pads"], ["pde"], mode="edge", name="pad_edge"),  # 1x2x8x10
        helper.make_node("Concat", ["pd", "pde", "cat_c"], ["cat"], axis=1, name="concat_const"),  # 1x8x8x10
        helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], strides=[2, 2],
                         name="maxpool_asym"),  # 1x8x4x5
    ]
    return make_model(nodes, [vi("x", [1, 4, 8, 8])],
                      [vi("fl", [1, 15]), vi("gm", [1, 5]), vi("mp", [1, 8, 4, 5])], inits)


def minmax_table(model: onnx.ModelProto, onnx_path: Path | None, feeds_list: list[dict[str, np.ndarray]]
                 ) -> CalibrationTable:
    """amax of every float tensor over a few ONNX Runtime runs (a stand-in for `edgeseg calibrate`)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in known:
                probe.graph.output.append(helper.make_empty_tensor_value_info(out))
                known.add(out)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    amax: dict[str, float] = {}
    for feeds in feeds_list:
        for name, value in list(zip(names, sess.run(None, feeds))) + list(feeds.items()):
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                amax[name] = max(amax.get(name, 0.0), float(np.abs(value).max()))
    return CalibrationTable("minmax", {k: TensorRange(v) for k, v in amax.items()}, num_images=len(feeds_list),
                            model_sha256=sha256_file(onnx_path) if onnx_path else "")


def ort_run(model_or_path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime with simulated Q/DQ: the reference TNN's int8 is compared with must not
    depend on this host's int8 kernels (they saturate on x86 without VNNI)."""
    from edgeseg.runtimes.onnxruntime import make_session

    sess = make_session(model_or_path, numerics="simulated")
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
