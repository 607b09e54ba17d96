"""The device in the precision sweep: each plan's latency measured on the target itself.

A plan's speed is a property of the target: INT8 is often *slower* than FP16 on a GPU
or a phone (reformats, missing int8 kernels), and the host's CPU says nothing about it.
With ``edgeseg sweep --target adb[:SERIAL] | ssh://user@host`` every plan is built into
the artifact that target runs and timed there, while AP stays a host measurement with the
target's numerics (or, opt-in, an ``edgeseg eval`` on the device itself):

=============  ===============================  ==================================================
target         built per plan                   timed with
=============  ===============================  ==================================================
adb (phone)    ``.tflite`` (benchmark_model)    the runner on one pinned core (the prime core by
               or ``.tnnproto`` (TNNTest)       default), device state before/after
ssh (Jetson)   engine from the plan's ONNX by   ``trtexec --exportTimes``; strongly typed on
               trtexec on the device            TensorRT >= 10, weak typing + our cache on 8.x
=============  ===============================  ==================================================

Every plan's target is opened once (files pushed, engines built, both cached on the
device by content), then the timed runs are split into interleaved rounds, each round
timing a block of every plan with the starting plan rotating -- the same protocol as the
host sweep (``sweep_latency.py``), so thermal drift on a phone spreads over all plans.
A runner that prints only a summary (benchmark_model, TNNTest) gives one figure per block:
the statistic is then the median over rounds of the block means, and the report says so.

The report records, per plan, where its AP and its latency came from.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeseg.errors import EdgesegError

PHONE_ARTIFACTS = {"benchmark_model": "tflite", "tnntest": "tnn"}


@dataclass
class DeviceSweepSettings:
    target: str  # "adb", "adb:SERIAL" or "ssh://[user@]host[:port]"
    runner_bin: Path | None = None  # benchmark_model / TNNTest (phone; required), trtexec (Jetson; optional)
    artifact: str | None = None  # phone: "tflite" | "tnn" (default: from the runner's name)
    core: int | None = None  # phone: core to pin (default: the prime core)
    timeout_s: float = 900.0
    build_options: Any = None  # Jetson: export.tensorrt BuildOptions (workspace, DLA, typing...)
    profile_runs: int = 10  # Jetson: per-component profiling run per plan (0: none)
    ap: str = "host"  # "host" (target numerics simulated) | "device" (edgeseg eval there; Jetson only)
    python: str = "python3"  # ap="device": the device's Python that has edgeseg and tensorrt
    spec: Any = field(default=None, init=False)  # parsed TargetSpec

    def check(self) -> None:
        from edgeseg.benchmark.targets import parse_target

        self.spec = parse_target(self.target)
        if self.spec.kind == "local":
            raise EdgesegError("--target local is the host sweep itself", "drop --target, or name a device")
        if self.ap not in ("host", "device"):
            raise EdgesegError(f"unknown AP source {self.ap!r}", "use --ap-from host or --ap-from device")
        if self.runner_bin is not None and not Path(self.runner_bin).is_file():
            raise EdgesegError(f"runner binary {self.runner_bin} does not exist", "check the --runner-bin path")
        if self.spec.kind == "adb":
            if self.ap == "device":
                raise EdgesegError("AP on the device needs edgeseg with TensorRT there (a Jetson)",
                                   "drop --ap-from device: phone AP is measured on the host with the target's numerics")
            if self.runner_bin is None:
                raise EdgesegError("a phone sweep needs the benchmark binary to push",
                                   "pass --runner-bin PATH/benchmark_model (TFLite) or PATH/TNNTest (TNN)")
            kind = self.artifact or PHONE_ARTIFACTS.get(Path(self.runner_bin).name.lower())
            if kind not in ("tflite", "tnn"):
                raise EdgesegError(f"cannot tell which artifact {Path(self.runner_bin).name} runs",
                                   "pass --device-artifact tflite (benchmark_model) or tnn (TNNTest)")
            self.artifact = kind
        else:
            if self.artifact not in (None, "tensorrt"):
                raise EdgesegError(f"a Jetson runs TensorRT engines, not {self.artifact}",
                                   "drop --device-artifact for ssh targets")
            self.artifact = "tensorrt"
        if self.build_options is None:
            from edgeseg.export.tensorrt.build_plan import BuildOptions

            self.build_options = BuildOptions()

    @property
    def host_backend(self) -> str:
        """The host runtime AP is measured with: the same .tflite for a TFLite phone, else the QDQ ONNX."""
        return "tflite" if self.artifact == "tflite" else "onnxruntime"

    def ap_source(self, backend: str) -> str:
        if self.ap == "device":
            return f"device {self.spec.address}: edgeseg eval of the engine (TensorRT)"
        return host_ap_source(backend)

    def latency_source(self, runtime: dict[str, Any]) -> str:
        where = f"{self.spec.kind} {self.spec.address}"
        if self.artifact == "tensorrt":
            return (f"{where}: trtexec, TensorRT {runtime.get('tensorrt', '?')} ({runtime.get('typing', '?')} typing)")
        return f"{where}: {runtime.get('backend', self.artifact)} on core {runtime.get('core', '?')}"


def host_ap_source(backend: str) -> str:
    if backend == "tflite":
        return "host: the same .tflite with LiteRT (XNNPACK)"
    return "host: ONNX Runtime on the QDQ/fp16 ONNX"


# --------------------------------------------------------------------------- the AP path
def evaluate_plan_ap(file: Path, dataset_json, images_dir, limit: int | None, threads: int,
                     numerics: str = "simulated"):
    """AP of one plan's host artifact with the target's numerics: the one place that decides them.

    ``simulated`` (the default): Q/DQ executed as float ops (``session.disable_quant_qdq``),
    the numbers a correct int8 engine (TensorRT, TFLite, TNN on ARM) computes, the same on
    every host; ``fused`` only on request, for deployment to x86 with ONNX Runtime.
    """
    from edgeseg.eval.coco import evaluate_artifact

    return evaluate_artifact(file, dataset_json, images_dir, limit=limit, threads=threads, numerics=numerics)


# --------------------------------------------------------------------------- building per target
def build_device_artifact(src, plan, table, settings: DeviceSweepSettings, host_file: Path) -> Path:
    """What the target runs for ``plan``: a .tflite, a .tnnproto, or (Jetson) the FP32 ONNX + plan."""
    if settings.artifact == "tflite":
        return host_file  # AP was measured on this very file
    if settings.artifact == "tnn":
        from edgeseg.export.tnn.writer import export_tnn

        out = src.onnx.parent / "tnn" / plan.label()
        res = export_tnn(src.onnx, out, plan=plan, table=table if plan.needs_calibration else None, device="arm",
                         name=f"{src.onnx.stem}.{plan.label()}")
        return res.proto_path
    return src.onnx  # trtexec builds each plan's engine on the device from the FP32 export


class _SharedTransport:
    """One device connection for every plan's target; closed once, by the sweep."""

    def __init__(self, transport):
        self._t = transport

    def __getattr__(self, name):
        return getattr(self._t, name)

    def close(self) -> None:
        pass


