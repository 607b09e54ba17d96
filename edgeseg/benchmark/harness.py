"""The one benchmark harness: every target (local core, phone, Jetson) goes through here.

``run_benchmark(target, settings)``:

1. opens the target (pins and loads, or pushes files to the device),
2. records the device state *before* (governor, frequency, temperatures),
3. measures ``runs`` timed runs split into ``repeats`` blocks; before each block the
   device idles ``cooldown_s`` (so every block starts cool), then ``warmup`` untimed
   runs (per block when the runner is a fresh process, once when it stays loaded),
4. records the device state *after*, and builds the :class:`BenchmarkReport`.

A device lost part-way (:class:`~edgeseg.errors.DeviceError` from a block) does not
lose the blocks already measured: the report is returned marked incomplete with the
error, and the caller decides how to exit. A Ctrl-C is handled the same way. A failure
before the first block completes is raised as is: there is nothing worth reporting.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from edgeseg.benchmark.report import BenchmarkReport
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.benchmark.targets.base import Measurement, Target
from edgeseg.errors import DeviceError, EdgesegError


@dataclass
class BenchSettings:
    runs: int = 50
    warmup: int = 10
    repeats: int = 1
    cooldown_s: float = 0.0

    def validate(self) -> None:
        if self.runs < 1:
            raise EdgesegError(f"--runs must be at least 1 (got {self.runs})", "e.g. --runs 50")
        if self.warmup < 0:
            raise EdgesegError(f"--warmup cannot be negative (got {self.warmup})", "e.g. --warmup 10")
        if self.repeats < 1 or self.repeats > self.runs:
            raise EdgesegError(f"--repeats must be between 1 and --runs ({self.runs}), got {self.repeats}",
                               "e.g. --runs 50 --repeats 5 (five blocks of ten runs)")
        if self.cooldown_s < 0:
            raise EdgesegError(f"--cooldown cannot be negative (got {self.cooldown_s})", "e.g. --cooldown 30")

    def blocks(self) -> list[int]:
        """Runs per block: ``runs`` split as evenly as possible over ``repeats``."""
        base, rest = divmod(self.runs, self.repeats)
        return [base + (1 if i < rest else 0) for i in range(self.repeats)]


def artifact_facts(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What was benchmarked: file, sha256, size, model, input shape; and its precision plan.

    An artifact folder resolves to its manifest's primary file; the plan comes from the
    manifest's record of that file (``precision``), else ``None`` (never assumed fp32
    for a bare file, which may be a quantized model).
    """
    from edgeseg.export.manifest import Manifest, find_manifest, verify_artifact
    from edgeseg.runtimes.base import resolve_artifact
    from edgeseg.utils.hashing import sha256_file

    p = resolve_artifact(path)
    facts: dict[str, Any] = {"path": str(p), "name": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
    plan = None
    if find_manifest(p) is not None:
        # A file the manifest does not list, or one changed since edgeseg wrote it, would be
        # reported as the recorded model and plan: refuse it instead.
        info = verify_artifact(p, sha256=facts["sha256"]) or {}
        m = Manifest.load(p)
        facts["model"] = m.model
        if m.input.get("shape"):
            facts["input_shape"] = list(m.input["shape"])
        recorded = info.get("precision") or info.get("plan")
        if isinstance(recorded, dict):
            plan = recorded
        elif isinstance(recorded, str):
            plan = {"name": None, "spec": recorded}
    return facts, plan


# --backend of `edgeseg bench`: backend -> (artifact suffix, targets that run it, what runs it).
BENCH_BACKENDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "onnxruntime": (".onnx", ("local",), "ONNX Runtime on the host"),
    "torch": (".safetensors", ("local",), "PyTorch eager on the host (a checkpoint or an export folder)"),
    "tflite": (".tflite", ("local", "adb"), "LiteRT on the host, or benchmark_model on a phone"),
    "tnn": (".tnnproto", ("adb",), "TNNTest on a phone"),
    "tensorrt": (".onnx", ("ssh",), "trtexec on a Jetson"),
}


def check_backend_for_target(backend: str | None, target_kind: str) -> None:
    if backend is None:
        return
    if backend not in BENCH_BACKENDS:
        raise EdgesegError(f"unknown --backend {backend!r}", f"use one of: {', '.join(BENCH_BACKENDS)}")
    where = BENCH_BACKENDS[backend][1]
    if target_kind not in where:
        hint = {"local": "--target local", "adb": "--target adb", "ssh": "--target ssh://user@host"}
        raise EdgesegError(f"--backend {backend} does not run on --target {target_kind}",
                           f"{backend} runs with {' or '.join(hint[w] for w in where)}")


