"""``edgeseg sweep``: accuracy vs latency over precision plans (Table I + Pareto plot)."""

from __future__ import annotations

from pathlib import Path

import click

_EPILOG = """\b
Examples:
  # the shipped checkpoint: FP32 + every fp16/int8 combination of its 3 components,
  # calibrated once on train images, AP on val, p50 on one pinned core
  edgeseg data synth -o data/shapes --train 100 --val 50 --videos 0 --val-videos 0
  edgeseg sweep mobileinst_topformer_synth --calib data/shapes/coco/train \\
      --dataset data/shapes/coco/annotations/val.json --max-ap-drop 1.0 -o reports/

\b
  # a few plans (';'-separated specs or presets), an existing export and table
  edgeseg sweep out/mobileinst --calib out/mobileinst/table.json \\
      --dataset val.json --images val/ --plans 'mixed;int8;backbone=int8,*=fp16'

\b
  # latency on the device: TNN on a phone's prime core, or TensorRT engines on a Jetson
  edgeseg sweep out/mobileinst --calib table.json --dataset val.json \\
      --target adb --runner-bin ./TNNTest --plans 'fp16;mixed'
  edgeseg sweep out/mobileinst --calib table.json --dataset val.json \\
      --target ssh://nvidia@orin --trt workspace=2048
"""


def print_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    from edgeseg.quantize.sweep_report import _note, fmt_ap, fmt_ms, fmt_speedup

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # logs and pipes: keep component names whole
    comps = report.components
    target = report.latency.get("target") or "local"
    figure = f"p50 of {report.plans[0].runs} runs"
    if str(report.latency.get("statistic", "")).startswith("per-round"):
        figure = f"median of {report.plans[0].runs} per-round means ({report.latency.get('runs')} runs)"
    where = "on one pinned core" if target == "local" else f"on {target}"
    numerics = report.numerics or {}
    t = Table(title=f"{report.model.get('name')}: {report.dataset.get('images')} images, backend "
                    f"{report.backend}, {figure} {where}; int8 numerics: AP {numerics.get('accuracy', '?')}, "
                    f"latency {numerics.get('latency', '?')}")
    for c in comps:
        t.add_column(c, justify="center")
    sources = any(p.sources for p in report.plans)
    for col in ("AP", "AP50", "p50 ms", "speed-up", "Pareto") + (("AP from", "latency from") if sources else ()):
        t.add_column(col, justify="right" if col not in ("Pareto", "AP from", "latency from") else "center")
    notes: dict[str, str] = {}
    for p in report.plans:
        extra = [escape(_note(notes, p.sources.get("ap", "host"))),
                 escape(_note(notes, p.sources.get("latency", "host")))] if sources else []
        t.add_row(*(p.precisions[c].upper() for c in comps), fmt_ap(p.metrics.get("AP")),
                  fmt_ap(p.metrics.get("AP50")), fmt_ms(p.p50), fmt_speedup(p.speedup),
                  "[bold green]*[/bold green]" if p.pareto else "", *extra)
    console.print(t)
    for text, letter in notes.items():
        console.print(escape(f"  [{letter}] {text}"), highlight=False)
    for p in report.plans:
        if p.name and p.name not in ("fp32", "fp16", "int8"):
            console.print(f"preset {p.name}: {p.label} (AP {fmt_ap(p.metrics.get('AP'))}, p50 {fmt_ms(p.p50)} ms, "
                          f"{fmt_speedup(p.speedup)}{', Pareto' if p.pareto else ''})")


@click.command("sweep", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("source", metavar="ARTIFACT_OR_MODEL")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration images (folder, e.g. the train split) or a table from `edgeseg calibrate`. "
                   "Needed when a plan has INT8 components.")
@click.option("--dataset", "dataset_json", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="COCO instances JSON to measure mask AP on.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the dataset's images (default: X/val for X/annotations/val.json).")
@click.option("--plans", "plans", default="default", show_default=True,
              help="'default' (FP32 + every fp16/int8 combination) or ';'-separated plans/presets; "
                   "FP32 is always added as the reference.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tflite", "tensorrt"]), default="onnxruntime",
              show_default=True, help="tensorrt: engines built and timed here (needs TensorRT and a GPU).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per plan (p50 over them).")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs per plan before timing.")
@click.option("--repeats", type=int, default=None,
              help="Interleaved rounds the runs are split into (every round times every plan; "
                   "default: 10, or --runs if fewer).")
@click.option("--core", type=int, default=None, help="CPU core to pin to (default: the fastest).")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="Host latency as elapsed time per run, or as this process's CPU time per run (on a machine "
                   "other jobs share, CPU time leaves out the waits for the core).")
@click.option("--target", "target_spec", default=None,
              help="Measure latency on a device: adb[:SERIAL] (phone) or ssh://user@host[:port] (Jetson). "
                   "AP stays a host measurement with the target's numerics unless --ap-from device.")
@click.option("--runner-bin", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="--target: the benchmark binary to push (benchmark_model, TNNTest; trtexec optional).")
@click.option("--device-artifact", type=click.Choice(["tflite", "tnn"]), default=None,
              help="--target adb: what the phone runs (default: from the runner's name).")
