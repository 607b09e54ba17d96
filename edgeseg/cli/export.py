"""``edgeseg export``: zoo model -> tagged, parity-checked ONNX (+ manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.errors import EdgesegError


def build_model(name: str, input_size: str | None, num_classes: int | None, weights: str | None,
                clip_length: int | None = None):
    """Create a zoo model at the requested size (and clip length, for clip models) and load
    weights; returns (model, weights_info)."""
    from edgeseg.data.preprocess import parse_input_size
    from edgeseg.models import create_model
    from edgeseg.models.pretrained import checkpoint_model_cfg, resolve_weights
    from edgeseg.models.registry import family_of_model, model_entry

    if clip_length is not None:
        model_entry(name)  # an unknown model: one error with a hint, before anything else
        fam = family_of_model(name)
        if fam is None or not fam.clip_input:
            raise EdgesegError(f"--clip-length applies to clip models; {name} takes one image per run",
                               "drop --clip-length (clip models: `edgeseg models` lists IFC's variants)")
        if clip_length < 1:
            raise EdgesegError(f"--clip-length {clip_length}: a clip has at least one frame", "use e.g. 5")

    # "zoo" = the package's checkpoint of this model; an edgeseg checkpoint brings its
    # own configuration (classes, input size), which explicit flags override.
    weights = resolve_weights(weights, name)
    cfg = checkpoint_model_cfg(weights, name)
    size = parse_input_size(input_size, stride=1) if input_size else None
    if size:
        cfg["input_size"] = size
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    if clip_length is not None:
        cfg["clip_length"] = int(clip_length)
    model = create_model(name, **cfg)
    spec = model.input_spec
    if spec.height % spec.stride or spec.width % spec.stride:
        raise EdgesegError(f"input size {spec.height}x{spec.width} is not a multiple of {spec.stride} "
                           f"(the coarsest feature stride of {name})",
                           f"use multiples of {spec.stride}, e.g. --input-size "
                           f"{max(spec.stride, round(spec.height / spec.stride) * spec.stride)}")
    info = None
    if weights:
        from edgeseg.models.checkpoints import load_weights
        from edgeseg.utils.hashing import sha256_file

        load_weights(model, weights)
        info = {"path": str(weights), "sha256": sha256_file(weights), "format": Path(weights).suffix.lstrip(".")}
    model.eval()
    return model, info


def print_export_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for g, res in result.graphs.items():
        table = Table(title=f"{res.path.name}  ({g} graph: {res.nodes_after_simplify} nodes, "
                            f"{res.simplifier}, every node tagged)")
        table.add_column("output")
        table.add_column("shape")
        table.add_column("max abs err", justify="right")
        table.add_column("cosine", justify="right")
        for p in res.parity:
            table.add_row(p.name, "x".join(map(str, p.shape)), f"{p.max_abs_error:.2e}", f"{p.cosine:.7f}")
        console.print(table)
        console.print("  components: " + ", ".join(f"{c} {n} nodes" for c, n in res.node_counts.items()))
    console.print(f"[green]wrote[/green] {result.folder}/ (manifest.json)")


def build_any(model_name: str, input_size, num_classes, weights, components, output_names, mean, std, decoder,
              clip_length: int | None = None):
    """A zoo model, or the user's own (``file.py:fn`` / ``package.module:fn``); returns (model, weights_info)."""
    from edgeseg.models.user import build_user_model, is_user_entry

    if is_user_entry(model_name):
        if num_classes is not None:
            raise EdgesegError("--num-classes applies to zoo models", "build your model with the class count you want")
        if clip_length is not None:
            raise EdgesegError("--clip-length applies to zoo clip models (IFC)",
                               "build your model with the clip length you want")
        return build_user_model(model_name, components=components, input_size=input_size,
                                output_names=output_names, mean=mean, std=std, decoder=decoder, weights=weights)
    user_only = {"--components": components, "--output-names": output_names, "--mean": mean, "--std": std,
                 "--decoder": decoder}
    given = [flag for flag, v in user_only.items() if v]
    if given:
        raise EdgesegError(f"{', '.join(given)} describe your own model; {model_name} is a zoo model with its own",
                           f"drop {', '.join(given)}, or pass your model as path/to/file.py:build_fn")
    return build_model(model_name, input_size, num_classes, weights, clip_length)