def choose_artifact(folder: Path, target_kind: str, backend: str | None = None) -> Path:
    """The file of an artifact folder that ``edgeseg bench`` times.

    Only frame-graph files that ``target_kind`` can run count. When they belong to more
    than one backend (an ``.onnx`` and a ``.tflite``), the user says which with
    ``--backend``; among ONNX files the primary (FP32) one is taken, as always; several
    ``.tflite`` or ``.tnnproto`` files must be named.
    """
    from edgeseg.export.manifest import Manifest

    if backend == "torch":
        return folder  # the eager runtime builds the model from the folder's manifest
    m = Manifest.load(folder)

    def graph_of(name: str) -> str:
        info = m.artifacts.get(name) or {}
        source = (info.get("tnn") or {}).get("source") if isinstance(info.get("tnn"), dict) else None
        return info.get("graph") or (graph_of(source) if source and source != name else "frame")

    runnable = {b: v for b, v in BENCH_BACKENDS.items() if target_kind in v[1] and b != "torch"}
    if backend is not None:
        runnable = {backend: runnable[backend]} if backend in runnable else {}
    found: dict[str, list[str]] = {}
    for name, info in m.artifacts.items():
        if graph_of(name) != "frame" or not (folder / name).is_file():
            continue
        for b, (suffix, _, _) in runnable.items():
            if name.endswith(suffix) and info.get("kind") not in ("calibration-table", "tensorrt-calibration-cache"):
                found.setdefault(b, []).append(name)
    if not found:
        what = f"a {backend} artifact ({BENCH_BACKENDS[backend][0]})" if backend else \
            f"an artifact that --target {target_kind} runs"
        raise EdgesegError(f"{folder} has no {what}",
                           "convert one with `edgeseg export ... --to tflite|tnn`, or pass the file itself")
    if len(found) > 1:
        listing = "; ".join(f"{b}: {', '.join(files)}" for b, files in found.items())
        raise EdgesegError(f"{folder} holds artifacts for several backends ({listing}); which one?",
                           f"pass --backend {' or --backend '.join(found)}, or the file itself")
    b, files = next(iter(found.items()))
    if len(files) == 1:
        return folder / files[0]
    primary = [f for f in files if (m.artifacts.get(f) or {}).get("primary")]
    if primary:
        return folder / primary[0]
    raise EdgesegError(f"{folder} holds {len(files)} {b} artifacts ({', '.join(files)}); which one?",
                       "pass the file itself, e.g. edgeseg bench " + str(folder / files[0]))


def _with_numerics(runtime: dict[str, Any]) -> dict[str, Any]:
    """Every report says how int8 was computed: the local ONNX Runtime target records
    ``fused`` or ``simulated``; device runners (benchmark_model, TNNTest, trtexec) run their
    own kernels."""
    runtime = dict(runtime)
    runtime.setdefault("numerics", "native")
    return runtime


def run_benchmark(target: Target, settings: BenchSettings, artifact: dict[str, Any] | None = None,
                  plan: dict[str, Any] | None = None,
                  on_block: Callable[[int, Measurement], None] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> BenchmarkReport:
    settings.validate()
    report = BenchmarkReport(target={"kind": target.kind, "address": target.address},
                             artifact=dict(artifact or {}), runtime={}, settings=asdict(settings), plan=plan)
    measurements: list[Measurement] = []
    with target:
        report.commands = list(target.setup_commands)
        if getattr(target, "plan", None):
            report.plan = target.plan  # the plan the target actually built with (e.g. --plan)
        report.runtime = _with_numerics(target.runtime_info())
        report.settings["core"] = report.runtime.get("core", getattr(target, "core", None))
        report.device_before = target.device_state()
        try:
            for i, runs in enumerate(settings.blocks()):
                if settings.cooldown_s:
                    sleep(settings.cooldown_s)
                warmup = settings.warmup if (i == 0 or target.warmup_each_block) else 0
                m = target.measure(runs, warmup)
                measurements.append(m)
                if m.command and m.command not in report.commands:
                    report.commands.append(m.command)
                if on_block:
                    on_block(i, m)
        except DeviceError as e:
            if not measurements:
                raise  # nothing measured: a plain error, no report
            report.mark_incomplete(e.problem)
        except KeyboardInterrupt:
            if not measurements:
                raise
            report.mark_incomplete("interrupted by the user")
        if report.complete:
            report.device_after = target.device_state()
        else:
            # The device may be gone; a failed read must not hide the measured runs.
            try:
                report.device_after = target.device_state()
            except (DeviceError, OSError):
                report.device_after = None
        report.runtime = _with_numerics(target.runtime_info())  # read back after the runs (affinity held?)
    if measurements:
        report.latency = LatencyStats.combine([m.stats for m in measurements])
        report.repeats = [{k: v for k, v in m.stats.to_dict().items() if k != "samples_ms"} for m in measurements]
        extras = [m.extra for m in measurements if m.extra]
        if extras:
            report.extra = extras[0] if len(extras) == 1 else {"per_repeat": extras}
    profile = getattr(target, "component_profile", None)  # e.g. trtexec's per-layer profile, by component
    if profile:
        report.extra = {**(report.extra or {}), "per_component": profile}
    return report
