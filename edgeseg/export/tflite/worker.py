"""The TensorFlow side of the TFLite export, run in a child process.

``python -m edgeseg.export.tflite.worker JOB.json`` converts one ONNX file:

1. onnx2tf -> Keras model (in memory). onnx2tf is patched so that it never reaches the
   network: its sample-image download returns our own preprocessed images, and any HTTP
   request raises. While it converts, we record which ONNX node created each Keras layer
   and which layer produces each ONNX tensor (:class:`~edgeseg.export.tflite.mapping.ConversionRecord`).
2. Keras model -> SavedModel with one signature whose inputs and outputs carry the ONNX
   names (sanitized), so the runtime can match them by name.
3. SavedModel -> ``.tflite`` with ``tf.lite.TFLiteConverter``, builtin ops only (a Flex op
   is an error, not a silent dependency on the Flex delegate):
   * fp32 / fp16 (whole model): one conversion.
   * int8 components: calibrate with the representative images, overwrite the recorded
     ranges with ours (CalibrationTable) where a TFLite tensor maps to an ONNX tensor,
     then quantize with every op of a non-int8 component denylisted.
   * fp16 components of a mixed plan: their float weights become float16 + DEQUANTIZE.

Why a child process: TensorFlow and onnx2tf print a great deal from C++ (absl) and Python;
running them apart sends all of it into the artifact's log file, keeps TensorFlow out of
the caller's process (which may hold torch), and a crash inside TensorFlow becomes an
error message instead of taking the CLI down.

The parent (:mod:`edgeseg.export.tflite.converter`) writes the job and reads ``report.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

import numpy as np


class StageError(Exception):
    def __init__(self, stage: str, message: str, **details: Any):
        super().__init__(message)
        self.stage = stage
        self.details = details


def sanitize_key(name: str) -> str:
    """A SavedModel signature key for an ONNX I/O name (letters, digits, ``_`` only)."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return key if key and not key[0].isdigit() else f"t_{key}"


# ============================================================================ onnx2tf
def _block_network() -> None:
    """Make any HTTP request from onnx2tf fail loudly: this export must work offline."""
    import requests

    def refuse(*args, **kwargs):
        url = args[1] if len(args) > 1 else kwargs.get("url", "?")
        raise StageError("onnx2tf", f"onnx2tf tried to download {url}; edgeseg exports offline")

    requests.api.request = refuse
    requests.get = lambda url, *a, **k: refuse(None, url)
    requests.Session.request = refuse


def _channels_last_input_for_depthwise(graph_node, tf_layers_dict):
    """Work around onnx2tf 1.29's Conv deciding "depthwise" from its input's shape *before*
    its own channels-first -> channels-last fix of that input.

    onnx2tf leaves the output of some Adds channels-first (its broadcast "rescue" transposes
    to the ONNX shape). A depthwise Conv reading such a tensor sees the width where the
    channels should be, is built as a Keras grouped convolution instead of a depthwise one
    (an untracked variable: the SavedModel cannot be written, and a grouped CONV_2D is not
    what a phone should run). Here, only for the call converting that Conv, the input is
    handed over channels-last, exactly as onnx2tf would transpose it itself; the entry is
    restored afterwards so no other consumer sees a change. Returns the restore callable.
    """
    def noop():
        return None

    try:
        if graph_node is None or graph_node.op != "Conv" or tf_layers_dict is None:
            return noop
        group = int(graph_node.attrs.get("group", 1))
        x, w = graph_node.inputs[0], graph_node.inputs[1]
        onnx_shape = list(x.shape) if x.shape is not None else None
        w_shape = list(getattr(w, "shape", None) or [])
        if group == 1 or not onnx_shape or len(onnx_shape) != 4 or len(w_shape) != 4 or w_shape[1] != 1:
            return noop
        entry = tf_layers_dict.get(x.name)
        tensor = entry.get("tf_node") if entry else None
        tf_shape = [d if isinstance(d, int) else None for d in getattr(tensor, "shape", [])]
        if tf_shape != onnx_shape or group != onnx_shape[1] or len(set(onnx_shape[1:])) == 1:
            return noop  # already channels-last (or ambiguous: left to onnx2tf)
        import tensorflow as tf

        entry["tf_node"] = tf.transpose(tensor, [0, 2, 3, 1])

        def restore():
            entry["tf_node"] = tensor

        return restore
    except Exception:  # a guard around a third-party quirk must never break a conversion
        return noop