@click.command("export")
@click.argument("model_name", metavar="MODEL")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Checkpoint: .safetensors, or .pt/.pth (loaded with weights_only=True); 'zoo' = the model's "
                   "shipped checkpoint. An edgeseg checkpoint sets --num-classes/--input-size itself.")
@click.option("--input-size", help="640 or HEIGHTxWIDTH (512x640); default: the model's.")
@click.option("--num-classes", type=int, help="Number of classes (default: the model's, 80 for COCO).")
@click.option("--clip-length", type=int, default=None,
              help="Clip models (IFC): frames T per clip; the graph takes [T, 3, H, W] (default: the model's, 5).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Artifact folder (default out/MODEL).")
@click.option("--simplifier", type=click.Choice(["onnxslim", "onnxsim", "none"]), default="onnxslim", show_default=True)
@click.option("--graphs", default=None, help="frame,features (default: every graph the model has).")
@click.option("--plan", "plan_spec", help="Also quantize: precision plan, e.g. backbone=int8,mask_decoder=int8,*=fp16.")
@click.option("--calib", "calib_dir", type=click.Path(file_okay=False),
              help="Calibration images for --plan (KL, --calib-num of them); the rest are held out for fidelity.")
@click.option("--calib-num", type=int, default=100, show_default=True)
@click.option("--to", "targets", multiple=True, type=click.Choice(["tnn", "tflite"]),
              help="Also convert every graph for a mobile runtime (repeatable); --plan applies to it.")
@click.option("--calib-source", type=click.Choice(["edgeseg", "tflite"]), default="edgeseg", show_default=True,
              help="--to tflite: INT8 ranges from edgeseg's calibration table, or TFLite's own min/max.")
@click.option("--tnn-device", type=click.Choice(["arm", "x86"]), default="arm", show_default=True,
              help="--to tnn: refuse layers that would fail on this device.")
@click.option("--components", help="Your own model: COMPONENT=module.path,... (default: its top-level children); "
                                   "a foreign .onnx: COMPONENT=REGEX over node names.")
@click.option("--output-names", help="Your own model: names of forward's outputs, comma-separated "
                                     "(default: its output_names attribute, else output0, output1...).")
@click.option("--mean", help="Your own model: per-channel mean on 0..255 pixels (default ImageNet's: 123.675,116.28,103.53).")
@click.option("--std", help="Your own model: per-channel std on 0..255 pixels (default ImageNet's: 58.395,57.12,57.375).")
@click.option("--decoder", help="Your own model: how to decode its outputs for AP (eval, sweep): a family name "
                                "(mobileinst, ...) or module:function.")
