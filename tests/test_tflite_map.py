"""The pure parts of the TFLite export: TFLite name -> ONNX node/tensor/component mapping,
range encoding, I/O layouts, Flex-op parsing. No TensorFlow needed (fast)."""

from __future__ import annotations

import pytest

from edgeseg.export.tflite.worker import StageError, flex_ops_in, io_layout, sanitize_key, table_range
from edgeseg.export.tflite.flatbuffer import ModelView, OpView, TensorView
from edgeseg.export.tflite.mapping import ConversionRecord, float_ops, map_model, ops_of_precision

pytestmark = pytest.mark.tflite


def _t(i, name, shape, constant=False):
    return TensorView(i, name, "float32", shape, constant)


def _view():
    """input -> CONV(+relu, fused) -> [backbone|head boundary] CONV -> LOGISTIC -> output.

    Names follow TFLite's converter: fused ops join the layer names with ';', the last op
    of the fusion first; graph outputs are named after the signature (PartitionedCall:0).
    """
    tensors = [
        _t(0, "serving_default_image:0", [1, 8, 8, 3]),
        _t(1, "model_3/tf.nn.convolution/convolution", [4, 3, 3, 3], constant=True),
        _t(2, "model_3/tf.nn.relu/Relu;model_3/tf.math.add/Add;model_3/tf.nn.convolution/convolution;Const",
           [1, 8, 8, 4]),
        _t(3, "model_3/tf.nn.convolution_1/convolution", [2, 1, 1, 4], constant=True),
        _t(4, "model_3/tf.math.add_1/Add;model_3/tf.nn.convolution_1/convolution", [1, 8, 8, 2]),
        _t(5, "PartitionedCall:0", [1, 8, 8, 2]),
        _t(6, "model_3/tf.reshape/Reshape;model_3/scores/MatMul", [1, 64, 2]),
    ]
    ops = [OpView(0, "CONV_2D", [0, 1], [2]), OpView(1, "CONV_2D", [2, 3], [4]),
           OpView(2, "LOGISTIC", [4], [5]), OpView(3, "RESHAPE", [5], [6])]
    return ModelView(tensors, ops, [0], [6], {"image": 0}, {"scores": 6})


def _record():
    return ConversionRecord(
        layer_nodes={"tf.nn.convolution": "/backbone/conv/Conv", "tf.math.add": "/backbone/conv/Conv",
                     "tf.nn.relu": "/backbone/Relu", "tf.nn.convolution_1": "/head/conv/Conv",
                     "tf.math.add_1": "/head/conv/Conv", "tf.math.sigmoid": "/head/Sigmoid"},
        node_components={"/backbone/conv/Conv": "backbone", "/backbone/Relu": "backbone",
                         "/head/conv/Conv": "head", "/head/Sigmoid": "head", "/head/Reshape": "head"},
        tensor_layers={"/backbone/conv/Conv_output_0": "tf.math.add", "/backbone/Relu_output_0": "tf.nn.relu",
                       "/head/conv/Conv_output_0": "tf.math.add_1", "/head/Sigmoid_output_0": "tf.math.sigmoid",
                       "scores": "scores"},
        tensor_numel={"/backbone/conv/Conv_output_0": 256, "/backbone/Relu_output_0": 256,
                      "/head/conv/Conv_output_0": 128, "/head/Sigmoid_output_0": 128, "scores": 128},
        tensor_nodes={"scores": "/head/Reshape"},
        component_order=["backbone", "head"],
    )


def test_ops_map_to_components_by_layer_names_and_neighbours():
    m = map_model(_view(), _record())
    assert [o.components for o in m.ops] == [("backbone",), ("head",), ("head",), ("head",)]
    assert [o.source for o in m.ops] == ["name", "name", "neighbours", "name"]
    # The fused conv+relu belongs to both ONNX nodes it came from.
    assert set(m.ops[0].onnx_nodes) == {"/backbone/Relu", "/backbone/conv/Conv"}
    # The output reshape's layer was renamed after the ONNX output: found via its producer.
    assert m.ops[3].onnx_nodes == ("/head/Reshape",)
    assert m.unmapped() == []
    assert m.report()["mapped_by_neighbours"] == 1


def test_fused_tensor_is_the_onnx_tensor_of_the_last_op():
    m = map_model(_view(), _record())
    # Conv + bias add + ReLU fused: the TFLite tensor holds the ReLU output, not the conv's.
    assert m.tensor_to_onnx[2] == "/backbone/Relu_output_0"
    assert m.tensor_to_onnx[4] == "/head/conv/Conv_output_0"
    assert 1 not in m.tensor_to_onnx  # weights are not activations
    assert 5 not in m.tensor_to_onnx  # no known layer in "PartitionedCall:0"


