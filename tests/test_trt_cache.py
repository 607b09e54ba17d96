"""TensorRT calibration cache: exact format, byte-for-byte round trips, clear errors."""

from __future__ import annotations

import struct

import pytest

from edgeseg.errors import EdgesegError
from edgeseg.quantize.cache import (CalibrationTable, TensorRange, read_trt_cache, trt_version_code,
                                    write_trt_cache)


def test_hex_scales_are_big_endian_float32_of_amax_over_127(tmp_path):
    # Hand-computed: 127/127 = 1.0 = 0x3f800000; 63.5/127 = 0.5 = 0x3f000000;
    # 1/127 = 2^-7 * 1.0078740... -> exponent 120 (0x3c000000) | mantissa 0x010204.
    table = CalibrationTable("kl", {"a": TensorRange(127.0), "b": TensorRange(63.5), "c": TensorRange(1.0)})
    path = write_trt_cache(table, tmp_path / "x.cache", trt_version="8.5.2")
    assert path.read_text() == "TRT-8502-EntropyCalibration2\na: 3f800000\nb: 3f000000\nc: 3c010204\n"


def test_version_codes_follow_tensorrt_numbering():
    assert trt_version_code("8.5.2") == "8502"
    assert trt_version_code("8.6.1") == "8601"
    assert trt_version_code("7.0") == "7000"
    assert trt_version_code("10.3.0") == "100300"  # TensorRT 10 widened the minor field
    assert trt_version_code(8502) == "8502"
    with pytest.raises(EdgesegError, match="TensorRT version"):
        trt_version_code("eight")


def test_round_trip_of_our_file_is_byte_for_byte(tmp_path):
    table = CalibrationTable("kl", {"image": TensorRange(2.64), "/backbone/Conv_output_0": TensorRange(0.0123),
                                    "onnx::MatMul_12": TensorRange(1e-3), "zero": TensorRange(0.0)})
    first = write_trt_cache(table, tmp_path / "a.cache", trt_version="10.3.0")
    back = read_trt_cache(first)
    assert list(back.ranges) == list(table.ranges)  # order kept (tensor names with ':' too)
    second = write_trt_cache(back, tmp_path / "b.cache")  # version comes from the file read
    assert first.read_bytes() == second.read_bytes()
    assert first.read_text().splitlines()[0] == "TRT-100300-EntropyCalibration2"


def test_tensorrt_written_cache_round_trips_byte_for_byte(tmp_path):
    # The layout TensorRT itself writes (sample values from a TensorRT 7 MNIST cache).
    text = ("TRT-7000-EntropyCalibration2\ndata: 3c008912\nconv1: 3c88edfc\npool1: 3c88edfc\n"
            "ip2: 3e691968\nprob: 3c010a14\n")
    src = tmp_path / "trt.cache"
    src.write_text(text)
    table = read_trt_cache(src)
    assert table.settings["trt_version"] == "7000"
    scale = struct.unpack(">f", bytes.fromhex("3c88edfc"))[0]
    assert table.ranges["conv1"].amax == pytest.approx(scale * 127.0, rel=0, abs=0)
    out = write_trt_cache(table, tmp_path / "again.cache")
    assert out.read_bytes() == src.read_bytes()


def test_zero_range_gets_a_usable_scale(tmp_path):
    path = write_trt_cache(CalibrationTable("kl", {"z": TensorRange(0.0)}), tmp_path / "z.cache")
    assert path.read_text().splitlines()[1] == "z: 3c010204"  # 1/127, never a zero scale


@pytest.mark.parametrize("content,match", [
    ("", "header"),
    ("not a cache\nx: 3f800000\n", "header"),
    ("TRT-8502-EntropyCalibration2\nx 3f800000\n", "line 2"),
    ("TRT-8502-EntropyCalibration2\nx: zzzzzzzz\n", "bad hex"),
    ("TRT-8502-EntropyCalibration2\nx: 7fc00000\n", "not a positive number"),  # NaN
])
def test_bad_cache_files_are_one_clear_error(tmp_path, content, match):
    p = tmp_path / "bad.cache"
    p.write_text(content)
    with pytest.raises(EdgesegError, match=match):
        read_trt_cache(p)


def test_missing_cache_and_unwritable_name(tmp_path):
    with pytest.raises(EdgesegError, match="not found"):
        read_trt_cache(tmp_path / "nope.cache")
    with pytest.raises(EdgesegError, match="newline"):
        write_trt_cache(CalibrationTable("kl", {"a\nb": TensorRange(1.0)}), tmp_path / "n.cache")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
