"""``edgeseg quantize``: per-component precision plan -> QDQ INT8 / FP16 ONNX (+ fidelity)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.errors import EdgesegError
from edgeseg.quantize.pipeline import CALIB_HELP


def print_fidelity(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"fidelity vs FP32 on {report.num_images} held-out images ({report.numerics} int8 numerics)")
    for col, just in (("where", "left"), ("tensor", "left"), ("max abs err", "right"),
                      ("cosine", "right"), ("SQNR dB", "right")):
        table.add_column(col, justify=just)
    for o in report.outputs:
        table.add_row("output", o.name, f"{o.max_abs_error:.4g}", f"{o.cosine:.5f}", f"{o.sqnr_db:.1f}")
    for comp, rows in report.components.items():
        for t in rows:
            table.add_row(f"{comp} ({(report.plan or {}).get(comp, '?')})", t.name, f"{t.max_abs_error:.4g}",
                          f"{t.cosine:.5f}", f"{t.sqnr_db:.1f}")
    console.print(table)
    worst = report.worst_component()
    if worst:
        console.print(f"lowest SQNR at the outputs of [bold]{worst}[/bold]")


_EPILOG = """\b
Examples:
  edgeseg quantize out/mobileinst/mobileinst_topformer.onnx \\
      --plan backbone=int8,mask_decoder=int8,instance_decoder=fp16 \\
      --calib out/mobileinst/mobileinst_topformer.kl.calib.json
  edgeseg quantize out/mobileinst --plan mixed --calib data/val --calib-num 100
  edgeseg quantize model.onnx --plan '*=fp16'
  edgeseg quantize their_model.onnx --components backbone=^/backbone/,head=^/head/ \\
      --plan backbone=int8,head=fp16 --calib table.json
