"""Calibration: KL on distributions with known answers, exact streaming, tables from real graphs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeseg.data.images import select_images, spec_for_model
from edgeseg.errors import EdgesegError
from edgeseg.quantize.cache import CalibrationTable, read_trt_cache
from edgeseg.quantize.calibrate import (AbsHistogram, HistogramCalibrator, calibrate, kl_divergences,
                                        select_tensors)
from edgeseg.utils.hashing import sha256_file
from tests.quant_models import make_images, make_model


# ----------------------------------------------------------------------------- KL maths
def naive_kl(counts, levels=128, start=128, eps=1e-4):
    """The definition, one candidate at a time (slow and obvious) for checking the fast one."""
    h = np.asarray(counts, float)
    out = []
    for i in range(start, h.size + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        level = np.arange(i) * levels // i
        sums = np.bincount(level, weights=h[:i], minlength=levels)
        nonempty = np.bincount(level, weights=(h[:i] > 0), minlength=levels)
        q = np.where(h[:i] > 0, sums[level] / np.maximum(nonempty[level], 1), 0.0)

        def smooth(d):
            zero = d == 0
            if zero.all():
                return None
            return np.where(zero, eps, d - eps * zero.sum() / (~zero).sum())

        p, q = smooth(p), smooth(q)
        if p is None or q is None:
            out.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        out.append(float((p * np.log(p / q)).sum()))
    return np.array(out)


def _hist(x, bins=2048):
    h = AbsHistogram(bins)
    h.add(np.asarray(x, np.float32))
    return h


@pytest.mark.parametrize("case", ["gauss", "relu", "outliers", "sparse", "exp"])
def test_fast_kl_equals_the_definition(case):
    rng = np.random.default_rng(1)
    x = {"gauss": lambda: rng.standard_normal(50_000),
         "relu": lambda: np.maximum(rng.standard_normal(50_000), 0),
         "outliers": lambda: np.concatenate([rng.standard_normal(50_000), [60.0, -80.0]]),
         "sparse": lambda: rng.exponential(1.0, 700),
         "exp": lambda: rng.exponential(2.0, 50_000)}[case]()
    counts = _hist(x, 512).counts  # 512 bins keeps the O(bins^2) reference quick
    cand, fast = kl_divergences(counts)
    ref = naive_kl(counts)
    assert cand[0] == 128 and cand[-1] == 512
    assert np.array_equal(np.isfinite(fast), np.isfinite(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(fast[fin], ref[fin], rtol=1e-9, atol=1e-12)


def test_kl_clips_rare_outliers_and_minmax_does_not():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400_000)
    x[:40] = rng.choice([-1, 1], 40) * rng.uniform(30, 50, 40)  # 1e-4 of the values, far out
    h = _hist(x)
    assert h.amax_minmax() == pytest.approx(np.abs(x).max(), rel=1e-6)
    kl = h.amax_kl()
    assert 2.5 < kl < 8.0, kl  # near the bulk of N(0, 1), far below the outliers
    assert h.amax_percentile(99.99) < 10.0  # the outliers are exactly the top 1e-4


def test_kl_keeps_the_range_when_there_is_nothing_to_clip():
    x = np.random.default_rng(0).uniform(-3, 3, 300_000)  # uniform: every bin matters
    h = _hist(x)
    assert h.amax_kl() > 0.97 * h.amax_minmax()


def test_relu_zeros_do_not_collapse_the_threshold():
    # Half exact zeros: without neutralising bin 0, KL picks the smallest candidate.
    x = np.maximum(np.random.default_rng(0).standard_normal(400_000), 0)
    h = _hist(x)
    assert h.amax_kl() > 2.5
    zero_heavy = h.counts.copy()
    from edgeseg.quantize.calibrate import kl_best_bin

    assert kl_best_bin(zero_heavy) < kl_best_bin(np.concatenate([[zero_heavy[1]], zero_heavy[1:]]))


def test_percentile_is_the_bin_edge_covering_the_fraction():
    x = np.arange(1, 10_001, dtype=np.float32)  # |x| uniform on 1..10000
    h = _hist(x)
    assert h.amax_percentile(50) == pytest.approx(5000, rel=2e-3)
    assert h.amax_percentile(100) == h.amax_minmax() == 10_000
    with pytest.raises(EdgesegError, match="percentile"):
        h.amax_percentile(0)


# ----------------------------------------------------------------------------- streaming
def test_streamed_batches_equal_one_pass_exactly():
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal(10_000) * s for s in (0.5, 0.4, 3.0, 1.0, 25.0, 2.0)]  # range grows x2, x64
    streamed = AbsHistogram()
    for b in batches:
        streamed.add(b.astype(np.float32))
    assert streamed.total == sum(b.size for b in batches)  # nothing lost while re-binning
    one = AbsHistogram(inv_width=float(streamed.inv_width))  # one pass on the final grid
    one.add(np.concatenate(batches).astype(np.float32))
    assert np.array_equal(streamed.counts, one.counts)
    assert streamed.amax_kl() == one.amax_kl()
    assert streamed.amax_percentile(99.9) == one.amax_percentile(99.9)
    assert (streamed.min, streamed.max) == (one.min, one.max)


@pytest.mark.parametrize("grid", ["pow2", "trt"])
def test_range_growth_keeps_at_least_half_the_bins_in_use(grid):
    h = AbsHistogram(grid=grid)
    h.add(np.float32([1.0]))
    h.add(np.float32([1000.0]))  # 1000x wider: 10 doublings
    assert h.total == 2
    top = np.nonzero(h.counts)[0].max()
    assert h.num_bins // 2 <= top < h.num_bins


def test_non_finite_values_are_ignored_and_counted():
    h = AbsHistogram()
    h.add(np.float32([1.0, np.nan, -2.0, np.inf]))
    assert h.total == 2 and h.nonfinite == 2 and h.amax_minmax() == 2.0


def test_all_zero_tensor_gives_zero_range():
    h = AbsHistogram()
    h.add(np.zeros(100, np.float32))
    assert h.total == 100 and h.amax_kl() == 0.0 and h.amax_minmax() == 0.0


def _threshold(batches, grid):
    h = AbsHistogram(grid=grid)
    for b in batches:
        h.add(np.asarray(b, np.float32))
    return h


def test_pow2_histogram_is_independent_of_the_order_of_the_images():
    # The reported reproducer: a first batch with max 10, then one value of 10.5.
    rng = np.random.default_rng(0)
    first = np.concatenate([rng.standard_normal(200_000) * 2.0, [10.0]])
    second = np.concatenate([rng.standard_normal(200_000) * 2.0, [10.5]])
    a, b = _threshold([first, second], "pow2"), _threshold([second, first], "pow2")
    assert np.array_equal(a.counts, b.counts) and a.inv_width == b.inv_width
    assert a.amax_kl() == b.amax_kl()
    one = _threshold([np.concatenate([first, second])], "pow2")  # and equal to one pass over everything
    assert np.array_equal(one.counts, a.counts) and one.amax_kl() == a.amax_kl()
    # TensorRT's rule, kept as an option, is not: the first batch sizes its bins.
    ta, tb = _threshold([first, second], "trt"), _threshold([second, first], "trt")
    assert ta.inv_width != tb.inv_width and ta.amax_kl() != tb.amax_kl()


def test_pow2_keeps_full_resolution_where_trt_growth_halves_it():
    # After growth, TensorRT's grid keeps the max in 1024..2047 of 2048 bins; pow2 always
    # has at least 2048 bins below the max, so its thresholds are at least as fine.
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal(50_000), rng.standard_normal(50_000) * 1.5]
    trt, pow2 = _threshold(batches, "trt"), _threshold(batches, "pow2")
    assert pow2.used_bins() >= 2048
    top = int(np.nonzero(trt.counts)[0].max())
    assert top < 2048 and pow2.bin_width < trt.bin_width
    # same threshold region
    assert abs(pow2.amax_kl() - trt.amax_kl()) < 0.15 * trt.amax_kl()


def test_kl_smoothing_on_a_clipped_distribution_keeps_the_spike():
    # A ReLU6 output: most mass below 6, a spike of saturated values exactly at 6. The
    # eps smoothing must not let KL cut below the spike when it holds real mass.
    rng = np.random.default_rng(2)
    x = np.clip(np.abs(rng.standard_normal(200_000)) * 2.5, 0, 6)
    h = _threshold([x], "pow2")
    assert (x == 6).mean() > 0.01
    assert h.amax_kl() >= 5.9


def test_bin_count_must_be_a_power_of_two():
    with pytest.raises(EdgesegError, match="power of two"):
        AbsHistogram(1000)


# ----------------------------------------------------------------------------- on a graph
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    model = make_model(root / "model")
    images = make_images(root / "images", n=5)
    return model, images


def _images(model, folder, num=None):
    spec, _ = spec_for_model(model)
    return select_images(folder, spec, num=num)


def test_table_covers_every_float_activation_and_nothing_else(tiny):
    import onnx

    model_path, folder = tiny
    table = calibrate(model_path, _images(model_path, folder), method="minmax")
    model = onnx.load(model_path)
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {vi.name for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
              if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    expected = {"image"} | (floats - constants)
    assert set(table.ranges) == expected
    assert not any("Shape" in name or "Concat" in name for name in table.ranges)  # int64 shape maths
    assert table.num_images == 5 and table.method == "minmax"
    assert table.model_sha256 == sha256_file(model_path)


def test_minmax_ranges_equal_a_direct_computation(tiny):
    model_path, folder = tiny
    images = _images(model_path, folder)
    table = calibrate(model_path, images, method="minmax")
    from edgeseg.runtimes.onnxruntime import OnnxRuntimeRuntime

    names = [n for n in table.ranges if n != "image"]
    # Same graph optimisation level as the calibrator, so fused kernels round alike.
    rt = OnnxRuntimeRuntime(model_path, optimization="extended", extra_outputs=names)
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for feed in images.feeds():
        out = rt.run(feed, output_names=names)
        for n in names:
            lo[n], hi[n] = min(lo[n], out[n].min()), max(hi[n], out[n].max())
    for n in names:
        r = table.ranges[n]
        assert (r.min, r.max) == (float(lo[n]), float(hi[n]))
        assert r.amax == max(-r.min, r.max)


def test_several_passes_give_exactly_the_same_table(tiny):
    model_path, folder = tiny
    images = _images(model_path, folder)
    one = HistogramCalibrator(model_path)
    one.collect(images.feeds())
    many = HistogramCalibrator(model_path, max_pass_mb=0.004)  # ~4 KB: one tensor per pass
    stats = many.collect(images.feeds())
    assert stats.passes > 5 and one.stats.passes == 1
    for method in ("kl", "minmax", "percentile"):
        a, b = one.compute(method), many.compute(method)
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] for k in a)


def test_one_collection_serves_every_method(tiny):
    model_path, folder = tiny
    cal = HistogramCalibrator(model_path)
    cal.collect(_images(model_path, folder).feeds())
    kl, mm, pc = cal.compute("kl"), cal.compute("minmax"), cal.compute("percentile", 99.0)
    assert all(kl[k].amax <= mm[k].amax + 1e-9 and pc[k].amax <= mm[k].amax + 1e-9 for k in mm)
    assert any(pc[k].amax < mm[k].amax for k in mm)
    with pytest.raises(EdgesegError, match="unknown calibration method"):
        cal.compute("mse")


def test_select_tensors_skips_constants(tiny):
    import onnx

    model_path, _ = tiny
    names = [t.name for t in select_tensors(onnx.load(model_path))]
    assert names[0] == "image"
    assert "/neck/Constant_output_0" not in names  # Resize scales: a constant, not an activation
    assert all(t.nbytes for t in select_tensors(onnx.load(model_path)))  # static shapes are sized


def test_corrupt_or_missing_model_is_one_clear_error(tmp_path, tiny):
    _, folder = tiny
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(EdgesegError, match="not a readable ONNX model"):
        HistogramCalibrator(bad)
    with pytest.raises(EdgesegError, match="not found"):
        HistogramCalibrator(tmp_path / "missing.onnx")


# ----------------------------------------------------------------------------- CLI
def _run(args):
    from click.testing import CliRunner

    from edgeseg.cli import cli

    return CliRunner().invoke(cli, args)


def test_cli_writes_table_and_trt_cache_and_records_the_manifest(tmp_path):
    model = make_model(tmp_path / "art")
    folder = make_images(tmp_path / "imgs", n=4)
    res = _run(["calibrate", str(model), "--images", str(folder), "--num", "3", "--method", "percentile",
                "--percentile", "99.9", "--trt-cache", str(tmp_path / "art" / "tiny.calib"),
                "--trt-version", "8.6.1"])
    assert res.exit_code == 0, res.output
    table_path = tmp_path / "art" / "tiny.percentile.calib.json"
    table = CalibrationTable.load(table_path)
    assert table.num_images == 3 and table.settings["percentile"] == 99.9 and len(table.settings["images"]) == 3
    cache = read_trt_cache(tmp_path / "art" / "tiny.calib")
    assert cache.settings["trt_version"] == "8601" and set(cache.ranges) == set(table.ranges)
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["artifacts"]["tiny.percentile.calib.json"]["kind"] == "calibration-table"
    assert manifest["artifacts"]["tiny.calib"]["kind"] == "tensorrt-calibration-cache"
    assert manifest["history"][-1]["step"] == "calibrate"


def test_cli_empty_folder_fails_cleanly_without_a_table(tmp_path):
    from edgeseg.cli import main

    model = make_model(tmp_path / "art")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "table.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(model), "--images", str(tmp_path / "empty"), "-o", str(out)])
    assert e.value.code == 1
    assert not out.exists()
    assert sorted(os.listdir(tmp_path / "art")) == ["manifest.json", "tiny.onnx"]


def test_cli_help_shows_an_example():
    res = _run(["calibrate", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "edgeseg calibrate" in res.output