def _transport(settings: DeviceSweepSettings):
    spec = settings.spec
    if spec.kind == "adb":
        from edgeseg.benchmark.targets.adb import AdbTransport

        return AdbTransport(spec.serial)
    from edgeseg.benchmark.targets.ssh import SshTransport

    return SshTransport(spec.host, user=spec.user, port=spec.port)


def _target(transport, file: Path, plan, settings: DeviceSweepSettings, table_path: Path | None):
    if settings.artifact == "tensorrt":
        from edgeseg.benchmark.targets.ssh import JetsonTarget

        return JetsonTarget(transport, file, runner_bin=settings.runner_bin, calib=table_path,
                            timeout_s=settings.timeout_s, plan_spec=plan.spec(),
                            build_options=settings.build_options, profile_runs=settings.profile_runs)
    from edgeseg.benchmark.runners import phone_runner_for
    from edgeseg.benchmark.targets.runner import RunnerTarget

    return RunnerTarget(transport, file, phone_runner_for(file), Path(settings.runner_bin), core=settings.core,
                        timeout_s=settings.timeout_s)


@dataclass
class DeviceTiming:
    """Same fields the host sweep reads from ``LatencyRun``, plus where each figure came from."""

    stats: dict[str, Any]
    per_round_p50: dict[str, list[float]]
    runtime: dict[str, Any]
    device_before: dict[str, Any]
    device_after: dict[str, Any]
    statistic: str  # what the samples are: per-run latencies, or per-round block means
    latency_sources: dict[str, str]
    per_plan: dict[str, dict[str, Any]]  # spec -> device runtime info (engine, typing, per-component...)
    ap_on_device: dict[str, dict[str, Any]] = field(default_factory=dict)


