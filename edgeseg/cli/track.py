"""``edgeseg track``: video instance segmentation with the family's video strategy (MobileInst:
kernel reuse; IFC: near-online clip matching), or the interval sweep."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeseg.errors import EdgesegError


_EPILOG = """\b
Examples:
  edgeseg track clip.mp4 --artifact out/mobileinst --key-interval 3 -o results.json --overlay tracked.mp4
  edgeseg track frames/ --artifact out/mobileinst --overlay overlay_pngs/
  edgeseg track --dataset data/ytvis/annotations/val.json --artifact out/mobileinst --key-interval 1,3,6 \\
      -o sweep.md
  edgeseg track --dataset data/ytvis/annotations/val.json --artifact out/ifc_t5 --stride 1,2,3,4,5 -o ifc.md
"""


@click.command("track", epilog=_EPILOG, context_settings={"max_content_width": 110})
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path())
@click.option("--artifact", required=True, type=click.Path(),
              help="Artifact folder from `edgeseg export` (frame + features graphs), or its frame graph file.")
@click.option("--key-interval", "--reuse", "--stride", "reuse_text", default=None,
              help="The strategy's interval. Kernel reuse (MobileInst): T, frame i is a keyframe when i % T == 0, "
                   "the frames between reuse its kernels (default 3). Clip matching (IFC): S, a clip of the "
                   "graph's T frames starts every S frames, 1 <= S <= T (default 1). Feature warp (YolactEdge): T, the "
                   "frames between warp the keyframe's P4/P5 by FeatFlowNet's flow. With --dataset, several: 1,3,6.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Results JSON (YouTube-VIS format); with --dataset the sweep table (.json + .md).")
@click.option("--overlay", type=click.Path(), help="Overlay video (out.mp4, .mkv, .avi, .webm) or a folder for PNGs.")
@click.option("--dataset", type=click.Path(dir_okay=False),
              help="YouTube-VIS annotations: track every video at each T and print VIS AP and latency.")
@click.option("--videos", type=click.Path(file_okay=False),
              help="Frame folder of --dataset (default: JPEGImages beside its annotations folder).")
@click.option("--video-id", type=int, default=1, show_default=True, help="video_id written for INPUT's tracks.")
@click.option("--score-threshold", type=float, default=None,
              help="Track instances scoring above this on a keyframe / in a clip (kernel reuse 0.3; clip "
                   "matching 0.1, on the best class probability).")
@click.option("--match-threshold", type=float, default=None,
              help="Minimum similarity to continue a track: kernel cosine (kernel reuse, 0.5) or soft mask IoU "
                   "on the shared frames (clip matching, 0.1), mask IoU between consecutive frames (YolactEdge; "
                   "fast objects need less, e.g. 0.1).")
@click.option("--max-gap", type=int, default=None,
              help="Kernel reuse: keyframes a track may miss and keep its id (default 2).")
@click.option("--max-instances", type=int, default=None, help="Instances per keyframe / clip (default 10).")
@click.option("--backend", help="Runtime (default: by file suffix, onnxruntime for .onnx).")
@click.option("--threads", type=int, default=1, show_default=True, help="Compute threads per runtime.")
@click.option("--core", type=int, help="Core to pin the sweep to (default: the fastest allowed).")
@click.option("--numerics", type=click.Choice(["fused", "simulated"]), default="fused", show_default=True,
              help="How ONNX Runtime runs int8: fused (this CPU's int8 kernels, as deployed and timed) or "
                   "simulated Q/DQ (what a phone or TensorRT computes; host-independent VIS AP).")
@click.option("--overwrite", is_flag=True,
              help="Replace -o / --overlay files that edgeseg did not write; write overlay frames into a "
                   "non-empty folder (your files there are kept).")
def track(input_path, artifact, reuse_text, output, overlay, dataset, videos, video_id, score_threshold,
          match_threshold, max_gap, max_instances, backend, threads, core, overwrite,
          numerics) -> None:
    """Segment and track instances in a video (file or folder of frames) with the video
    strategy of the artifact's family. MobileInst's kernel reuse: every T-th frame runs the
    full graph, the frames in between run only the features graph and reuse the keyframe's
    kernels; kernels of consecutive keyframes are associated by cosine similarity. IFC's
    clip matching (near-online): a clip of T frames every S frames (T is the exported
    graph's clip length), instances of consecutive clips matched by soft mask IoU on their
    shared frames. Writes YouTube-VIS results and an optional overlay; with --dataset, VIS
    AP and latency per interval.
    """
    from edgeseg.track.strategy import strategy_for
    from edgeseg.track.sweep import parse_reuse

    if threads < 1:
        raise EdgesegError(f"--threads {threads}: need at least one thread", "use --threads 1 (one core)")
    if not input_path and not dataset:
        raise EdgesegError("nothing to track", "pass a video file or frame folder (INPUT), or --dataset ANN.json")
    reuses = parse_reuse(reuse_text) if reuse_text is not None else None
    strategy = strategy_for(artifact)
    options = {k: v for k, v in dict(score_threshold=score_threshold, match_threshold=match_threshold,
                                     max_gap=max_gap, max_instances=max_instances).items() if v is not None}
    strategy.config(**options)  # validate thresholds before opening anything
    if dataset:
        if input_path:
            raise EdgesegError("give either INPUT or --dataset, not both",
                               "INPUT tracks one video; --dataset sweeps T over a YouTube-VIS dataset")
        if overlay:
            raise EdgesegError("--overlay draws one video; it does not combine with --dataset",
                               "track a single video (INPUT) to draw an overlay")
        if output:
            from edgeseg.track.sweep import report_paths
            from edgeseg.utils.outputs import check_output_file

            for path in report_paths(output):
                check_output_file(path, flag="-o", overwrite=overwrite)
        _sweep(dataset, videos, artifact, reuses or [_default_interval(strategy)], options, output, backend,
               threads, core, numerics)
        return
    if reuses is not None and len(reuses) != 1:
        name = getattr(strategy, "interval_name", "T")
        raise EdgesegError(f"--key-interval {reuse_text}: one video is tracked at one {name}",
                           f"give a single {name}, or use --dataset to sweep several")
    if videos:
        raise EdgesegError("--videos is the frame folder of --dataset", "pass the video or frame folder as INPUT")
    owned = _check_single_outputs(input_path, artifact, output, overlay, overwrite)
    _single(input_path, artifact, strategy, reuses[0] if reuses else _default_interval(strategy), options, output,
            overlay, video_id, backend, threads, owned, numerics)


def _default_interval(strategy) -> int:
    """The strategy's own default interval (kernel reuse: T=3; clip matching: S=1)."""
    return 1 if getattr(strategy, "interval_name", "T") == "S" else 3


def _check_single_outputs(input_path, artifact, output, overlay, overwrite):
    """-o and --overlay, before any frame is read; returns the overlay frames edgeseg may replace."""
    from edgeseg.track.video_io import VIDEO_SUFFIXES
    from edgeseg.utils import outputs

    if output:
        outputs.check_output_file(output, flag="-o", overwrite=overwrite, inputs=[input_path, artifact])
    if not overlay:
        return ()
    if Path(overlay).suffix.lower() in VIDEO_SUFFIXES:
        outputs.check_output_file(overlay, flag="--overlay", overwrite=overwrite, inputs=[input_path, artifact])
        return ()
    folder = outputs.check_output_folder(overlay, outputs.OVERLAY_FRAMES, flag="--overlay", overwrite=overwrite,
                                         inputs=[input_path, artifact])
    return folder.owned_now


def _single(input_path, artifact, strategy, interval, options, output, overlay, video_id, backend, threads,
            owned=(), numerics="fused") -> None:
    from edgeseg.track.pipeline import track_video
    from edgeseg.utils.blas import blas_threads
    from edgeseg.track.results import check_results, video_results
    from edgeseg.track.video_io import OverlayWriter, open_frames
    from edgeseg.utils import atomic

    config = strategy.config(**options)
    source = open_frames(input_path)  # unreadable input: fails before anything is written
    session = strategy.open(artifact, backend=backend, threads=threads, max_interval=interval,
                            make_missing=True, numerics=numerics)
    for note in session.notes:
        click.echo(note, err=True)
    try:
        tracker = session.tracker(interval, config)
        class_names = _class_names(session.manifest)
        with blas_threads(threads):
            if overlay:
                with OverlayWriter(overlay, fps=source.fps, owned=owned) as writer:
                    result = track_video(tracker, source, total=source.count, overlay=writer,
                                         class_names=class_names)
            else:
                result = track_video(tracker, source, total=source.count)
    finally:
        session.close()
    items = video_results(result, video_id)
    check_results(items, {video_id: result.num_frames})
    if output:
        atomic.write_json(output, items, indent=None)
    _print_single(result, items, session, class_names, output, overlay)


def _class_names(manifest) -> list[str] | None:
    names = (manifest.model_cfg or {}).get("class_names")
    return list(names) if isinstance(names, (list, tuple)) else None


def _print_single(result, items, session, class_names, output, overlay) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ms = result.mean_ms()
    keyframes = sum(t.keyframe for t in result.timings)
    clip_length = getattr(session, "clip_length", None)
    if clip_length:
        console.print(f"{result.num_frames} frames ({result.frame_hw[1]}x{result.frame_hw[0]}), clips of "
                      f"T={clip_length} every S={result.reuse} frames: {keyframes} clips "
                      f"({', '.join(f for f in session.graphs.values() if f)})")
    else:
        console.print(f"{result.num_frames} frames ({result.frame_hw[1]}x{result.frame_hw[0]}), T={result.reuse}: "
                      f"{keyframes} keyframes ({session.graphs.get('frame')}), {result.num_frames - keyframes} "
                      f"non-keyframes ({', '.join(f for r, f in session.graphs.items() if r != 'frame' and f) or '-'})")
    console.print(f"per frame: model {ms['model']:.1f} ms + host {ms['host']:.2f} ms "
                  f"(preprocess {ms['preprocess']:.1f} ms)")
    table = Table(title=f"{len(items)} tracks")
    for col in ("track", "category", "score", "frames", "first", "last"):
        table.add_column(col, justify="right" if col != "category" else "left")
    by_id = {t.id: t for t in result.tracks}
    for item in items:
        t = by_id[item["track_id"]]
        present = [i for i, s in enumerate(item["segmentations"]) if s is not None]
        name = class_names[t.label] if class_names and t.label < len(class_names) else f"label {t.label}"
        table.add_row(str(t.id), f"{name} (id {item['category_id']})", f"{item['score']:.3f}", str(len(present)),
                      str(present[0]), str(present[-1]))
    console.print(table)
    for what, path in (("results", output), ("overlay", overlay)):
        if path:
            console.print(f"[green]wrote[/green] {what} {path}")


def _sweep(dataset_path, videos, artifact, reuses, options, output, backend, threads, core, numerics="fused") -> None:
    from rich.console import Console
    from rich.table import Table

    from edgeseg.data.ytvis import YtvisDataset
    from edgeseg.track.sweep import reuse_sweep, save_report

    ann = Path(dataset_path)
    frames_dir = Path(videos) if videos else ann.parent.parent / "JPEGImages"
    if not videos and not frames_dir.is_dir():
        raise EdgesegError(f"no --videos given and {frames_dir} does not exist",
                           "pass --videos DIR (the folder the annotation's file_names are relative to)")
    dataset = YtvisDataset(ann, frames_dir)
    report = reuse_sweep(dataset, artifact, reuses, backend=backend, threads=threads, core=core,
                         numerics=numerics, options=options)
    s = report.settings
    clip = f", clips of T={s['clip_length']}" if s.get("clip_length") else ""
    table = Table(title=f"{str(s.get('strategy', 'kernel reuse')).capitalize()} on {len(dataset.videos)} videos ({s['frames_per_sweep']} frames), "
                        f"{s['model']}{clip}, core {s['core']}, {threads} thread(s); VIS AP, ms per frame "
                        "(wall; CPU = this thread's CPU time)")
    first = s.get("interval_name", "T")
    for col in (first, "AP", "AP50", "AP75", "ms/frame", "model", "host", "keyframe" if not clip else "clip",
                "reuse fr." if not clip else "other fr.", "CPU"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in report.rows:
        table.add_row(str(r.reuse), _f(r.ap), _f(r.ap50), _f(r.ap75), f"{r.total_ms:.2f}", f"{r.model_ms:.2f}",
                      f"{r.host_ms:.3f}", f"{r.keyframe_model_ms:.2f}", _f(r.reuse_model_ms, 2),
                      f"{r.model_cpu_ms + r.host_cpu_ms:.2f}")
    # Piped output (a log, CI) gets full rows instead of rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    for r in report.rows:
        for part, ms in r.parts_ms.items():
            share = f", {100 * ms / r.reuse_model_ms:.1f}% of the non-keyframe model time" if r.reuse_model_ms else ""
            console.print(f"T={r.reuse}: {part} {ms:.3f} ms per frame that runs it (host{share})")
    if not s.get("weights"):
        console.print("[yellow]note[/yellow]: the artifact has random weights; AP is meaningless until it is "
                      "exported with --weights")
    if output:
        json_path, md_path = save_report(report, output)
        console.print(f"[green]wrote[/green] {json_path} and {md_path}")


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