def run_onnx2tf(job: dict[str, Any], samples_nhwc: np.ndarray):
    """Convert; return (keras model, tf_layers_dict, recorded (layer, node) pairs)."""
    _block_network()
    import onnx2tf.onnx2tf as o2t
    import tf_keras
    from tf_keras.src.engine import base_layer

    # onnx2tf runs test inferences on sample images (and downloads 20 COCO crops for
    # them). Give it ours: the representative images the export calibrates with.
    o2t.download_test_image_data = lambda: samples_nhwc

    current: list[str | None] = [None]
    created: list[tuple[Any, str]] = []
    layers_dict: list[dict] = []
    unsupported: list[tuple[str, str]] = []

    original_init = base_layer.Layer.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if current[0] is not None and not isinstance(self, tf_keras.Model):
            created.append((self, current[0]))

    base_layer.Layer.__init__ = recording_init

    class RecordingOp:
        def __init__(self, module):
            self._module = module

        def __getattr__(self, item):
            return getattr(self._module, item)

        def make_node(self, *args, graph_node=None, tf_layers_dict=None, **kwargs):
            if tf_layers_dict is not None and not layers_dict:
                layers_dict.append(tf_layers_dict)
            current[0] = getattr(graph_node, "name", None)
            restore = _channels_last_input_for_depthwise(graph_node, tf_layers_dict)
            try:
                return self._module.make_node(*args, graph_node=graph_node, tf_layers_dict=tf_layers_dict,
                                              **kwargs)
            finally:
                current[0] = None
                restore()

    real_import = importlib.import_module

    def import_module(name, *args):
        try:
            module = real_import(name, *args)
        except ModuleNotFoundError:
            if name.startswith("onnx2tf.ops."):
                unsupported.append((name.rsplit(".", 1)[1], current[0] or ""))
            raise
        return RecordingOp(module) if name.startswith("onnx2tf.ops.") else module

    o2t.importlib = types.SimpleNamespace(import_module=import_module)
    try:
        model = o2t.convert(
            input_onnx_file_path=job["onnx"],
            output_folder_path=job["saved_model"],
            disable_model_save=True,  # we save the SavedModel ourselves, with named outputs
            not_use_onnxsim=True,  # `edgeseg export` already simplified; onnxsim is not installed
            not_use_opname_auto_generate=True,  # it would rewrite the ONNX file in place
            output_signaturedefs=True,
            verbosity="debug",  # all of it goes to the log; it names the op that failed
        )
    except SystemExit as e:  # onnx2tf reports some failures by sys.exit(1)
        if unsupported:
            raise StageError("onnx2tf", f"onnx2tf has no converter for ONNX op {unsupported[0][0]}",
                             op=unsupported[0][0], node=unsupported[0][1]) from e
        raise StageError("onnx2tf", f"onnx2tf stopped (exit code {e.code}); see the log") from e
    except StageError:
        raise
    except Exception as e:
        if unsupported:
            raise StageError("onnx2tf", f"onnx2tf has no converter for ONNX op {unsupported[0][0]}",
                             op=unsupported[0][0], node=unsupported[0][1]) from e
        node = getattr(e, "onnx_op_name", None)
        raise StageError("onnx2tf", f"onnx2tf failed{' at node ' + node if node else ''}: "
                                    f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                         node=node or "") from e
    finally:
        base_layer.Layer.__init__ = original_init
    if model is None:
        raise StageError("onnx2tf", "onnx2tf returned no model; see the log")
    return model, (layers_dict[0] if layers_dict else {}), created