@click.option("--ap-from", "ap_from", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="--target ssh: 'device' runs `edgeseg eval` on the Jetson's engines (edgeseg + TensorRT there).")
@click.option("--device-python", default="python3", show_default=True,
              help="--ap-from device: the Python on the Jetson that imports edgeseg and tensorrt.")
@click.option("--trt", "trt_options", multiple=True, metavar="KEY=VALUE",
              help="--target ssh: TensorRT build options (workspace=MiB, dla=CORE, typing=auto|strong|weak, ...).")
@click.option("--device-timeout", type=float, default=900.0, show_default=True,
              help="--target: seconds one block may take on the device.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N images of the dataset.")
@click.option("--eval-threads", type=int, default=1, show_default=True,
              help="Threads for the AP evaluation (does not change AP, only how long it takes).")
@click.option("--calib-num", type=int, default=100, show_default=True, help="Calibration images (from --calib DIR).")
@click.option("--calib-method", type=click.Choice(["kl", "minmax", "percentile"]), default="kl", show_default=True)
@click.option("--numerics", type=click.Choice(["simulated", "fused"]), default="simulated", show_default=True,
              help="How AP runs int8 on ONNX Runtime: simulated Q/DQ (what a phone or TensorRT computes, the "
                   "same on every host) or fused (this CPU's ONNX Runtime int8 kernels, for x86 deployment; "
                   "they saturate on x86 without VNNI). Latency always times the fused kernels.")
@click.option("--max-ap-drop", type=float, default=None,
              help="Print the fastest plan whose AP is within this many points of FP32.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Intermediate artifacts (default: OUT/work).")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path),
              default=Path("reports"), show_default=True, help="Report folder.")
@click.option("--overwrite", is_flag=True,
              help="Write into non-empty -o / --work-dir folders that no sweep made (files there are kept).")
def sweep(source, calib, dataset_json, images_dir, plans, backend, runs, warmup, repeats, core, clock, target_spec,
          runner_bin, device_artifact, ap_from, device_python, trt_options, device_timeout, limit, eval_threads, calib_num,
          calib_method, numerics, max_ap_drop, work_dir, out_dir, overwrite) -> None:
    """Build every precision plan of ARTIFACT_OR_MODEL from one calibration, measure its mask
    AP and its single-core latency, and write YolactEdge-style Table I + a Pareto plot:
    OUT/sweep.json (everything `edgeseg regress` needs), OUT/sweep.md (the table) and
    OUT/sweep_pareto.png; intermediate artifacts go to --work-dir (default OUT/work).

    ARTIFACT_OR_MODEL: an edgeseg checkpoint (.safetensors), an export folder (or its
    .onnx), or a zoo model name that has committed weights.

    Writes OUT/sweep.json (everything `edgeseg regress` needs), OUT/sweep.md (the table)
    and OUT/sweep_pareto.png; intermediate artifacts go to --work-dir (default OUT/work).
    An earlier sweep's reports and work files are replaced; other files there are kept, and
    a non-empty folder that no sweep made needs --overwrite.
    """
    from edgeseg.cli.eval import guess_images_dir
    from edgeseg.errors import EdgesegError
    from edgeseg.quantize.sweep import SweepSettings, check_output_dir, run_sweep, write_reports
    from edgeseg.quantize.sweep_latency import LatencySettings
    from edgeseg.quantize.sweep_report import fastest_sentence

    if images_dir is None:
        images_dir = guess_images_dir(str(dataset_json))
        if images_dir is None:
            raise EdgesegError(f"no image folder given and none found beside {dataset_json}",
                               "pass --images DIR (the folder holding the files named in the JSON)")
    inputs = [p for p in (Path(source), dataset_json, images_dir, calib) if p is not None and Path(p).exists()]
    check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)  # before minutes of work, not after
    device = None
    if target_spec is not None:
        from edgeseg.export.tensorrt.build_plan import BuildOptions
        from edgeseg.quantize.sweep_device import DeviceSweepSettings

        device = DeviceSweepSettings(target=target_spec, runner_bin=runner_bin, artifact=device_artifact, core=core,
                                     timeout_s=device_timeout, build_options=BuildOptions.parse(trt_options),
                                     ap=ap_from, python=device_python)
    elif runner_bin or device_artifact or trt_options or ap_from != "host":
        raise EdgesegError("--runner-bin, --device-artifact, --trt and --ap-from need --target",
                           "add --target adb[:SERIAL] or --target ssh://user@host")
    settings = SweepSettings(plans=plans, backend=backend, limit=limit, eval_threads=eval_threads,
                             calib_method=calib_method, calib_num=calib_num, max_ap_drop=max_ap_drop, device=device,
                             numerics=numerics,
                             latency=LatencySettings(runs=runs, warmup=warmup, core=None if device else core,
                                                     clock=clock,
                                                     repeats=repeats if repeats is not None else max(1, min(10, runs))))
    report = run_sweep(source, dataset_json, images_dir, calib, work_dir or out_dir / "work", settings,
                       progress=lambda msg: click.echo(msg, err=True), overwrite=overwrite)
    paths = write_reports(report, out_dir)
    print_table(report)
    if max_ap_drop is not None:
        best = report.fastest_within(max_ap_drop)
        click.echo(fastest_sentence(report, max_ap_drop, best).replace("**", ""))
    for p in paths.values():
        click.echo(f"wrote {p}", err=True)
