"""``edgeseg check``: preflight an ONNX graph for a target before converting it; with
``--plan``, what each target will actually run per component and per unit of the plan."""

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
  edgeseg check out/mobileinst --plan "*=int8,instance_decoder/cls_head=fp16"   # every target
  edgeseg check out/mobileinst --target tensorrt --plan mixed --json
"""

TARGET_CHOICES = sorted({*CHECKERS, "tensorrt", "onnxruntime", "all"})


@click.command("check", epilog=_EPILOG)
@click.argument("model", metavar="MODEL")
@click.option("--target", type=click.Choice(TARGET_CHOICES), default=None,
              help="Backend to check against (default: tnn; with --plan: all of them). tensorrt and onnxruntime "
                   "only show what runs (they need --plan).")
@click.option("--tnn-device", "device", type=click.Choice(["arm", "x86"]), default=None,
              help="TNN: the device the network runs on, arm (a phone, default) or x86 (as in export --tnn-device).")
@click.option("--device", "device_alias", type=click.Choice(["arm", "x86"]), default=None, hidden=True)
@click.option("--plan", "plan_spec", default=None,
              help="Precision plan, exceptions below the component level included "
                   "(backbone=int8,*=fp16,instance_decoder/cls_head=fp32): adds, per target, what each component "
                   "and unit will actually run and why it differs from the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx: click.Context, model: str, target: str | None, device: str | None, device_alias: str | None,
          plan_spec: str | None, as_json: bool) -> None:
    """List every op of MODEL (an .onnx file or export folder) that TARGET cannot convert,
    every layer that would fail on the device, and every layer without a fast (fp16) kernel,
    each with its fix. With --plan, also what each target will actually run per component
    and per unit of the plan. Exits 1 when anything would fail.
    """
    device = device or device_alias  # --device: the old spelling, kept working
    from edgeseg.export import compat
    from edgeseg.export.tnn.writer import _load

    path = resolve_onnx(model)
    onnx_model = _load(path)[0]
    plan = plan_for(path, plan_spec, onnx_model)
    target = target or ("all" if plan is not None else "tnn")
    if plan is None and target not in CHECKERS:
        raise EdgesegError(f"--target {target} shows what runs for a precision plan", "add --plan SPEC, e.g. --plan mixed")
    if plan is None:
        report = compat.check(onnx_model, target, device=device)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            compat.print_report(report)
        if not report.ok:
            ctx.exit(1)
        return

    from edgeseg.export.compat.precision import TARGETS, print_summary, print_target_runs, target_runs

    targets = TARGETS if target == "all" else (target,)
    runs, extra = target_runs(onnx_model, plan, targets, tnn_device=device or "arm")
    reports = {t: extra.get(t) or compat.check(onnx_model, t, device=device, plan=plan)
               for t in targets if t in CHECKERS}
    failed = any(not r.ok for r in reports.values()) or any(r.error for r in runs)
    if as_json:
        per_target = [{**(reports[r.target].to_dict() if r.target in reports else {"target": r.target}),
                       "runs": r.to_dict()} for r in runs]
        # One view of one target: its compat report as before, with what runs beside it;
        # several (all targets, or TensorRT's two paths): a list.
        doc = {**per_target[0], "plan": plan.to_dict()} if len(per_target) == 1 else \
            {"plan": plan.to_dict(), "ok": not failed, "targets": per_target}
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        console = Console()
        for r in reports.values():
            compat.print_report(r, console)
        print_target_runs(plan, runs, console)
        if len(runs) > 1:
            print_summary(plan, runs, console)
    if failed:
        ctx.exit(1)
