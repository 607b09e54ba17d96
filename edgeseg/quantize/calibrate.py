"""Activation calibration: stream images through ONNX Runtime, keep histograms, compute ranges.

The work is split the way ONNX Runtime's calibrators split it, *collect* then *compute*,
with one difference that matters on real models: collection never keeps activations.
Every output is reduced to a fixed-size histogram of ``|x|`` (plus its signed min and
max) as soon as ONNX Runtime returns it, so memory is bounded by one image's activations
(or less, see ``max_pass_mb``) plus ``num_tensors * num_bins`` counters, whatever the
number of images. ONNX Runtime's own calibrators keep every intermediate output of every
image until the end.

One collection serves every method: ``minmax``, ``percentile`` and ``kl`` all read the
same histograms, so ``compute()`` can be called again with another method without
re-running the model.

Which tensors: every float activation of the graph (graph inputs and node outputs that
are not constants). QDQ quantizes a subset of them that depends on the precision plan;
calibrating all of them once means one table serves every plan and every backend
(TensorRT's cache wants a scale for every tensor it may run in INT8).

Histograms (``histogram=``): the default, ``pow2``, puts the bins on an absolute grid of
power-of-two widths (4096 bins; the width is the smallest power of two that holds the final
max |x|), so the counts are the same whatever the order of the images, and the max always
lies in the upper half: at least 2048 bins of resolution over [0, max]. ``trt`` reproduces
TensorRT's calibrator: 2048 bins sized by the *first* batch, doubled (pairs merged) when a
later batch exceeds them; its final bin width, and so the KL threshold, depends on which
image came first (measured on MobileInst-TopFormer at 320 with 20 images: 350 of 390
tensors ended with 2x wider bins than a fixed grid, 13 with 4x).

KL follows TensorRT's EntropyCalibration2 on the histogram's used bins (2048 for ``trt``;
2048..4096 for ``pow2``, the candidates starting at the same 1/16 of them); for every
candidate threshold from the start bin to the last bin, the bins above it are folded into the
last kept bin (reference P), the kept bins are merged into 128 quantization levels and
expanded back over the non-empty bins (candidate Q), both are smoothed, and the
candidate with the smallest KL(P || Q) wins (ties: the wider one). As in TensorRT, the
count of bin 0 is replaced by that of bin 1 first: exact zeros (ReLU outputs) are exact
at any scale and would otherwise drag every threshold down to the smallest candidate.
The threshold is the upper edge of the last kept bin, capped at the observed max |x|.

Smoothing: where P has mass and Q has none, KL is infinite; the reference (and TensorRT)
avoids that by giving every empty bin ``eps`` (1e-4 of a count) taken evenly from the
non-empty bins. The choice matters on clipped distributions (a ReLU6 output with a spike
at 6): without it every candidate that cuts below the spike is infinitely bad; with it such
candidates are merely very bad, and the threshold can land a little below the spike when
the mass there is small. ``tests/test_calibrate.py`` pins the behaviour on such a case.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.quantize.cache import CalibrationTable, TensorRange

METHODS = ("kl", "minmax", "percentile")
DEFAULT_NUM_BINS = 2048   # TensorRT's histogram size (``histogram="trt"``)
POW2_NUM_BINS = 4096      # the order-independent grid: the max lands in bins 2048..4095
HISTOGRAMS = ("pow2", "trt")
DEFAULT_PERCENTILE = 99.99
KL_QUANTIZED_BINS = 128  # int8 has 128 levels on each side of zero
KL_START_BIN = 128
KL_SMOOTHING_EPS = 1e-4  # added to empty bins (on the count scale), taken from the others
DEFAULT_MAX_PASS_MB = 1024


# ============================================================================ histogram
class AbsHistogram:
    """Streaming histogram of ``|x|`` over ``[0, num_bins / inv_width)`` with exact growth.

    Bin of a value: ``floor(|x| * inv_width)`` computed in float32. When a batch exceeds the
    range, ``inv_width`` is halved as often as needed and pairs of old bins are merged.
    Halving a float is exact and ``floor(floor(y) / 2) == floor(y / 2)``, so the merged
    counts are exactly what the wider histogram would have counted. Nothing is ever
    clipped or lost.

    ``grid="pow2"`` (order-independent): ``inv_width`` is a power of two, the first one
    that holds the first batch's max; growth keeps it a power of two, so the final width is
    the smallest power of two holding the overall max, *whatever the order of the batches*,
    and the counts equal one pass over all the data at that width.
    ``grid="trt"`` (TensorRT's rule): the first non-zero batch sets
    ``inv_width = (num_bins - 1) / max|x|``; the final width depends on that first batch.
    """

    def __init__(self, num_bins: int | None = None, inv_width: float | None = None, grid: str = "pow2"):
        if grid not in HISTOGRAMS:
            raise EdgesegError(f"unknown histogram {grid!r}", f"use one of: {', '.join(HISTOGRAMS)}")
        num_bins = num_bins or (POW2_NUM_BINS if grid == "pow2" else DEFAULT_NUM_BINS)
        if num_bins < 256 or num_bins & (num_bins - 1):
            # Power of two: every growth step halves the bin count in use by pairing bins.
            raise EdgesegError(f"histogram bin count {num_bins} is not a power of two >= 256",
                               "use 2048 (TensorRT's value) or another power of two")
        self.grid = grid
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.inv_width = None if inv_width is None else np.float32(inv_width)
        self.min = math.inf
        self.max = -math.inf
        self.nonfinite = 0

    def _first_inv_width(self, amax: np.float32) -> np.float32:
        if self.grid == "trt":
            return np.float32((self.num_bins - 1) / float(amax))
        # The largest power of two w^-1 with amax * w^-1 < num_bins (exact in float32).
        e = math.floor(math.log2(self.num_bins / float(amax)))
        inv = np.float32(2.0 ** e)
        while amax * inv >= self.num_bins:
            inv = np.float32(inv / np.float32(2))
        while amax * np.float32(inv * np.float32(2)) < self.num_bins:
            inv = np.float32(inv * np.float32(2))
        return inv

    # ------------------------------------------------------------------ collect
    def add(self, x: np.ndarray, scratch: "_Scratch | None" = None) -> None:
        """Count ``|x|``; ``scratch`` lends reusable work buffers (see :class:`_Scratch`)."""
        a = np.asarray(x)
        if a.size == 0:
            return
        if a.dtype != np.float32:
            a = a.astype(np.float32)
        a = a.ravel()
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            finite = np.isfinite(a)
            self.nonfinite += int(a.size - finite.sum())
            a = a[finite]
            if a.size == 0:
                return
            lo, hi = float(a.min()), float(a.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        amax = np.float32(max(-lo, hi))
        if amax == 0:
            self.counts[0] += a.size  # zeros sit in bin 0 whatever the range becomes
            return
        if self.inv_width is None:
            self.inv_width = self._first_inv_width(amax)
        while amax * self.inv_width >= self.num_bins:
            self._double_range()
        work = scratch.floats(a.size) if scratch is not None else np.empty(a.size, np.float32)
        np.abs(a, out=work)
        np.multiply(work, self.inv_width, out=work)
        # Truncation == floor for non-negative values. intp, not int32: bincount converts
        # anything else to intp itself, which made it three times slower (measured).
        idx = scratch.indices(a.size) if scratch is not None else np.empty(a.size, np.intp)
        np.copyto(idx, work, casting="unsafe")
        self.counts += np.bincount(idx, minlength=self.num_bins)

    def _double_range(self) -> None:
        self.inv_width = np.float32(self.inv_width / np.float32(2))
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.concatenate([merged, np.zeros(self.num_bins - merged.size, np.int64)])

    # ------------------------------------------------------------------ queries
    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def absmax(self) -> float:
        if self.max == -math.inf:
            return 0.0
        return max(0.0, -self.min, self.max)  # 0.0 first: never report -0.0

    @property
    def bin_width(self) -> float:
        return 0.0 if self.inv_width is None else 1.0 / float(self.inv_width)

    def edge(self, i: int) -> float:
        """Upper edge of the first ``i`` bins, capped at the observed max (never beyond data)."""
        return min(i * self.bin_width, self.absmax)

    # ------------------------------------------------------------------ ranges
    def amax_minmax(self) -> float:
        return self.absmax

    def amax_percentile(self, percentile: float = DEFAULT_PERCENTILE) -> float:
        """Smallest bin edge below which at least ``percentile`` % of ``|x|`` lies."""
        if not 0 < percentile <= 100:
            raise EdgesegError(f"percentile {percentile} is outside (0, 100]", "use e.g. 99.99")
        total = self.total
        if total == 0 or self.inv_width is None:
            return self.absmax
        cdf = np.cumsum(self.counts)
        i = int(np.searchsorted(cdf, total * (percentile / 100.0), side="left")) + 1
        return self.edge(min(i, self.num_bins))

    def amax_kl(self, num_quantized_bins: int = KL_QUANTIZED_BINS, start_bin: int = KL_START_BIN) -> float:
        if self.inv_width is None or self.total == 0:
            return self.absmax
        used = self.used_bins()
        counts = self.counts[:used].copy()
        # Exact zeros (a ReLU output is often half zeros) are exact in int8 at any scale.
        # Left in, their spike in bin 0 makes every candidate that merges bin 0 with its
        # neighbours look terrible, and KL collapses onto the smallest threshold. TensorRT's
        # calibrator (as its pytorch-quantization twin shows) replaces bin 0 by bin 1.
        counts[0] = counts[1]
        # TensorRT starts at bin 128 of 2048: thresholds from 1/16 of the range. The pow2 grid
        # uses 2048..4096 bins; the same fraction keeps the same candidate range.
        start = max(num_quantized_bins, -(-start_bin * used // DEFAULT_NUM_BINS))
        i = kl_best_bin(counts, num_quantized_bins, start)
        return self.edge(i)

    def used_bins(self) -> int:
        """Bins that can hold data: all of them for ``trt``; up to the max's bin for ``pow2``
        (the grid's upper half may be empty: KL over empty bins is KL over nothing)."""
        if self.grid == "trt" or self.inv_width is None:
            return self.num_bins
        top = int(np.float32(self.absmax) * self.inv_width) + 1
        return max(min(top, self.num_bins), DEFAULT_NUM_BINS // 2)


class _Scratch:
    """Work buffers reused across tensors and images.

    Fresh arrays for every activation mean page faults on hundreds of MB per image;
    reusing two buffers halved the histogramming time on MobileInst's activations (measured).
    """

    def __init__(self):
        self._f = np.empty(0, np.float32)
        self._i = np.empty(0, np.intp)

    def floats(self, n: int) -> np.ndarray:
        if self._f.size < n:
            self._f = np.empty(n, np.float32)
        return self._f[:n]

    def indices(self, n: int) -> np.ndarray:
        if self._i.size < n:
            self._i = np.empty(n, np.intp)
        return self._i[:n]


_TAYLOR_TERMS = 24  # shift c <= eps * num_bins < 0.21 and counts >= 1: 0.21**24 < 1e-16


@functools.lru_cache(maxsize=8)
def _level_bounds(n: int, levels: int, start: int) -> np.ndarray:
    """First bin of every level, for every candidate (depends on the sizes only: cached)."""
    i = np.arange(start, n + 1)
    bounds = (np.arange(levels + 1)[None, :] * i[:, None] + levels - 1) // levels
    bounds.setflags(write=False)
    return bounds


def kl_divergences(counts: np.ndarray, num_quantized_bins: int = KL_QUANTIZED_BINS,
                   start_bin: int = KL_START_BIN) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed KL(P || Q) for every candidate bin count ``i`` in ``[start_bin, len(counts)]``.

    For candidate ``i`` (bins ``0..i-1`` kept):

    * P: the kept counts, with every count above the threshold added to bin ``i-1``;
    * Q: the kept counts merged into ``num_quantized_bins`` levels (bin ``j`` goes to level
      ``floor(j * levels / i)``), each level's sum spread evenly over its non-empty bins,
      empty bins staying empty;
    * smoothing (on counts): every empty bin gets ``eps``, taken evenly from the non-empty
      bins, so the totals are unchanged and no bin of Q is zero where P is not;
    * KL = sum p log(p / q) of the normalised distributions.

    Rather than building P and Q for each of the ~2000 candidates (O(bins^2)), the sums
    are evaluated in closed form from prefix sums: Q is constant over the non-empty bins
    of a level, so its part is a sum over 128 levels; P's ``sum (h - c) log(h - c)`` uses
    the Taylor series of ``(h - c) log(h - c)`` in the smoothing shift ``c`` (< 0.21 while
    every non-empty count is >= 1), which converges to float64 precision in 24 terms.
    ``tests/test_calibrate.py`` checks this against a direct per-candidate computation.
    """
    h = np.asarray(counts, dtype=np.float64)
    n = h.size
    levels = num_quantized_bins
    start = min(max(start_bin, levels), n)
    i = np.arange(start, n + 1)
    eps = KL_SMOOTHING_EPS

    def prefix(v: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(v)])

    nz = h > 0
    hz = np.where(nz, h, 1.0)
    C = prefix(h)  # C[k] = sum h[:k]
    NZ = prefix(nz.astype(np.float64))
    H0 = prefix(np.where(nz, h * np.log(hz), 0.0))
    L1 = prefix(np.where(nz, np.log(hz) + 1.0, 0.0))
    R = [prefix(np.where(nz, hz ** -m, 0.0)) for m in range(1, _TAYLOR_TERMS)]
    T = C[-1]

    last = i - 1
    h_last = h[last]
    p_last = h_last + (T - C[i])  # outliers folded into the last kept bin
    z_before = (i - 1) - NZ[i - 1]  # empty bins among 0..i-2 (identical in P and Q)
    zP = z_before + (p_last == 0)
    cP = eps * zP / (i - zP)
    nzQ = NZ[i]
    cQ = eps * (i - nzQ) / np.maximum(nzQ, 1)

    # sum over non-empty bins j < i-1 of (h - cP) log(h - cP), by Taylor series in cP.
    a = H0[i - 1] - cP * L1[i - 1]
    c_pow = cP.copy()
    for m in range(1, _TAYLOR_TERMS):
        c_pow = c_pow * cP
        a = a + c_pow / ((m + 1) * m) * R[m - 1][i - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_last_s = np.where(p_last > 0, p_last - cP, eps)
        sum_plogp = a + p_last_s * np.log(p_last_s)  # the empty bins' eps*log(eps) cancel below

        # Q's levels: level k covers bins [ceil(k*i/levels), ceil((k+1)*i/levels)).
        bounds = _level_bounds(n, levels, start)
        lev_sum = np.diff(C[bounds], axis=1)
        lev_nnz = np.diff(NZ[bounds], axis=1)
        q_lev = lev_sum / np.maximum(lev_nnz, 1) - cQ[:, None]
        # P mass on each level's non-empty bins; an empty level has none, so its log
        # term is multiplied by exactly 0 and the clamp below never matters.
        p_lev = lev_sum - cP[:, None] * lev_nnz
        p_lev[:, -1] -= h_last - cP * (h_last > 0)  # bin i-1 is accounted for separately
        sum_plogq = np.einsum("ij,ij->i", p_lev, np.log(np.maximum(q_lev, 1e-300)))
        q_last = np.where(h_last > 0, q_lev[:, -1], eps)
        sum_plogq = sum_plogq + p_last_s * np.log(q_last)
        kl = (sum_plogp - sum_plogq) / T + np.log(C[i] / T)
    kl = np.where((nzQ > 0) & np.isfinite(kl), kl, np.inf)  # all mass above the threshold: unusable
    return i, kl


def kl_best_bin(counts: np.ndarray, num_quantized_bins: int = KL_QUANTIZED_BINS,
                start_bin: int = KL_START_BIN) -> int:
    """Number of bins kept by the smallest-divergence threshold (ties: the larger one, less clipping)."""
    candidates, div = kl_divergences(counts, num_quantized_bins, start_bin)
    if not np.isfinite(div).any():
        return int(candidates[-1])
    return int(candidates[div.size - 1 - int(np.argmin(div[::-1]))])


# ============================================================================ which tensors
_CONSTANT_OPS = {"Constant", "ConstantOfShape"}


@dataclass
class CalibrationTarget:
    name: str
    nbytes: int | None  # from static shape inference; None when unknown


def select_tensors(model) -> list[CalibrationTarget]:
    """Float activations: graph inputs and node outputs that are not constants, graph order.

    A node output is constant when all of the node's inputs are initializers or other
    constants (folded shape arithmetic, a Constant node): it is a weight, not an activation.
    """
    from onnx import TensorProto, shape_inference

    try:
        # data_prop folds Shape -> Slice -> Concat chains, so reshaped tensors get sizes too.
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is a help for sizing, not a requirement
        inferred = model
    g = inferred.graph
    types: dict[str, Any] = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        types[vi.name] = vi.type.tensor_type
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}

    def info(name: str) -> tuple[bool, int | None]:
        t = types.get(name)
        if t is None or not t.elem_type:
            return True, None  # unknown: collect it and check the dtype at run time
        if t.elem_type not in floats:
            return False, None
        if not t.HasField("shape"):
            return True, None
        n = 1
        for d in t.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                return True, None
            n *= d.dim_value
        return True, n * 4

    constant = {i.name for i in g.initializer}
    out: list[CalibrationTarget] = []
    seen: set[str] = set()
    for inp in g.input:
        if inp.name in constant:
            continue
        is_float, nbytes = info(inp.name)
        if is_float:
            out.append(CalibrationTarget(inp.name, nbytes))
            seen.add(inp.name)
    for node in g.node:
        inputs = [x for x in node.input if x]
        if node.op_type in _CONSTANT_OPS or (inputs and all(x in constant for x in inputs)):
            constant.update(o for o in node.output if o)
            continue
        for o in node.output:
            if not o or o in seen:
                continue
            is_float, nbytes = info(o)
            if is_float:
                out.append(CalibrationTarget(o, nbytes))
                seen.add(o)
    return out


def plan_passes(targets: Sequence[CalibrationTarget], graph_inputs: set[str],
                max_pass_bytes: int) -> list[list[str]]:
    """Split the exposed tensors into groups whose total size fits ``max_pass_bytes``.

    Graph inputs are histogrammed from the feeds, so they never need a pass. Each extra
    pass re-runs the model on every image: the price of a memory bound on huge graphs.
    """
    groups: list[list[str]] = [[]]
    used = 0
    for t in targets:
        if t.name in graph_inputs:
            continue
        size = t.nbytes or 0
        if groups[-1] and used + size > max_pass_bytes:
            groups.append([])
            used = 0
        groups[-1].append(t.name)
        used += size
    return [g for g in groups if g]


# ============================================================================ calibrator
@dataclass
class CollectStats:
    images: int = 0
    passes: int = 0
    tensors: int = 0
    skipped_non_float: list[str] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)


class HistogramCalibrator:
    """Collect histograms of every float activation of an ONNX model, then compute ranges.

    ``collect(feeds)`` may be called once with a re-iterable source (it is iterated once
    per pass); ``compute(method)`` can be called any number of times afterwards.
    """

    def __init__(self, model_path: str | os.PathLike, num_bins: int | None = None,
                 max_pass_mb: float = DEFAULT_MAX_PASS_MB, threads: int = 0,
                 tensors: Sequence[str] | None = None, histogram: str = "pow2"):
        if histogram not in HISTOGRAMS:
            raise EdgesegError(f"unknown histogram {histogram!r}", f"use one of: {', '.join(HISTOGRAMS)}")
        self.model_path = Path(model_path)
        self.model = load_onnx(self.model_path)
        self.histogram = histogram
        self.num_bins = num_bins or (POW2_NUM_BINS if histogram == "pow2" else DEFAULT_NUM_BINS)
        self.threads = threads
        self.max_pass_bytes = int(max_pass_mb * 2 ** 20)
        targets = select_tensors(self.model)
        if tensors is not None:
            wanted = set(tensors)
            targets = [t for t in targets if t.name in wanted]
        self.targets = targets
        self.graph_inputs = {i.name for i in self.model.graph.input}
        self.histograms: dict[str, AbsHistogram] = {}
        self.stats = CollectStats()

    # ------------------------------------------------------------------ collect
    def passes(self) -> list[list[str]]:
        return plan_passes(self.targets, self.graph_inputs, self.max_pass_bytes)

    def _session(self, outputs: list[str]):
        import onnx
        import onnxruntime as ort

        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        existing = {o.name for o in m.graph.output}
        for name in outputs:
            if name not in existing:
                m.graph.output.append(onnx.ValueInfoProto(name=name))
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        # Extended, not all: fusions never swallow a tensor that is a graph output, and the
        # NCHWc layout rewrite of "all" adds a reorder per exposed output. Measured on
        # MobileInst-TopFormer at 640 with every activation exposed, one thread: basic
        # 0.49 s, extended 0.35 s, all 0.40 s per image.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        try:
            return ort.InferenceSession(m.SerializeToString(), sess_options=so,
                                        providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EdgesegError(
                f"ONNX Runtime cannot run {self.model_path.name} for calibration: "
                f"{str(e).strip().splitlines()[0]}",
                "check the model runs with `edgeseg bench`; re-export it with `edgeseg export`") from e

    def _hist(self, name: str) -> AbsHistogram:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = AbsHistogram(self.num_bins, grid=self.histogram)
        return h

    def collect(self, feeds: Iterable[dict[str, np.ndarray]],
                progress: Callable[[Iterable, str, int | None], Iterator] | None = None,
                total: int | None = None) -> CollectStats:
        """Run every feed dict through the model once per pass and histogram the activations."""
        from edgeseg.utils.progress import track

        progress = progress or track
        groups = self.passes()
        input_targets = [t.name for t in self.targets if t.name in self.graph_inputs]
        if not groups and not input_targets:
            raise EdgesegError(f"{self.model_path.name} has no float activations to calibrate",
                               "check that the model takes and produces float tensors")
        non_float: set[str] = set()
        scratch = _Scratch()
        images = 0
        for p, group in enumerate(groups or [[]]):
            session = self._session(group) if group else None
            label = "calibrating" if len(groups) <= 1 else f"calibrating (pass {p + 1}/{len(groups)})"
            images = 0
            for feed in progress(feeds, label, total):
                images += 1
                if p == 0:
                    for name in input_targets:
                        self._hist(name).add(feed[name], scratch)
                if session is None:
                    continue
                values = session.run(group, feed)
                # Reduce each output as soon as it arrives and drop it, so only the
                # arrays of this one run are ever alive.
                for i, name in enumerate(group):
                    arr = values[i]
                    values[i] = None
                    if not (isinstance(arr, np.ndarray) and np.issubdtype(arr.dtype, np.floating)):
                        non_float.add(name)
                        continue
                    self._hist(name).add(arr, scratch)
                del values
            if images == 0:
                raise EdgesegError("no calibration images were given", "pass a folder with JPEG/PNG images")
            del session
        for name in non_float:
            self.histograms.pop(name, None)
        self.stats = CollectStats(
            images=images, passes=len(groups), tensors=len(self.histograms),
            skipped_non_float=sorted(non_float),
            nonfinite={k: h.nonfinite for k, h in self.histograms.items() if h.nonfinite})
        return self.stats

    # ------------------------------------------------------------------ compute
    def compute(self, method: str = "kl", percentile: float = DEFAULT_PERCENTILE) -> dict[str, TensorRange]:
        if method not in METHODS:
            raise EdgesegError(f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}")
        if not self.histograms:
            raise EdgesegError("nothing was collected", "call collect() with at least one image first")
        ranges: dict[str, TensorRange] = {}
        for t in self.targets:  # graph order, so tables and caches read top to bottom
            h = self.histograms.get(t.name)
            if h is None:
                continue
            if method == "minmax":
                amax = h.amax_minmax()
            elif method == "percentile":
                amax = h.amax_percentile(percentile)
            else:
                amax = h.amax_kl()
            lo = h.min if math.isfinite(h.min) else 0.0
            hi = h.max if math.isfinite(h.max) else 0.0
            ranges[t.name] = TensorRange(amax=float(amax), min=float(lo), max=float(hi))
        return ranges


# ============================================================================ top level
def load_onnx(path: str | os.PathLike):
    """Load an ONNX file or raise one clear error (missing, corrupt, not ONNX)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise EdgesegError(f"ONNX model {p} not found", "check the path, or export one with `edgeseg export`")
    try:
        model = onnx.load(os.fspath(p))
    except Exception as e:  # protobuf DecodeError and friends
        raise EdgesegError(f"{p.name} is not a readable ONNX model ({type(e).__name__})",
                           "the file is corrupt or not ONNX; re-export it with `edgeseg export`") from e
    if not model.graph.node:
        raise EdgesegError(f"{p.name} has an empty graph", "re-export it with `edgeseg export`")
    return model


def calibrate(model_path: str | os.PathLike, images, method: str = "kl",
              percentile: float = DEFAULT_PERCENTILE, num_bins: int | None = None,
              max_pass_mb: float = DEFAULT_MAX_PASS_MB, threads: int = 0,
              histogram: str = "pow2") -> CalibrationTable:
    """Calibrate ``model_path`` on an :class:`edgeseg.data.images.CalibrationImages` set."""
    from edgeseg.utils.hashing import sha256_file

    if method not in METHODS:
        raise EdgesegError(f"unknown calibration method {method!r}", f"use one of: {', '.join(METHODS)}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise EdgesegError(f"percentile {percentile} is outside (0, 100]", "use e.g. 99.99")
    calibrator = HistogramCalibrator(model_path, num_bins=num_bins, max_pass_mb=max_pass_mb, threads=threads,
                                     histogram=histogram)
    input_name = images.spec.name
    graph_inputs = [i.name for i in calibrator.model.graph.input
                    if i.name not in {x.name for x in calibrator.model.graph.initializer}]
    if graph_inputs != [input_name]:
        raise EdgesegError(f"the model's inputs are {graph_inputs}, the input spec names {input_name!r}",
                           "calibrate a single-input image model exported by `edgeseg export`")
    feeds = images.feeds()
    stats = calibrator.collect(feeds, total=len(images))
    ranges = calibrator.compute(method, percentile)
    settings: dict[str, Any] = {"histogram": histogram, "num_bins": calibrator.num_bins, "passes": stats.passes}
    if method == "kl":
        settings.update(num_quantized_bins=KL_QUANTIZED_BINS, start_bin=KL_START_BIN,
                        smoothing_eps=KL_SMOOTHING_EPS)
    if method == "percentile":
        settings["percentile"] = percentile
    settings.update(images.settings())
    if stats.nonfinite:
        settings["nonfinite_values"] = stats.nonfinite
    return CalibrationTable(method=method, ranges=ranges, num_images=stats.images,
                            model_sha256=sha256_file(model_path), images_sha256=images.sha256,
                            settings=settings)
