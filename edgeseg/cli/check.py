"""``edgeseg check``: preflight an ONNX graph for a mobile target before converting it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeseg.errors import EdgesegError
from edgeseg.export.compat import CHECKERS  # light: a dict of module names, nothing imported


def resolve_onnx(path: str) -> Path:
    """An .onnx file, or an artifact folder's ONNX (its primary artifact first)."""
    p = Path(path)
    if p.is_dir():
        from edgeseg.export.manifest import Manifest

        m = Manifest.load(p)
        onnx_files = [f for f, info in m.artifacts.items() if f.endswith(".onnx")]
        onnx_files.sort(key=lambda f: not m.artifacts[f].get("primary"))
        if not onnx_files:
            raise EdgesegError(f"{p} has no ONNX artifact", "run `edgeseg export MODEL -o FOLDER` first")
        p = p / onnx_files[0]
    if not p.is_file():
        raise EdgesegError(f"{p} not found", "pass an .onnx file or a folder written by `edgeseg export`")
    return p


def plan_for(onnx_path: Path, spec: str | None, onnx_model):
    """Parse ``spec`` against the components tagged in the graph (and presets in the manifest)."""
    if not spec:
        return None
    from edgeseg.export import tags
    from edgeseg.export.manifest import Manifest, find_manifest
    from edgeseg.quantize.plan import PrecisionPlan

    presets = Manifest.load(onnx_path).presets if find_manifest(onnx_path) else {}
    components = [c for c in dict.fromkeys(tags.get_component(n) for n in onnx_model.graph.node) if c]
    return PrecisionPlan.parse(spec, components, presets)


_EPILOG = """\b
Examples:
  edgeseg check out/mobileinst/mobileinst_topformer.onnx --target tnn
  edgeseg check out/mobileinst --target tnn --tnn-device x86 --json
  edgeseg check out/mobileinst --target tflite --plan mixed
"""


@click.command("check", epilog=_EPILOG)
@click.argument("model", metavar="MODEL")
@click.option("--target", type=click.Choice(sorted(CHECKERS)), default="tnn", show_default=True,
              help="Backend to check against.")
@click.option("--tnn-device", "device", type=click.Choice(["arm", "x86"]), default=None,
              help="TNN: the device the network runs on, arm (a phone, default) or x86 (as in export --tnn-device).")
@click.option("--device", "device_alias", type=click.Choice(["arm", "x86"]), default=None, hidden=True)
@click.option("--plan", "plan_spec", default=None,
              help="Precision plan (backbone=int8,*=fp16): fp16 warnings only for fp16 components.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx: click.Context, model: str, target: str, device: str | None, device_alias: str | None,
          plan_spec: str | None, as_json: bool) -> None:
    """List every op of MODEL (an .onnx file or export folder) that TARGET cannot convert,
    every layer that would fail on the device, and every layer without a fast (fp16) kernel,
    each with its fix. Exits 1 when anything would fail.
    """
    device = device or device_alias  # --device: the old spelling, kept working
    from edgeseg.export import compat
    from edgeseg.export.tnn.writer import _load

    path = resolve_onnx(model)
    onnx_model = _load(path)[0]
    report = compat.check(onnx_model, target, device=device, plan=plan_for(path, plan_spec, onnx_model))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        compat.print_report(report)
    if not report.ok:
        ctx.exit(1)
