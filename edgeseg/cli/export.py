"""``edgeseg export``: zoo model, your own nn.Module or a foreign ONNX -> tagged, parity-checked ONNX (+ manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.errors import EdgesegError
from edgeseg.quantize.pipeline import CALIB_HELP


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

        report = load_weights(model, weights)
        info = {"path": str(weights), "sha256": sha256_file(weights), "format": Path(weights).suffix.lstrip("."),
                "load": report.to_dict()}  # what came from the file, what kept its initial values
    model.eval()
    return model, info


def print_weights_summary(info: dict | None) -> None:
    """What --weights filled and what kept its initial (random) values, per module."""
    if not info or "load" not in info:
        return
    from rich.console import Console

    load = info["load"]

    def groups(counts: dict) -> str:
        return ", ".join(f"{name} {n}" for name, n in counts.items())

    console = Console()
    console.print(f"weights: {Path(info['path']).name} ({load['source']}) into the {load['target']}")
    console.print(f"  loaded {load['loaded']} tensors: {groups(load['loaded_by_module'])}")
    if load["initial"]:
        console.print(f"  [yellow]kept initial values[/yellow] ({load['initial']} tensors, not in the file): "
                      f"{groups(load['initial_by_module'])}")
    if load["ignored"]:
        shown = ", ".join(load["ignored_examples"])
        more = f", ... ({load['ignored'] - len(load['ignored_examples'])} more)" \
            if load["ignored"] > len(load["ignored_examples"]) else ""
        console.print(f"  not used from the file: {load['ignored']} tensors ({shown}{more})")


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


_EPILOG = """\b
Examples:
  edgeseg export mobileinst_topformer --input-size 640 -o out/mobileinst
  edgeseg export ifc_topformer_synth --weights zoo --clip-length 5 -o out/ifc_t5
  edgeseg export mobileinst_topformer_tiny --weights ckpt.safetensors --num-classes 3
  edgeseg export mobileinst_topformer_synth --weights zoo -o out/synth
  edgeseg export mobileinst_topformer --plan backbone=int8,mask_decoder=int8,*=fp16 --calib data/val
  edgeseg export mobileinst_topformer --to tnn --plan "*=fp16"
  edgeseg export mobileinst_topformer --to tflite --plan mixed --calib data/val
  edgeseg export examples/tiny_user_model.py:build_model --input-size 128 \\
      --components backbone=backbone,neck=neck,head=head -o out/mine
  edgeseg export their_model.onnx --components backbone=^/backbone/,head=^/head/ -o out/theirs
  edgeseg export out/synth --to tensorrt --plan mixed --trt workspace=2048   # an existing export folder
