"""``edgeseg inspect``: dump an artifact: TNN files, ONNX graphs, calibration tables.

Each file kind has one inspector, looked up by suffix in :data:`INSPECTORS`
(``"module:function"``, imported on use). An inspector takes the path and returns a
JSON-friendly dict and a printer for it; adding a format is one function and one line.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import click

from edgeseg.errors import EdgesegError

INSPECTORS: dict[str, str] = {
    ".tnnproto": "edgeseg.cli.inspect:inspect_tnn",
    ".tnnmodel": "edgeseg.cli.inspect:inspect_tnn",
    ".onnx": "edgeseg.cli.inspect:inspect_onnx",
    ".tflite": "edgeseg.cli.inspect:inspect_tflite",
    ".json": "edgeseg.cli.inspect:inspect_table",
}

Inspection = tuple[dict[str, Any], Callable[[dict[str, Any]], None]]


def _size(n: int) -> str:
    for unit, div in (("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _console():
    from rich.console import Console

    return Console()


# --------------------------------------------------------------------------- TNN


def inspect_tnn(path: Path) -> Inspection:
    from edgeseg.export.tnn.reader import describe, read_tnn

    data = describe(read_tnn(path))
    proto = path.with_suffix(".tnnproto")
    data["files"] = {p.name: p.stat().st_size for p in (proto, proto.with_suffix(".tnnmodel")) if p.is_file()}
    return data, _print_tnn


def _print_tnn(data: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    ins = ", ".join(f"{k} {v['dims']}" for k, v in data["inputs"].items())
    console.print(f"[bold]TNN model[/bold]  inputs: {ins}  outputs: {', '.join(data['outputs'])}")
    console.print(f"  {data['layer_count']} layers, {data['blob_scales']} blob scales, "
                  f"{len(data['constants'])} constants; files: "
                  + ", ".join(f"{k} {_size(v)}" for k, v in data["files"].items()))
    console.print("  weights: " + ", ".join(f"{k} {_size(v)}" for k, v in data["weight_bytes"].items()))
    table = Table(show_lines=False)
    for col in ("#", "type", "name", "in -> out", "params", "weights"):
        table.add_column(col, overflow="fold")
    for i, layer in enumerate(data["layers"]):
        params = " ".join(f"{k}={v}" for k, v in layer["params"].items())
        weights = " ".join(f"{k}:{v}" for k, v in layer["weights"].items())
        table.add_row(str(i), layer["type"], layer["name"],
                      f"{','.join(layer['inputs'])} -> {','.join(layer['outputs'])}", params, weights)
    console.print(table)


# --------------------------------------------------------------------------- ONNX


def inspect_onnx(path: Path) -> Inspection:
    import onnx

    from edgeseg.export import tags

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise EdgesegError(f"cannot read {path} as ONNX: {e}", "pass an .onnx file") from e
    per = Counter((tags.get_component(n) or "(untagged)", n.op_type) for n in model.graph.node)
    components: dict[str, dict[str, int]] = {}
    for (comp, op), n in sorted(per.items()):
        components.setdefault(comp, {})[op] = n

    def io(values) -> dict[str, list]:
        out = {}
        for v in values:
            dims = v.type.tensor_type.shape.dim
            out[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        return out

    init = {i.name for i in model.graph.initializer}
    data = {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "nodes": len(model.graph.node), "inputs": io(i for i in model.graph.input if i.name not in init),
            "outputs": io(model.graph.output), "components": components,
            "op_types": dict(Counter(n.op_type for n in model.graph.node).most_common())}
    return data, _print_onnx


def _print_onnx(data: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]ONNX[/bold] opset {data['opset']}, {data['nodes']} nodes; inputs "
                  + ", ".join(f"{k} {v}" for k, v in data["inputs"].items()) + "; outputs "
                  + ", ".join(f"{k} {v}" for k, v in data["outputs"].items()))
    table = Table(title="nodes per component and op type")
    table.add_column("component", style="bold")
    table.add_column("nodes", justify="right")
    table.add_column("op types")
    for comp, ops in data["components"].items():
        table.add_row(comp, str(sum(ops.values())), ", ".join(f"{op} {n}" for op, n in
                                                                sorted(ops.items(), key=lambda kv: -kv[1])))
    console.print(table)


# --------------------------------------------------------------------------- TFLite


def inspect_tflite(path: Path) -> Inspection:
    """Ops and tensor dtypes of a .tflite, per component when the export's sidecar .json
    (op -> component map written by ``export --to tflite``) is beside it."""
    from edgeseg.export.tflite.flatbuffer import describe

    view = describe(path.read_bytes())
    sidecar = path.with_name(path.name + ".json")  # export --to tflite writes <file>.tflite.json
    op_component: dict[int, str] = {}
    if sidecar.is_file():
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        for entry in info.get("op_components") or []:
            comps = entry.get("components") or []
            op_component[int(entry["index"])] = "+".join(comps) if comps else "(unmapped)"
    per = Counter()
    for op in view.ops:
        outs = [view.tensors[t].dtype for t in op.outputs if t >= 0]
        per[(op_component.get(op.index, "(unmapped)" if op_component else "(no map)"), op.op_type,
             outs[0] if outs else "?")] += 1
    components: dict[str, dict[str, int]] = {}
    for (comp, op, dtype), n in sorted(per.items()):
        components.setdefault(comp, {})[f"{op}:{dtype}"] = n
    data = {"ops": len(view.ops), "tensors": len(view.tensors),
            "quantized_tensors": sum(1 for t in view.tensors if t.quantized),
            "inputs": {k: view.tensors[i].shape for k, i in view.signature_inputs.items()},
            "outputs": {k: view.tensors[i].shape for k, i in view.signature_outputs.items()},
            "components": components, "size": path.stat().st_size}
    return data, _print_tflite


def _print_tflite(data: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]TFLite[/bold] {data['ops']} ops, {data['tensors']} tensors "
                  f"({data['quantized_tensors']} quantized), {_size(data['size'])}; inputs "
                  + ", ".join(f"{k} {v}" for k, v in data["inputs"].items()) + "; outputs "
                  + ", ".join(f"{k} {v}" for k, v in data["outputs"].items()))
    table = Table(title="ops per component (op:output dtype)")
    table.add_column("component", style="bold")
    table.add_column("ops", justify="right")
    table.add_column("op types")
    for comp, ops in data["components"].items():
        table.add_row(comp, str(sum(ops.values())), ", ".join(f"{op} {n}" for op, n in
                                                                sorted(ops.items(), key=lambda kv: -kv[1])))
    console.print(table)


# --------------------------------------------------------------------------- calibration table


def inspect_table(path: Path) -> Inspection:
    from edgeseg.quantize.cache import CalibrationTable

    table = CalibrationTable.load(path)
    amax = sorted(((r.amax, name) for name, r in table.ranges.items()), reverse=True)
    data = {"method": table.method, "num_images": table.num_images, "tensors": len(table),
            "model_sha256": table.model_sha256, "largest": [{"tensor": n, "amax": a} for a, n in amax[:10]]}
    return data, _print_table


def _print_table(data: dict[str, Any]) -> None:
    console = _console()
    console.print(f"[bold]calibration table[/bold] {data['method']}, {data['num_images']} images, "
                  f"{data['tensors']} tensors, model {data['model_sha256'][:12] or '?'}")
    for row in data["largest"]:
        console.print(f"  {row['amax']:>12.4f}  {row['tensor']}")


# --------------------------------------------------------------------------- command


_EPILOG = """\b
Examples:
  edgeseg inspect out/mobileinst/mobileinst_topformer.tnnproto
  edgeseg inspect out/mobileinst/mobileinst_topformer.onnx --json
  edgeseg inspect out/mobileinst/mobileinst_topformer.kl.calib.json
"""


@click.command("inspect", epilog=_EPILOG)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(path: str, as_json: bool) -> None:
    """Dump PATH: a .tnnproto/.tnnmodel (layers, params, weight dtypes and shapes), an .onnx
    (nodes per component and op type), a .tflite or a calibration table (.json).
    """
    p = Path(path)
    target = INSPECTORS.get(p.suffix.lower())
    if target is None:
        raise EdgesegError(f"don't know how to inspect {p.name!r}",
                           f"pass one of: {', '.join(sorted(INSPECTORS))}")
    module, fn = target.split(":")
    data, printer = getattr(importlib.import_module(module), fn)(p)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        printer(data)
