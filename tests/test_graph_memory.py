"""Static graph memory (weights + activation peak by tensor lifetime) and the measured RSS probe."""

from __future__ import annotations

import numpy as np
import pytest


def _chain(tmp_path):
    """x[1,4,8,8] -> Conv(8 ch) -> Relu -> Add(relu, conv) -> y: the Add needs both inputs alive."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "chain.onnx"
    onnx.save(model, str(path))
    return path


def test_activation_peak_follows_tensor_lifetimes(tmp_path):
    from edgeseg.benchmark.memory import graph_memory

    mem = graph_memory(_chain(tmp_path))
    x, c = 4 * 64 * 4, 8 * 64 * 4
    assert mem.weights_bytes == 8 * 4 * 4
    # x is dead after the conv; at the Add, c, r and y are alive at once.
    assert mem.activation_peak_bytes == 3 * c and mem.peak_node == "add"
    assert mem.unknown_tensors == 0 and mem.total_mb == pytest.approx((128 + 3 * c) / 2 ** 20)
    assert x < c


def test_the_measured_probe_reports_growth(tmp_path):
    from edgeseg.benchmark.memory import measured_peak_rss

    big = np.ones(32_000_000)  # a 256 MB parent: the probe's own high-water mark must not inherit it
    r = measured_peak_rss([_chain(tmp_path)])
    assert r["peak_rss_mb"] >= 0 and r["process_peak_mb"] > r["peak_rss_mb"]
    assert r["process_peak_mb"] < big.nbytes / 2 ** 20