"""


@click.command("export", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("model_name", metavar="MODEL")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Checkpoint: .safetensors, or .pt/.pth (loaded with weights_only=True); 'zoo' = the model's "
                   "shipped checkpoint. An edgeseg checkpoint sets --num-classes/--input-size itself.")
@click.option("--input-size", help="640 or HEIGHTxWIDTH (512x640); default: the model's.")
@click.option("--num-classes", type=int, help="Number of classes (default: the model's, 80 for COCO).")
@click.option("--clip-length", type=int, default=None,
              help="Clip models (IFC): frames T per clip; the graph takes [T, 3, H, W] (default: the model's, 5).")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="Artifact folder (default out/MODEL).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that is not an edgeseg export (your files there are kept).")
@click.option("--simplifier", type=click.Choice(["onnxslim", "onnxsim", "none"]), default="onnxslim", show_default=True)
@click.option("--graphs", default=None, help="frame,features (default: every graph the model has).")
@click.option("--plan", "plan_spec", help="Also quantize: precision plan, e.g. backbone=int8,mask_decoder=int8,*=fp16.")
@click.option("--calib", "calib", type=click.Path(), help="For --plan. " + CALIB_HELP)
@click.option("--calib-num", type=int, default=100, show_default=True, help="Images to calibrate on (0 = all).")
@click.option("--to", "targets", multiple=True, type=click.Choice(["tnn", "tflite", "tensorrt"]),
              help="Also convert every graph for a target runtime (repeatable); --plan applies to it. "
                   "tensorrt needs TensorRT here (a Jetson or a GPU host).")
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
@click.option("--trt", "trt_options", multiple=True, metavar="KEY=VALUE",
              help="--to tensorrt: workspace=MiB, dla=CORE, gpu-fallback=0|1, timing-cache=FILE, "
                   "typing=auto|strong|weak, constraints=obey|prefer, opt-level=0..5, engine-cache=DIR.")
def export(model_name, weights, input_size, num_classes, clip_length, out_dir, overwrite, simplifier, graphs,
           plan_spec, calib, calib_num, targets, calib_source, tnn_device, components, output_names, mean, std,
           decoder, trt_options) -> None:
    """Export MODEL to ONNX (opset 17, static shapes), tag every node with its component,
    check parity against PyTorch, and write the artifact folder with manifest.json.

    MODEL is a zoo name (`edgeseg models`), your own model as path/to/file.py:build_fn or
    package.module:build_fn (imported, never unpickled; build_fn() returns the nn.Module),
    or an ONNX file from elsewhere (copied into the folder, tagged by --components patterns).

    Everything is checked before the work: the output folder, the plan, --calib, the
    TFLite toolchain; with --to, each graph is checked for the target right after its
    ONNX export, before calibration. The ONNX, calibration, quantized and TNN files
    appear together or not at all.

    -o DIR: a new or empty folder, or an earlier export (its recorded files are replaced,
    any other file stays). A non-empty folder of anything else needs --overwrite, and even
    then no file edgeseg did not write is replaced or deleted.
    """
    from edgeseg.export.onnx import default_graphs, expected_files
    from edgeseg.utils import outputs

    # ---- checks before any work
    trt_opts = None
    if "tensorrt" in targets:  # options and TensorRT itself are checked before any export work
        from edgeseg.export.tensorrt.build_plan import BuildOptions
        from edgeseg.export.tensorrt.deps import import_tensorrt

        trt_opts = BuildOptions.parse(trt_options)
        import_tensorrt()
    elif trt_options:
        raise EdgesegError("--trt options apply to --to tensorrt", "add --to tensorrt, or drop --trt")
    if (Path(model_name) / "manifest.json").is_file() and clip_length is not None:
        raise EdgesegError("--clip-length cannot change an existing export", "re-export the zoo model with it")
    if (Path(model_name) / "manifest.json").is_file():  # an existing export folder: convert it, no re-export
        from edgeseg.cli.export_existing import convert_existing

        convert_existing(Path(model_name), targets, plan_spec, calib, calib_num, calib_source, tnn_device,
                         trt_opts)
        return
    if calib and not plan_spec:
        raise EdgesegError("--calib is only used with --plan", "add --plan SPEC, e.g. --plan backbone=int8,*=fp16")
    if "tflite" in targets:
        from edgeseg.export.tflite import check_toolchain

        check_toolchain()
    from edgeseg.quantize.pipeline import calib_num_arg, check_calib

    calib_num = calib_num_arg(calib_num)
    if calib:
        check_calib(calib)
    if model_name.endswith(".onnx") and clip_length is not None:
        raise EdgesegError("--clip-length cannot change an ONNX file", "drop it; re-export the source model")
    if model_name.endswith(".onnx"):
        _export_foreign(model_name, out_dir, overwrite, weights, num_classes, input_size, output_names, graphs,
                        components, mean, std, decoder, plan_spec, calib, calib_num, targets, calib_source,
                        tnn_device, trt_opts)
        return
    from edgeseg.models.user import is_user_entry

    graph_list = tuple(g.strip() for g in graphs.split(",")) if graphs else None
    model = None
    if is_user_entry(model_name):  # building the user's model is cheap and names its files
        model, winfo = build_any(model_name, input_size, num_classes, weights, components, output_names, mean,
                                 std, decoder, clip_length)
    file_name = model.model_name if model is not None else model_name
    out = Path(out_dir or Path("out") / file_name)
    folder = outputs.check_output_folder(out, outputs.EXPORT, overwrite=overwrite,
                                         inputs=[w for w in (weights, calib) if w and w != "zoo"],
                                         expected=expected_files(file_name, graph_list or ("frame", "features")))
    if model is None:
        model, winfo = build_any(model_name, input_size, num_classes, weights, components, output_names, mean,
                                 std, decoder, clip_length)
    print_weights_summary(winfo)
    plan = None
    if plan_spec:  # fail on a bad plan or calibration before the export work
        from edgeseg.quantize.pipeline import check_plan_for_model

        plan = check_plan_for_model(model, plan_spec, calib)
        if "tnn" in targets:  # known from the model's modules: refuse before exporting anything
            from edgeseg.export.compat.tnn import model_blockers, model_blockers_error

            blockers = model_blockers(model, tnn_device, plan)
            if blockers:
                raise model_blockers_error(blockers)
        if "tflite" in targets and plan.needs_calibration and _tflite_images(calib) is None:
            raise EdgesegError("--to tflite with int8 components needs representative images, and the table's "
                               "image folder is not on this machine",
                               "pass --calib DIR (a folder of images) instead of the table")

    # ---- the work, in a temporary folder that replaces the output's edgeseg files at the end
    from edgeseg.export.onnx import export_into, rebase
    from edgeseg.utils import atomic

    seen_graphs: list[str] = []

    def preflight(graph: str, path: Path) -> None:
        # The target's refusals need only the fp32 graph: make them before calibration.
        from edgeseg.export.graph_settings import plan_for_graph

        seen_graphs.append(graph)
        graph_plan = plan_for_graph(path, plan, getattr(model, "family", None)) if graph != "frame" else plan
        if "tnn" in targets:
            from edgeseg.export.tnn.writer import preflight as tnn_preflight

            # A plan's units name the first (frame) graph; the others may lack some of them.
            tnn_preflight(path, graph_plan, tnn_device, other_graph=len(seen_graphs) > 1)
        if "tflite" in targets:
            from edgeseg.export.tflite import preflight as tflite_preflight

            tflite_preflight(path, graph_plan)

    outcome = tnn_results = None
    with atomic.atomic_directory(out, owned=folder.owned_now) as tmp:
        result = export_into(model, tmp, simplifier=simplifier, weights=winfo,
                             graphs=graph_list or default_graphs(model), on_graph=preflight)
        paths = [result.onnx_path] + [g.path for g in result.graphs.values() if g.path != result.onnx_path]
        if plan_spec:
            from edgeseg.quantize.pipeline import quantize_exported

            outcome = quantize_exported(result.onnx_path, plan_spec, calib, num=calib_num)
            if outcome.calibration is not None and outcome.calibration.images.shortfall():
                click.secho(f"note: --calib-num {outcome.calibration.images.shortfall()}", fg="yellow", err=True)
        table = _table_path(outcome, calib)
        if "tnn" in targets:
            from edgeseg.export.tnn.artifacts import export_tnn_graphs

            tnn_results = export_tnn_graphs(paths, plan_spec, table, tnn_device)
    moved = _mover(tmp, out)
    result = rebase(result, out)
    print_export_summary(result)
    if outcome is not None:
        from edgeseg.cli.quantize import print_quantize_outcome

        q = outcome.quantize
        q.path, q.features_path = moved(q.path), moved(q.features_path)
        q.fidelity_paths = tuple(moved(f) for f in q.fidelity_paths) if q.fidelity_paths else None
        print_quantize_outcome(q)
    if tnn_results is not None:
        from edgeseg.export.tnn.artifacts import print_tnn_results

        for r in tnn_results:
            r.proto_path, r.model_path = moved(r.proto_path), moved(r.model_path)
        print_tnn_results(tnn_results)
    if "tflite" in targets:
        # After the folder is in place: a converter failure keeps the complete ONNX
        # artifacts and the conversion log for diagnosis.
        from edgeseg.export.tflite import export_tflite_graphs, print_tflite_results

        paths = [result.onnx_path] + [g.path for g in result.graphs.values() if g.path != result.onnx_path]
        print_tflite_results(export_tflite_graphs(paths, plan_spec, moved(_table_path(outcome, calib)),
                                                  _tflite_images(calib), calib_source))
    if "tensorrt" in targets:
        from edgeseg.export.tensorrt.export import export_tensorrt_graphs, print_tensorrt_results

        paths = [result.onnx_path] + [g.path for g in result.graphs.values() if g.path != result.onnx_path]
        print_tensorrt_results(export_tensorrt_graphs(paths, plan_spec, moved(_table_path(outcome, calib)), trt_opts))


def _export_foreign(path, out_dir, overwrite, weights, num_classes, input_size, output_names, graphs, components,
                    mean, std, decoder, plan_spec, calib, calib_num, targets, calib_source, tnn_device,
                    trt_opts=None) -> None:
    """``edgeseg export their.onnx``: a tagged copy + manifest in an artifact folder, then
    --plan / --to on it like any export."""
    from edgeseg.export.foreign import export_foreign
    from edgeseg.models.user import parse_mapping
    from edgeseg.utils import outputs

    given = [f for f, v in (("--weights", weights), ("--num-classes", num_classes), ("--input-size", input_size),
                            ("--output-names", output_names), ("--graphs", graphs)) if v]
    if given:
        raise EdgesegError(f"{', '.join(given)} cannot change an ONNX file", "drop them; re-export the source model")
    patterns = parse_mapping(components, "--components", "backbone=^/backbone/,head=^/head/")
    out = Path(out_dir or Path("out") / Path(path).stem)
    folder = outputs.check_output_folder(out, outputs.EXPORT, overwrite=overwrite, inputs=[path, calib],
                                         expected=["manifest.json", f"{Path(path).stem}.onnx"])
    result = export_foreign(path, out, patterns, mean=mean, std=std, decoder=decoder, owned=folder.owned_now)
    print_export_summary(result)
    paths = [result.onnx_path]
    outcome = None
    if plan_spec:
        from edgeseg.cli.quantize import print_quantize_outcome
        from edgeseg.quantize.pipeline import quantize_exported

        outcome = quantize_exported(result.onnx_path, plan_spec, calib, num=calib_num)
        if outcome.calibration is not None and outcome.calibration.images.shortfall():
            click.secho(f"note: --calib-num {outcome.calibration.images.shortfall()}", fg="yellow", err=True)
        print_quantize_outcome(outcome.quantize)
    if "tnn" in targets:
        from edgeseg.export.tnn.artifacts import export_tnn_graphs, print_tnn_results

        print_tnn_results(export_tnn_graphs(paths, plan_spec, _table_path(outcome, calib), tnn_device))
    if "tflite" in targets:
        from edgeseg.export.tflite import export_tflite_graphs, print_tflite_results

        print_tflite_results(export_tflite_graphs(paths, plan_spec, _table_path(outcome, calib),
                                                  _tflite_images(calib), calib_source))
    if "tensorrt" in targets:
        from edgeseg.export.tensorrt.export import export_tensorrt_graphs, print_tensorrt_results

        print_tensorrt_results(export_tensorrt_graphs(paths, plan_spec, _table_path(outcome, calib), trt_opts))


def _tflite_images(calib) -> Path | None:
    """TFLite's representative images: the --calib folder, or the folder a --calib table
    was computed on when it is still there."""
    if calib is None:
        return None
    if Path(calib).is_dir():
        return Path(calib)
    from edgeseg.quantize.cache import CalibrationTable

    root = CalibrationTable.load(calib).settings.get("images_root")
    return Path(root) if root and Path(root).is_dir() else None


def _table_path(outcome, calib) -> Path | None:
    """The calibration table of ``export --plan``: the one computed, or the one given."""
    if outcome is None or not outcome.quantize.plan.needs_calibration:
        return None
    if outcome.calibration is not None:
        return outcome.calibration.table_path
    return Path(calib)


def _mover(tmp: Path, final: Path):
    """Maps paths inside the temporary export folder to where they are now."""
    def moved(p):
        if p is None:
            return None
        try:
            return final / Path(p).relative_to(tmp)
        except ValueError:
            return Path(p)
    return moved