"""


@click.command("quantize", epilog=_EPILOG)
@click.argument("model", metavar="MODEL.onnx", type=click.Path())
@click.option("--plan", "plan_spec", required=True,
              help="COMPONENT=fp32|fp16|int8 pairs ('*=' sets the rest) or a preset (int8, fp16, or the model's).")
@click.option("--calib", type=click.Path(), help="Needed for int8. " + CALIB_HELP)
@click.option("--calib-num", type=int, default=100, show_default=True,
              help="Images to calibrate on with --calib DIR (0 = all).")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False),
              help="Output ONNX (default: MODEL.<plan>.onnx beside the model).")
@click.option("--fidelity-images", type=click.Path(),
              help="Held-out images for the fidelity report (max abs error / cosine / SQNR vs FP32 per output "
                   "and component). Default: the calibration folder's images that calibration did not use.")
@click.option("--no-fidelity", is_flag=True, help="Skip the fidelity report.")
@click.option("--fidelity-num", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--activation-type", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True,
              help="Storage of int8 activations. Same symmetric grid either way (uint8 uses zero point 128); "
                   "uint8 gets ONNX Runtime's integer kernels on x86, int8 is what TensorRT's QDQ path wants.")
@click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime threads for fidelity (0 = all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o file that edgeseg did not write.")
@click.option("--components", "components_text",
              help="For an ONNX not exported by edgeseg: components as NAME=REGEX over node names "
                   "(e.g. backbone=^/backbone/,head=^/head/), recorded in a manifest.json beside it. "
                   "Whole-model plans ('*=fp16', int8) need none.")
@click.option("--numerics", type=click.Choice(["simulated", "fused"]), default="simulated", show_default=True,
              help="How the fidelity report runs int8: simulated Q/DQ (what a phone or TensorRT computes, the "
                   "same on every host) or fused (ONNX Runtime's int8 kernels of this CPU; they saturate on "
                   "x86 without VNNI).")
@click.option("--node-error", is_flag=True,
              help="Also write the error of every node (SQNR / cosine vs FP32 on the fidelity images) as "
                   "Model Explorer node data (<out>.sqnr.node_data.json) and an HTML page (<out>.node_error.html): "
                   "where in the graph fidelity is lost, to choose plan exceptions.")
def quantize(model, plan_spec, calib, calib_num, out, fidelity_images, no_fidelity, fidelity_num, seed,
             activation_type, threads, overwrite, components_text, numerics, node_error) -> None:
    """Apply a per-component precision plan to MODEL.onnx: INT8 components get QDQ
    (per-channel weights, calibrated activations), FP16 components run in float16 with
    casts only at their boundaries, FP32 components are left exactly as they are.
    The file is named after the plan: MODEL.<preset>.onnx when the plan is a preset (however
    it is written, as with `export --plan`), else MODEL.<int8-int8-fp16>.onnx.
    """
    from edgeseg.quantize.pipeline import (calib_num_arg, check_calib, check_outputs_beside, default_output,
                                           default_table_path, parse_plan, run_quantize)
    from edgeseg.runtimes.base import resolve_artifact

    from edgeseg.models.user import parse_mapping

    calib_num = calib_num_arg(calib_num)
    components = parse_mapping(components_text, "--components", "backbone=^/backbone/,head=^/head/") or None
    path = resolve_artifact(model)
    plan = parse_plan(Path(path), plan_spec, components=components)  # a typo fails here, not after calibration
    kind = check_calib(calib) if calib else None
    out_path = Path(out) if out else default_output(Path(path), plan)
    files = [(out_path, "-o")]
    if no_fidelity and node_error:
        raise EdgesegError("--node-error needs the fidelity images, which --no-fidelity turns off",
                           "drop one of the two flags")
    if not no_fidelity:
        files += [(out_path.with_name(out_path.stem + ext), "") for ext in (".fidelity.json", ".fidelity.md")]
    if node_error:
        from edgeseg.quantize.node_error import NODE_ERROR_SUFFIXES

        files += [(out_path.with_name(out_path.stem + ext), "") for ext in NODE_ERROR_SUFFIXES]
    if kind == "images" and plan.needs_calibration:
        files.append((default_table_path(path, "kl"), ""))
    check_outputs_beside(Path(path), files, overwrite)
    res = run_quantize(path, plan_spec, calib, out=out, fidelity_images=fidelity_images,
                       fidelity_num=fidelity_num, seed=seed, activation_type=activation_type, threads=threads,
                       with_fidelity=not no_fidelity, calib_num=calib_num, components=components,
                       numerics=numerics, node_error=node_error)
    print_quantize_outcome(res)


def print_quantize_outcome(res) -> None:
    from rich.console import Console

    console = Console()
    r = res.report
    console.print(f"plan: {res.plan.spec()}")
    if r.quantized_nodes:
        console.print("  int8: " + ", ".join(f"{c} {n} nodes" for c, n in r.quantized_nodes.items())
                      + f"; {r.quantized_tensors} activations, {r.quantized_weights} weights quantized")
    if r.fp16_nodes:
        console.print("  fp16: " + ", ".join(f"{c} {n} nodes" for c, n in r.fp16_nodes.items())
                      + f"; {r.casts} boundary casts")
    for s in r.skipped:
        console.print(f"  [yellow]kept float:[/yellow] {s}")
    if res.fidelity is not None:
        print_fidelity(res.fidelity, console)
    else:
        console.print("  no fidelity report (no held-out images: pass --fidelity-images DIR)")
    console.print(f"[green]wrote[/green] {res.path}" + (f" and {res.fidelity_paths[1].name}" if res.fidelity_paths else ""))
    if res.fidelity_paths and len(res.fidelity_paths) > 2:
        html = [p for p in res.fidelity_paths if p.name.endswith(".node_error.html")]
        console.print(f"[green]wrote[/green] per-node error: {html[0] if html else res.fidelity_paths[2]} "
                      "(and Model Explorer node data beside it)")
    if res.features_path is not None:
        console.print(f"[green]wrote[/green] {res.features_path} (features graph, same plan, for video kernel reuse)")