def build_record(job: dict[str, Any], tf_layers: dict, created) -> dict[str, Any]:
    """The ConversionRecord (in original ONNX names) from what onnx2tf built."""
    from edgeseg.export.tflite.mapping import ConversionRecord

    node_names = job["node_names"]  # work name -> original
    tensor_names = job["tensor_names"]
    layer_nodes = {}
    for layer, node in created:
        if node in node_names:
            layer_nodes[layer.name] = node_names[node]  # read now: output layers get renamed late
    tensor_layers = {}
    for key, info in tf_layers.items():
        original = tensor_names.get(key) or tensor_names.get(key.replace("__", ":"))
        if original is None:
            continue
        tf_node = info.get("tf_node") if isinstance(info, dict) else None
        history = getattr(tf_node, "_keras_history", None)
        if history is not None:
            tensor_layers[original] = history.layer.name
    return ConversionRecord(layer_nodes=layer_nodes, node_components=job["node_components"],
                            tensor_layers=tensor_layers, tensor_numel=job["tensor_numel"],
                            tensor_nodes=job["tensor_nodes"],
                            component_order=job["component_order"]).to_dict()


def _channel_last(rank: int) -> list[int]:
    return [0] + list(range(2, rank)) + [1]


def io_layout(onnx_shape: list[int], tf_shape: list[int], nhwc_flag: bool | None, is_input: bool) -> list[int] | None:
    """Permutation p with tf = onnx.transpose(p); None when the layouts are the same."""
    if any(not isinstance(d, int) or d <= 0 for d in list(onnx_shape) + list(tf_shape)):
        raise StageError("saved_model", f"an {'input' if is_input else 'output'} has a dynamic shape "
                                        f"(ONNX {onnx_shape}, TensorFlow {tf_shape}); edge models need static shapes")
    rank = len(onnx_shape)
    same = list(tf_shape) == list(onnx_shape)
    last = rank >= 3 and [onnx_shape[i] for i in _channel_last(rank)] == list(tf_shape)
    if same and last:  # symmetric shape: trust onnx2tf's own flag (inputs go channel-last)
        return _channel_last(rank) if (nhwc_flag or (is_input and nhwc_flag is None)) else None
    if same:
        return None
    if last:
        return _channel_last(rank)
    raise StageError("saved_model", f"cannot relate TensorFlow shape {tf_shape} to ONNX shape {onnx_shape}")


