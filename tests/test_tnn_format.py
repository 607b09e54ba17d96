"""The TNN file layout itself: params, raw buffers, resources, proto pieces (no ONNX involved)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgeseg.export.tnn import format as fmt
from edgeseg.export.tnn.names import MAX_NAME, NameMap, sanitize
from edgeseg.export.tnn.reader import parse_proto_text, attach_resources


def _conv_params(**over):
    p = {"group": 1, "input_channel": 3, "output_channel": 4, "kernel_h": 3, "kernel_w": 5, "stride_h": 1,
         "stride_w": 2, "pad_h": 1, "pad_w": 2, "bias": 1, "pad_type": -1, "dilation_h": 1, "dilation_w": 2,
         "activation_type": 2}
    p.update(over)
    return p


def test_conv_params_are_written_h_before_w_in_tnn_order():
    tokens = fmt.encode_params("Convolution", _conv_params())
    # group ic oc kh kw sh sw pad_h pad_w bias pad_type dil_h dil_w act
    assert tokens == ["1", "3", "4", "3", "5", "1", "2", "1", "2", "1", "-1", "1", "2", "2"]
    assert fmt.decode_params("QuantizedConvolution", tokens) == _conv_params()


@pytest.mark.parametrize("layer_type,params", [
    ("Pad", {"pad_t": 1, "pad_b": 2, "pad_l": 3, "pad_r": 4, "pad_c_b": 0, "pad_c_e": 0, "type": 0,
             "value": -3.4028234663852886e38}),
    ("PadV2", {"pads": [0, 1, 2, 3, 0, 1, 2, 3], "type": 2, "value": 0.0}),
    ("Reshape", {"axis": 0, "num_axes": 3, "shape": [1, 16, 1024], "reshape_type": 0}),
    ("StridedSliceV2", {"begins": [0, 3], "ends": [fmt.INT_MAX, fmt.INT_MIN], "axes": [1, 2], "strides": [2, -1]}),
    ("ReduceMean", {"keep_dims": 1, "axes": [2, 3]}),
    ("Upsample", {"mode": 2, "scale_h": 2.0, "scale_w": 0.5, "align_corners": 1, "output_h": 8, "output_w": 2}),
    ("LayerNorm", {"reduce_dims_size": 1, "eps": float(np.float32(1e-6))}),
    ("Einsum", {"equation": "bnc;bcd->bnd"}),
    ("SplitV", {"axis": 1, "slices": [2, 3, 4]}),
])
def test_param_schemas_round_trip(layer_type, params):
    assert fmt.decode_params(layer_type, fmt.encode_params(layer_type, params)) == params


def test_pad_starts_with_two_ignored_zeros():
    tokens = fmt.encode_params("Pad", {"pad_t": 1, "pad_b": 2, "pad_l": 3, "pad_r": 4, "pad_c_b": 5,
                                       "pad_c_e": 6, "type": 1, "value": 0.5})
    assert tokens == ["0", "0", "1", "2", "3", "4", "5", "6", "1", "0.5"]


def test_floats_round_trip_bit_exactly_through_text():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(500).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 500),
                             np.array([1e-5, 1 / 6, 0.1, 3.4028235e38, -0.0], np.float32)]).astype(np.float32)
    for v in values:
        text = fmt.format_float(float(v))
        assert np.float32(float(text)) == v, text
    assert fmt.format_float(float("inf")) == "3.4028235e+38"
    with pytest.raises(ValueError):
        fmt.format_float(float("nan"))


def test_raw_buffers_carry_dtype_bytes_and_dims():
    w = fmt._Writer()
    arr = np.arange(6, dtype=np.float16).reshape(2, 3)
    w.raw(arr)
    data = w.buf.getvalue()
    magic, code, nbytes, ndims, d0, d1 = struct.unpack("<Iiiiii", data[:24])
    assert (magic, code, nbytes, ndims, d0, d1) == (fmt.MAGIC_V2, 1, 12, 2, 2, 3)
    assert len(data) == 24 + 12
    for a in (np.array(3.5, np.float32), np.arange(4, dtype=np.int8), np.arange(3, dtype=np.int32),
              np.zeros(0, np.float32)):
        w = fmt._Writer()
        w.raw(a)
        back = fmt._Reader(w.buf.getvalue()).raw()
        assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)


def _tiny_model() -> fmt.TnnModel:
    q = fmt.TnnLayer("QuantizedConvolution", "conv", ["in"], ["c"], _conv_params(input_channel=3, output_channel=2),
                     {"name": "conv", "has_bias": 1, "filter": np.ones((2, 3, 3, 5), np.int8),
                      "bias": np.array([1, -2], np.int32), "zero_point": np.zeros(2, np.int8),
                      "scale": np.array([0.5, 0.25], np.float32)})
    add = fmt.TnnLayer("Add", "add", ["c"], ["out"], {"weight_input_index": 1},
                       {"element": np.array([1.0, 2.0], np.float32).reshape(1, 2, 1, 1)})
    ln = fmt.TnnLayer("LayerNorm", "ln", ["out", "g", "b"], ["y"], {"reduce_dims_size": 1, "eps": 1e-5})
    scales = {b: {"zero_point": np.zeros(1, np.int8), "scale": np.array([s], np.float32),
                  "bias": np.zeros(1, np.int32)} for b, s in (("in", 0.1), ("c", 0.2))}
    return fmt.TnnModel(inputs={"in": ([1, 3, 8, 8], 0)}, outputs=["y"], layers=[q, add, ln], blob_scales=scales,
                        constants={"g": np.ones(8, np.float32), "b": np.zeros(8, np.float16)})


def test_model_file_order_is_input_scales_layer_output_scales_then_constants():
    data = fmt.model_bytes(_tiny_model())
    rd = fmt._Reader(data)
    assert rd.u32() == fmt.MAGIC_V2
    assert rd.i32() == 4  # in scale, conv, c scale, add
    order = []
    for _ in range(4):
        type_id, type_str, name = rd.i32(), rd.string(), rd.string()
        order.append((type_id, type_str, name))
        fmt.RESOURCE_CODECS[fmt.base_type(type_str)][1](rd)
    assert order == [(600, "BlobScale", "in_scale_data_"), (1, "QuantizedConvolution", "conv"),
                     (600, "BlobScale", "c_scale_data_"), (38, "Add", "add")]
    assert rd.u32() == fmt.MAGIC_V2 and rd.i32() == 2  # constant map


def test_proto_and_model_round_trip():
    model = _tiny_model()
    back = attach_resources(parse_proto_text(fmt.proto_text(model)), fmt.model_bytes(model))
    assert back.inputs == model.inputs and back.outputs == model.outputs
    for a, b in zip(model.layers, back.layers):
        assert (a.type, a.name, a.inputs, a.outputs) == (b.type, b.name, b.inputs, b.outputs)
        assert a.params == pytest.approx(b.params)
        assert (a.resource is None) == (b.resource is None)
        for key, value in (a.resource or {}).items():
            got = b.resource[key]
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and np.array_equal(got, value), key
            else:
                assert got == value
    for blob, res in model.blob_scales.items():
        for key in res:
            assert np.array_equal(back.blob_scales[blob][key], res[key])
            assert back.blob_scales[blob][key].dtype == res[key].dtype
    assert set(back.constants) == {"g", "b"} and back.constants["b"].dtype == np.float16


def test_proto_text_matches_tnn_line_layout():
    text = fmt.proto_text(_tiny_model())
    lines = text.splitlines()
    assert lines[0] == f'"1 6 1 {0xFABC0004} ,"'
    assert lines[1] == '"in 4 1 3 8 8 0 ,"'
    assert lines[3] == '"y ,"' and lines[4] == '" 3 ,"'
    assert lines[5].startswith('"QuantizedConvolution conv 1 1 in c 1 3 2 ')
    assert all(line.startswith('"') and line.endswith(',"') for line in lines)


def test_bad_names_and_overlong_pieces_are_refused():
    model = _tiny_model()
    model.layers[1].name = "my add"
    with pytest.raises(ValueError, match="not a valid TNN name"):
        fmt.proto_text(model)
    model = _tiny_model()
    model.inputs = {"in:0": ([1, 3, 8, 8], 0)}
    with pytest.raises(ValueError, match="':'"):
        fmt.proto_text(model)
    model = _tiny_model()
    model.layers[2].inputs = ["out"] + [f"c{i:04d}_" + "x" * 40 for i in range(100)]
    with pytest.raises(ValueError, match="4095"):
        fmt.proto_text(model)


def test_sanitize_and_name_map():
    assert sanitize('a b,c"d:e\'f') == "a_b_c_d_e_f"
    long = "/".join(["block"] * 100)
    s = sanitize(long)
    assert len(s) <= MAX_NAME and s != sanitize(long + "x")
    names = NameMap()
    assert names.blob("x:0") == "x_0"
    assert names.blob("x 0") == "x_0_2"  # distinct ONNX names stay distinct
    assert names.blob("x:0") == "x_0"
    assert names.renamed()["blobs"] == {"x:0": "x_0", "x 0": "x_0_2"}


def test_truncated_model_file_is_a_clear_error():
    data = fmt.model_bytes(_tiny_model())
    with pytest.raises(ValueError, match="truncated"):
        fmt.parse_model_bytes(data[:40])


def test_long_blob_list_is_written_in_full_because_tnn_ignores_it():
    layers = [fmt.TnnLayer("ReLU", f"relu{i}", [f"blob_{i:03d}_" + "x" * 30], [f"blob_{i + 1:03d}_" + "x" * 30])
              for i in range(200)]
    model = fmt.TnnModel(inputs={layers[0].inputs[0]: ([1, 4], 0)}, outputs=layers[-1].outputs, layers=layers)
    lines = fmt.proto_text(model).splitlines()
    assert len(lines[2]) > fmt.MAX_PIECE_CHARS  # piece 2: never parsed by TNN
    assert max(len(line) for i, line in enumerate(lines) if i != 2) < fmt.MAX_PIECE_CHARS
    assert len(parse_proto_text("\n".join(lines)).layers) == 200