def measure_on_device(files: dict[str, tuple[Any, Path]], settings: DeviceSweepSettings, latency,
                      table_path: Path | None = None, say: Callable[[str], None] = lambda m: None,
                      transport_factory: Callable[[DeviceSweepSettings], Any] | None = None,
                      evaluation: dict[str, Any] | None = None) -> DeviceTiming:
    """Open every plan's target on one connection, then time them in interleaved rounds.

    ``files``: spec -> (plan, file the target runs); ``latency``: ``LatencySettings``;
    ``evaluation``: dataset_json, images_dir, limit, manifest_path for ``ap="device"``.
    """
    from edgeseg.benchmark.stats import LatencyStats

    latency.validate()
    transport = (transport_factory or _transport)(settings)
    shared = _SharedTransport(transport)
    keys = list(files)
    blocks: dict[str, list[LatencyStats]] = {k: [] for k in keys}
    try:
        if settings.ap == "device":  # before any engine is built: can the device evaluate at all?
            from edgeseg.quantize.sweep_remote_eval import check_device_python

            check_device_python(shared, settings.python)
        with contextlib.ExitStack() as stack:
            targets = {}
            for i, k in enumerate(keys, 1):
                plan, file = files[k]
                say(f"  [{i}/{len(keys)}] {plan.name or plan.label()}: preparing on {settings.spec.address}")
                t = _target(shared, file, plan, settings, table_path)
                t.open()
                stack.callback(t.close)
                targets[k] = t
            first = targets[keys[0]]
            before = first.device_state().to_dict()
            for r, runs in enumerate(latency.blocks()):
                start = r % len(keys)
                for k in keys[start:] + keys[:start]:
                    warm = latency.warmup if (r == 0 or targets[k].warmup_each_block) else latency.rewarm
                    blocks[k].append(targets[k].measure(runs, warm).stats)
                say(f"  round {r + 1}/{latency.repeats} done on {settings.spec.address}")
            after = first.device_state().to_dict()
            runtimes = {k: t.runtime_info() for k, t in targets.items()}
            profiles = {k: getattr(t, "component_profile", None) for k, t in targets.items()}
            ap = {}
            if settings.ap == "device":
                from edgeseg.quantize.sweep_remote_eval import remote_ap

                for k, t in targets.items():
                    say(f"  evaluating {files[k][0].name or files[k][0].label()} on {settings.spec.address}")
                    ap[k] = remote_ap(t, files[k][0], settings, **(evaluation or {}))
    finally:
        transport.close()
    per_run = all(b.samples_ms for v in blocks.values() for b in v)
    stats, per_round = {}, {}
    for k, parts in blocks.items():
        if per_run:
            stats[k] = LatencyStats.combine(parts)
            per_round[k] = [float(b.p50_ms) for b in parts]
        else:  # one figure per block: the tool's mean; the median over rounds is the plan's figure
            means = [float(b.mean_ms) for b in parts]
            stats[k] = LatencyStats.from_samples(means)
            per_round[k] = means
    statistic = ("per-run latencies" if per_run else
                 "per-round block means (the runner prints a summary per block, not each run)")
    latency_sources = {k: settings.latency_source(runtimes[k]) for k in keys}
    per_plan = {k: {**runtimes[k], **({"per_component": profiles[k]} if profiles[k] else {})} for k in keys}
    return DeviceTiming(stats, per_round, runtimes[keys[0]], before, after, statistic, latency_sources, per_plan, ap)