def save_saved_model(job: dict[str, Any], model, tf_layers: dict) -> list[dict[str, Any]]:
    """SavedModel whose signature keys are the ONNX I/O names; returns the I/O table."""
    import tensorflow as tf

    io = []
    specs = []
    for name, onnx_shape, tensor in zip(job["inputs"], job["input_shapes"], model.inputs):
        tf_shape = [-1 if d is None else int(d) for d in tensor.shape]
        info = tf_layers.get(name) or tf_layers.get(name.replace(":", "__")) or {}
        perm = io_layout(onnx_shape, tf_shape, info.get("nhwc"), True)
        key = sanitize_key(name)
        specs.append(tf.TensorSpec(tf_shape, tensor.dtype, name=key))
        io.append({"kind": "input", "name": name, "key": key, "shape": onnx_shape,
                   "tflite_shape": tf_shape, "perm": perm})
    keys = []
    for name, onnx_shape, tensor in zip(job["outputs"], job["output_shapes"], model.outputs):
        tf_shape = [-1 if d is None else int(d) for d in tensor.shape]
        info = tf_layers.get(name) or tf_layers.get(name.replace(":", "__")) or {}
        perm = io_layout(onnx_shape, tf_shape, info.get("nhwc"), False)
        key = sanitize_key(name)
        keys.append(key)
        io.append({"kind": "output", "name": name, "key": key, "shape": onnx_shape,
                   "tflite_shape": tf_shape, "perm": perm})
    if len(set(keys)) != len(keys) or len({i["key"] for i in io if i["kind"] == "input"} & set(keys)):
        raise StageError("saved_model", "two ONNX inputs/outputs have the same sanitized name",
                         names=[i["name"] for i in io])

    module = tf.Module()
    # Track the weights only: tracking the Keras model itself makes tf.saved_model.save
    # walk every layer object (half the save time on MobileInst) for nothing we use.
    module.weights = list(model.weights)

    @tf.function(input_signature=specs)
    def serve(*args):
        outs = model(list(args) if len(args) > 1 else args[0], training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {k: v for k, v in zip(keys, outs)}

    module.serve = serve
    tf.saved_model.save(module, job["saved_model"], signatures={"serving_default": serve.get_concrete_function()})
    return io


# ============================================================================ TFLite
def _converter(job: dict[str, Any]):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(job["saved_model"])
    # Builtins only: LiteRT cannot run Flex (TensorFlow) ops without the Flex delegate,
    # which phones do not ship. A model that needs one must fail here, with its name.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return conv


def _convert(conv) -> bytes:
    try:
        return conv.convert()
    except Exception as e:
        text = str(e)
        flex = flex_ops_in(text)
        if flex:
            raise StageError("tflite", "TFLite has no builtin kernel for: " + ", ".join(flex),
                             flex_ops=flex) from e
        raise StageError("tflite", f"TFLite conversion failed: {text.strip().splitlines()[0] if text.strip() else type(e).__name__}") from e


def flex_ops_in(text: str) -> list[str]:
    """TensorFlow ops the converter could not lower to TFLite builtins, from its error text."""
    found = set(re.findall(r"'tf\.([A-Za-z0-9_]+)' op is neither", text))
    for line in re.findall(r"(?:TF Select ops|Custom ops): ([A-Za-z0-9_, ]+)", text):
        found.update(x.strip() for x in line.split(",") if x.strip())
    if not found and ("Select" in text or "custom op" in text or "flex op" in text):
        found.update(re.findall(r"\btf\.([A-Z][A-Za-z0-9_]*)", text))  # raw TF ops are CamelCase
    return sorted(found)


def _representative(samples: np.ndarray, io: list[dict[str, Any]]):
    inputs = [i for i in io if i["kind"] == "input"]
    if len(inputs) != 1:
        raise StageError("calibrate", f"INT8 needs a single image input, the model has {len(inputs)}")
    perm = inputs[0]["perm"]

    def gen():
        for x in samples:
            x = x[None].astype(np.float32)
            yield [np.ascontiguousarray(x.transpose(perm)) if perm else x]

    return gen


def table_range(entry: dict[str, float | None]) -> tuple[float, float] | None:
    """Our TensorRange -> the (min, max) TFLite quantizes to.

    TFLite activations are asymmetric int8. The observed extremes are clipped to the
    method's threshold ``amax`` (KL/percentile clip outliers; for min-max amax is the
    extreme itself), and the range must contain 0 (TFLite nudges it there anyway).
    """
    amax = float(entry["amax"])
    lo = -amax if entry.get("min") is None else max(float(entry["min"]), -amax)
    hi = amax if entry.get("max") is None else min(float(entry["max"]), amax)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo <= 0:
        return None
    return lo, hi


def quantize(job: dict[str, Any], record: dict[str, Any], io, samples: np.ndarray, report: dict[str, Any]) -> bytes:
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    from edgeseg.export.tflite import flatbuffer as fb
    from edgeseg.export.tflite.mapping import ConversionRecord, float_ops, map_model

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(samples, io)
    conv._experimental_calibrate_only = True  # stop after calibration: we edit ranges, then quantize
    calibrated = _convert(conv)

    view = fb.describe(calibrated)
    mapping = map_model(view, ConversionRecord.from_dict(record))
    ranges: dict[int, tuple[float, float]] = {}
    written: dict[str, dict[str, Any]] = {}
    source = job["calib_source"]
    if source == "edgeseg":
        table = job["ranges"]
        # Graph inputs carry no layer name; the signature ties them to the ONNX input.
        pairs = list(mapping.tensor_to_onnx.items()) + [
            (view.signature_inputs[e["key"]], e["name"]) for e in io
            if e["kind"] == "input" and e["key"] in view.signature_inputs]
        for ti, onnx_name in pairs:
            entry = table.get(onnx_name)
            r = table_range(entry) if entry else None
            if r is None:
                continue
            ranges[ti] = r
            written[view.tensors[ti].name] = {"onnx": onnx_name, "min": r[0], "max": r[1]}
        calibrated = fb.set_calibration_ranges(calibrated, ranges)
    activations = [t for t in view.tensors if not t.constant and t.dtype == "float32" and t.min]
    report["calibration"] = {
        "source": source,
        "activation_tensors": len(activations),
        "from_table": len(ranges),
        "from_tflite": len(activations) - len([t for t in activations if t.index in ranges]),
        "ranges": written,
    }

    deny = float_ops(mapping, job["precisions"])
    deny_names = sorted({view.tensors[t].name for i in deny for t in view.ops[i].outputs})
    report["denylisted_ops"] = len(deny)
    int8_io = bool(job.get("int8_io"))
    try:
        return tfl_convert.mlir_quantize(
            calibrated, disable_per_channel=False, fully_quantize=int8_io,
            input_data_type=tf.int8 if int8_io else tf.float32,
            output_data_type=tf.int8 if int8_io else tf.float32,
            denylisted_nodes=deny_names or None)
    except Exception as e:
        raise StageError("quantize", f"TFLite quantization failed: {str(e).strip().splitlines()[0]}") from e


def stage(job: dict[str, Any], name: str) -> None:
    """Tell the parent process which step runs now (it shows progress from this file)."""
    if job.get("progress"):
        try:
            Path(job["progress"]).write_text(name)
        except OSError:
            pass  # progress is a nicety; never fail a conversion over it


def convert(job: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    from edgeseg.export.tflite import flatbuffer as fb
    from edgeseg.export.tflite.mapping import ConversionRecord, map_model, ops_of_precision

    samples = np.load(job["samples"])  # N images in the ONNX input layout, preprocessed
    if samples.ndim != 4:
        raise StageError("prepare", f"samples must be 4-D images, got shape {samples.shape}")
    report: dict[str, Any] = {"versions": {"tensorflow": tf.__version__}}
    timings = report["seconds"] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now

    # onnx2tf's own test inference wants channel-last images.
    nhwc = samples.transpose(0, 2, 3, 1) if job.get("input_layout", "NCHW") == "NCHW" else samples
    stage(job, "onnx2tf")
    model, tf_layers, created = run_onnx2tf(job, np.ascontiguousarray(nhwc))
    lap("onnx2tf")
    record = build_record(job, tf_layers, created)
    stage(job, "SavedModel")
    io = save_saved_model(job, model, tf_layers)
    lap("saved_model")
    report["io"] = io
    record["signature_outputs"] = {e["key"]: e["name"] for e in io if e["kind"] == "output"}
    report["record"] = record

    precisions = job["precisions"]
    values = set(precisions.values())
    stage(job, "calibrating and converting" if "int8" in values else "converting")
    if "int8" in values:
        buf = quantize(job, record, io, samples, report)
    elif values == {"fp16"}:
        conv = _converter(job)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        buf = _convert(conv)
    else:
        buf = _convert(_converter(job))

    lap("tflite")
    stage(job, "mapping ops to components")
    # Mixed plans: store the weights of fp16 components as float16 (TFLite's converter can
    # only do that for a whole model). A uniform fp16 plan was handled by the converter.
    mapping = map_model(fb.describe(buf), ConversionRecord.from_dict(record))
    if "fp16" in values and values != {"fp16"}:
        buf, n = fb.fp16_weights(buf, ops_of_precision(mapping, precisions, "fp16"))
        report["fp16_constants"] = n
        mapping = map_model(fb.describe(buf), ConversionRecord.from_dict(record))
    report["mapping"] = mapping.report()
    report["tensor_to_onnx"] = {str(k): v for k, v in mapping.tensor_to_onnx.items()}
    report["op_components"] = [{"index": o.index, "op": o.op_type, "components": list(o.components),
                                "source": o.source} for o in mapping.ops]
    Path(job["output"]).write_bytes(buf)
    lap("postprocess")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    report_path = Path(job["report"])
    try:
        report = convert(job)
        report["ok"] = True
        code = 0
    except StageError as e:
        traceback.print_exc()
        report = {"ok": False, "stage": e.stage, "message": str(e), **e.details}
        code = 2
    except Exception as e:  # anything else is a bug or an environment problem: keep the trace
        traceback.print_exc()
        report = {"ok": False, "stage": "unexpected", "message": f"{type(e).__name__}: {e}"}
        code = 3
    report_path.write_text(json.dumps(report, indent=1, default=str))
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.exit(main())
