"""``edgeseg bench``: latency of an artifact on one pinned core, a phone (adb) or a Jetson (ssh)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeseg.benchmark.harness import BENCH_BACKENDS
from edgeseg.errors import DeviceError, EdgesegError

_EPILOG = """\b
Examples:
  # host, one pinned core, one thread (an export folder or an .onnx file)
  edgeseg bench out/mobileinst --runs 50 --warmup 10 -o bench.json -o bench.md

\b
  # phone over adb: TFLite benchmark_model pinned to the prime core
  edgeseg bench model.tflite --target adb --runner-bin ./benchmark_model \\
      --runs 50 --repeats 5 --cooldown 30 -o phone.html

\b
  # Jetson over ssh: trtexec with per-component precisions from the plan's tags
  edgeseg bench out/mobileinst --target ssh://nvidia@xavier \\
      --plan backbone=int8,mask_decoder=int8,instance_decoder=fp16 -o jetson.md

\b
  # a folder holding both an .onnx and a .tflite: say which
  edgeseg bench out/mobileinst --backend tflite --runs 50
"""


@click.command("bench", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--target", "target_spec", default="local", show_default=True,
              help="local | adb[:SERIAL] | ssh://user@host[:port]")
@click.option("--core", type=int, default=None,
              help="CPU core to pin to (default: the fastest core, by cpuinfo_max_freq).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs in total.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs before timing.")
@click.option("--repeats", type=int, default=None,
              help="Split the runs into this many blocks with a cool-down before each "
                   "(default: 1 on the host, 5 on a device).")
@click.option("--cooldown", "cooldown_s", type=float, default=0.0, show_default=True,
              help="Seconds of idle before each block (lets a phone cool down).")
@click.option("--runner-bin", type=click.Path(path_type=Path), default=None,
              help="Benchmark binary to push to the device (benchmark_model, TNNTest, trtexec).")
@click.option("--backend", type=click.Choice(list(BENCH_BACKENDS)), default=None,
              help="What runs the artifact: " + "; ".join(f"{b}: {v[2]}" for b, v in BENCH_BACKENDS.items())
                   + ". Default: by file suffix; a folder with files for several backends needs it.")
@click.option("--calib", "calib", type=click.Path(path_type=Path), default=None,
              help="Jetson, INT8 components: a folder of images (calibrated here on --calib-num of them; the "
                   "table is written beside the ONNX) or a table from `edgeseg calibrate` (JSON, or a TensorRT "
                   "cache).")
@click.option("--calib-num", type=int, default=100, show_default=True,
              help="Images to calibrate on with --calib DIR (0 = all).")
@click.option("--plan", "plan_spec", default=None,
              help="Jetson: precision plan for trtexec, e.g. 'backbone=int8,*=fp16' or a preset "
                   "(default: the plan recorded in the manifest).")
@click.option("--timeout", "timeout_s", type=float, default=900.0, show_default=True,
              help="Seconds one block may take on a device before it is killed there.")
@click.option("-o", "--output", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Report file(s): .json, .md or .html (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace existing -o files that edgeseg did not write.")
def bench(artifact: Path, target_spec: str, core: int | None, runs: int, warmup: int, repeats: int | None,
          cooldown_s: float, runner_bin: Path | None, backend: str | None, calib: Path | None, calib_num: int,
          plan_spec: str | None, timeout_s: float, outputs: tuple[Path, ...], overwrite: bool) -> None:
    """Benchmark ARTIFACT (export folder, .onnx, .tflite, .tnnproto) on one core.

    A folder holding files for several backends (an .onnx and a .tflite) needs --backend.
    A report that lost its device part-way is still written, marked incomplete, with the
    runs measured before the loss (exit code 3). Report files edgeseg wrote are replaced;
    any other existing file needs --overwrite.
    """
    from edgeseg.benchmark.harness import (BenchSettings, artifact_facts, check_backend_for_target,
                                           choose_artifact, run_benchmark)
    from edgeseg.benchmark.report import FORMATS
    from edgeseg.benchmark.targets import parse_target
    from edgeseg.utils.outputs import check_output_file

    for out in outputs:  # fail before measuring, not after
        if out.suffix.lower() not in FORMATS + (".htm",):
            raise EdgesegError(f"cannot write a report as {out.name!r}",
                               f"name the output with one of: {', '.join(FORMATS)}")
        check_output_file(out, flag="-o", overwrite=overwrite, inputs=[artifact])
    if not artifact.exists():
        raise EdgesegError(f"artifact {artifact} does not exist",
                           "pass an export folder (with manifest.json) or a model file; "
                           "create one with `edgeseg export MODEL -o DIR`")
    spec = parse_target(target_spec)
    check_backend_for_target(backend, spec.kind)
    settings = BenchSettings(runs=runs, warmup=warmup, cooldown_s=cooldown_s,
                             repeats=repeats if repeats is not None else (1 if spec.kind == "local" else min(5, runs)))
    settings.validate()
    if plan_spec and spec.kind != "ssh":
        raise EdgesegError("--plan applies to the Jetson target (trtexec builds the engine from it)",
                           "elsewhere the artifact itself is the plan: quantize it with `edgeseg quantize`")
    if calib is not None and spec.kind != "ssh":
        raise EdgesegError("--calib applies to the Jetson target (trtexec calibrates INT8 layers with it)",
                           "elsewhere the artifact itself carries its scales: quantize it with `edgeseg quantize`")
    if artifact.is_dir():
        artifact = choose_artifact(artifact, spec.kind, backend)
    if calib is not None:
        from edgeseg.quantize.pipeline import calib_num_arg

        calib = _calibration_for(artifact, calib, calib_num_arg(calib_num))
    facts, plan = artifact_facts(artifact)
    target = build_target(spec, artifact, core=core, runner_bin=runner_bin,
                          backend=backend if backend in ("onnxruntime", "torch", "tflite") else None, calib=calib,
                          timeout_s=timeout_s, plan=plan, plan_spec=plan_spec)

    def progress(i, m):
        click.echo(f"  block {i + 1}/{settings.repeats}: {m.stats.n} runs, "
                   f"mean {m.stats.mean_ms:.3f} ms", err=True)

    report = run_benchmark(target, settings, artifact=facts, plan=plan, on_block=progress)

    from rich.console import Console

    Console().print(report.rich_table())
    for out in outputs:
        report.save(out)
        click.echo(f"wrote {out}", err=True)
    if not report.complete:
        raise DeviceError(f"benchmark incomplete: {report.error}",
                          "the runs measured before the failure are in the report; "
                          "reconnect the device and run again for a full measurement")


def _calibration_for(artifact: Path, calib: Path, num: int) -> Path:
    """``--calib``: a table is used as given; a folder of images is calibrated here first."""
    from edgeseg.quantize.pipeline import check_calib

    if check_calib(calib) == "table":
        return calib
    from edgeseg.quantize.pipeline import default_table_path, run_calibration
    from edgeseg.runtimes.base import resolve_artifact
    from edgeseg.utils.outputs import check_output_file

    onnx_path = resolve_artifact(artifact)
    check_output_file(default_table_path(onnx_path, "kl"), flag="")
    res = run_calibration(onnx_path, calib, num=num)
    click.echo(f"calibrated on {res.table.num_images} images of {calib}: wrote {res.table_path}", err=True)
    return res.table_path


def build_target(spec, artifact: Path, *, core, runner_bin, backend, calib, timeout_s, plan, plan_spec=None):
    """The Target for a parsed ``--target`` (heavy modules imported only for the chosen one)."""
    if spec.kind == "local":
        if runner_bin is not None:  # e.g. a Linux build of benchmark_model on a .tflite
            from edgeseg.benchmark.targets.local import LocalTransport
            from edgeseg.benchmark.targets.runner import RunnerTarget

            return RunnerTarget.for_artifact(LocalTransport.default(), artifact, runner_bin=runner_bin,
                                             core=core, timeout_s=timeout_s)
        from edgeseg.benchmark.targets.local import LocalTarget

        return LocalTarget(artifact, core=core, backend=backend)
    if spec.kind == "adb":
        from edgeseg.benchmark.targets.adb import AdbTransport
        from edgeseg.benchmark.targets.runner import RunnerTarget

        return RunnerTarget.for_artifact(AdbTransport(spec.serial), artifact, runner_bin=runner_bin,
                                         core=core, timeout_s=timeout_s)
    if spec.kind == "ssh":
        from edgeseg.benchmark.targets.ssh import JetsonTarget, SshTransport

        return JetsonTarget(SshTransport(spec.host, user=spec.user, port=spec.port), artifact,
                            runner_bin=runner_bin, calib=calib, core=core, timeout_s=timeout_s, plan=plan,
                            plan_spec=plan_spec)
    raise EdgesegError(f"unknown target kind {spec.kind!r}", "use local, adb[:SERIAL] or ssh://user@host")