def test_tensor_mapping_requires_the_same_number_of_elements():
    record = _record()
    record.tensor_numel["/backbone/Relu_output_0"] = 999  # a layer reused for a reshaped tensor
    m = map_model(_view(), record)
    assert m.tensor_to_onnx[2] == "/backbone/conv/Conv_output_0"  # next name part that fits


def test_ops_with_no_known_neighbour_are_reported_unmapped():
    view = _view()
    record = _record()
    record.layer_nodes = {}
    record.tensor_layers = {}
    m = map_model(view, record)
    assert len(m.unmapped()) == 4
    assert m.report()["unmapped"] == ["0:CONV_2D", "1:CONV_2D", "2:LOGISTIC", "3:RESHAPE"]
    # Untraceable ops are never quantized behind a float component's back.
    assert float_ops(m, {"backbone": "int8", "head": "fp16"}) == [0, 1, 2, 3]
    assert float_ops(m, {"backbone": "int8", "head": "int8"}) == []


def test_float_ops_keep_every_op_touching_a_float_component():
    m = map_model(_view(), _record())
    assert float_ops(m, {"backbone": "int8", "head": "fp16"}) == [1, 2, 3]
    assert float_ops(m, {"backbone": "int8", "head": "int8"}) == []
    m.ops[1].components = ("backbone", "head")  # fused across the boundary
    assert 1 in float_ops(m, {"backbone": "int8", "head": "fp32"})
    assert ops_of_precision(m, {"backbone": "int8", "head": "fp16"}, "fp16") == [2, 3]


def test_conversion_record_round_trips_through_json():
    import json

    r = _record()
    assert ConversionRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("entry,expected", [
    ({"amax": 4.0, "min": -1.0, "max": 3.0}, (-1.0, 3.0)),  # extremes inside amax: kept
    ({"amax": 2.0, "min": -5.0, "max": 6.0}, (-2.0, 2.0)),  # KL clipped: amax wins
    ({"amax": 2.0, "min": 0.0, "max": 6.0}, (0.0, 2.0)),  # after ReLU: full range for positives
    ({"amax": 3.0}, (-3.0, 3.0)),  # symmetric table
    ({"amax": 2.0, "min": 0.5, "max": 1.5}, (0.0, 1.5)),  # zero must be representable
])
def test_table_range_clips_extremes_to_amax(entry, expected):
    assert table_range(entry) == pytest.approx(expected)


def test_table_range_rejects_empty_ranges():
    assert table_range({"amax": 0.0, "min": 0.0, "max": 0.0}) is None
    assert table_range({"amax": float("nan")}) is None


def test_io_layout():
    assert io_layout([1, 3, 8, 8], [1, 8, 8, 3], None, True) == [0, 2, 3, 1]
    assert io_layout([1, 4, 10], [1, 4, 10], None, False) is None
    assert io_layout([1, 4, 10], [1, 10, 4], True, False) == [0, 2, 1]
    # Symmetric shape: onnx2tf's flag decides (inputs go channel-last by default).
    assert io_layout([1, 3, 3, 3], [1, 3, 3, 3], None, True) == [0, 2, 3, 1]
    assert io_layout([1, 3, 3, 3], [1, 3, 3, 3], False, False) is None
    with pytest.raises(StageError, match="cannot relate"):
        io_layout([1, 3, 8, 8], [1, 8, 4, 6], None, False)
    with pytest.raises(StageError, match="dynamic shape"):
        io_layout([4, 256], [4, -1], None, False)


def test_flex_ops_are_read_from_converter_errors():
    text = ("loc(fused[\"Erf:\"]): error: 'tf.Erf' op is neither a custom op nor a flex op\n"
            "error: failed while converting: 'main': Some ops are not supported by the native TFLite runtime\n"
            "TF Select ops: Erf, Atan\nDetails: tf.Erf(tensor<1x8xf32>) entry_function")
    assert flex_ops_in(text) == ["Atan", "Erf"]
    assert flex_ops_in("Could not translate MLIR to FlatBuffer") == []


def test_signature_keys_are_sanitized():
    assert sanitize_key("image") == "image"
    assert sanitize_key("/head/out:0") == "_head_out_0"
    assert sanitize_key("0mask") == "t_0mask"