def export(model_name, weights, input_size, num_classes, clip_length, out_dir, simplifier, graphs, plan_spec,
           calib_dir, calib_num, targets, calib_source, tnn_device, components, output_names, mean, std,
           decoder) -> None:
    """Export MODEL to ONNX (opset 17, static shapes), tag every node with its component,
    check parity against PyTorch, and write the artifact folder with manifest.json.

    MODEL is a zoo name (`edgeseg models`), your own model as path/to/file.py:build_fn or
    package.module:build_fn (imported, never unpickled; build_fn() returns the nn.Module),
    or an ONNX file from elsewhere (copied into the folder, tagged by --components patterns).

    \b
    Example:
      edgeseg export mobileinst_topformer --input-size 640 -o out/mobileinst
      edgeseg export mobileinst_topformer_tiny --weights ckpt.safetensors --num-classes 3
      edgeseg export mobileinst_topformer_synth --weights zoo -o out/synth
      edgeseg export mobileinst_topformer --plan backbone=int8,mask_decoder=int8,*=fp16 --calib data/val
      edgeseg export mobileinst_topformer --to tnn --plan "*=fp16"
      edgeseg export mobileinst_topformer --to tflite --plan mixed --calib data/val
      edgeseg export ifc_topformer_synth --weights zoo --clip-length 5 -o out/ifc_t5
      edgeseg export examples/tiny_user_model.py:build_model --input-size 128 \
          --components backbone=backbone,neck=neck,head=head -o out/mine
      edgeseg export their_model.onnx --components backbone=^/backbone/,head=^/head/ -o out/theirs
    """
    if model_name.endswith(".onnx"):
        from edgeseg.export.foreign import export_foreign
        from edgeseg.models.user import parse_mapping

        given = [f for f, v in (("--weights", weights), ("--num-classes", num_classes), ("--input-size", input_size),
                                ("--output-names", output_names), ("--graphs", graphs),
                                ("--clip-length", clip_length)) if v]
        if given:
            raise EdgesegError(f"{', '.join(given)} cannot change an ONNX file", "drop them; re-export the source model")
        if calib_dir and not plan_spec:
            raise EdgesegError("--calib is only used with --plan", "add --plan SPEC, e.g. --plan backbone=int8,*=fp16")
        patterns = parse_mapping(components, "--components", "backbone=^/backbone/,head=^/head/")
        result = export_foreign(model_name, Path(out_dir or Path("out") / Path(model_name).stem), patterns,
                                mean=mean, std=std, decoder=decoder)
        print_export_summary(result)
        _convert(result, plan_spec, calib_dir, calib_num, targets, calib_source, tnn_device)
        return
    model, winfo = build_any(model_name, input_size, num_classes, weights, components, output_names, mean, std,
                             decoder, clip_length)
    _export_module(model, winfo, out_dir, simplifier, graphs, plan_spec, calib_dir, calib_num, targets,
                   calib_source, tnn_device)


def _export_module(model, winfo, out_dir, simplifier, graphs, plan_spec, calib_dir, calib_num,
                   targets, calib_source, tnn_device) -> None:
    from edgeseg.export.onnx import export_onnx

    if calib_dir and not plan_spec:
        raise EdgesegError("--calib is only used with --plan", "add --plan SPEC, e.g. --plan backbone=int8,*=fp16")
    if plan_spec:  # fail on a bad plan or image folder before the export work
        from edgeseg.quantize.pipeline import check_plan_for_model

        check_plan_for_model(model, plan_spec, calib_dir)
    out = Path(out_dir or Path("out") / model.model_name)
    result = export_onnx(model, out, simplifier=simplifier, weights=winfo,
                         graphs=tuple(g.strip() for g in graphs.split(",")) if graphs else None)
    print_export_summary(result)
    _convert(result, plan_spec, calib_dir, calib_num, targets, calib_source, tnn_device)


def _convert(result, plan_spec, calib_dir, calib_num, targets, calib_source, tnn_device) -> None:
    """--plan and --to on a freshly exported folder."""
    outcome = None
    if plan_spec:
        from edgeseg.cli.quantize import print_quantize_outcome
        from edgeseg.quantize.pipeline import quantize_exported

        outcome = quantize_exported(result.onnx_path, plan_spec, calib_dir, num=calib_num)
        print_quantize_outcome(outcome.quantize)
    if "tnn" in targets:
        from edgeseg.export.tnn.artifacts import export_tnn_graphs, print_tnn_results

        table = outcome.calibration.table_path if outcome and outcome.calibration else None
        paths = [result.onnx_path] + [g.path for g in result.graphs.values() if g.path != result.onnx_path]
        print_tnn_results(export_tnn_graphs(paths, plan_spec, table, tnn_device))
    if "tflite" in targets:
        from edgeseg.export.tflite import export_tflite_graphs, print_tflite_results

        table = outcome.calibration.table_path if outcome and outcome.calibration else None
        paths = [result.onnx_path] + [g.path for g in result.graphs.values() if g.path != result.onnx_path]
        print_tflite_results(export_tflite_graphs(paths, plan_spec, table, calib_dir, calib_source))
