"""The host as a benchmark target: one pinned core, one thread, in process.

:class:`LocalTarget` measures a :class:`~edgeseg.runtimes.base.Runtime` inside this
process. Every thread of the process is pinned to one core with
``os.sched_setaffinity`` (restored afterwards), the runtime is opened with one intra-op
and one inter-op thread and sequential execution, and each run is timed with
``time.perf_counter_ns`` around ``runtime.run()`` on fixed feeds. The threads and the
affinity recorded in the report are read back, not assumed: a runtime that ignored the
request would otherwise turn a "single-core" figure into a multi-core one.

``clock="cpu"`` times the process's CPU time instead (``time.process_time_ns``): on a
machine shared with other jobs, wall time counts every moment the scheduler gave the core
to someone else, CPU time only the work of this run (one thread, so the two agree on an
idle machine). Cache and memory-bandwidth contention still show in both. Use it for
ratios between graphs on a loaded machine; deployment latency is wall time.

:class:`LocalTransport` runs commands as host subprocesses: it lets a phone-style runner
(TFLite's ``benchmark_model`` built for Linux) or a fake runner in tests go through the
very same runner targets as adb and ssh.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from edgeseg.benchmark import device_info
from edgeseg.benchmark.device_info import DeviceState
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.benchmark.targets.base import CommandResult, Measurement, RemoteTimeout, Target, Transport, quote_argv
from edgeseg.errors import EdgesegError

# --clock -> the time function around each run: elapsed time, or this process's CPU time.
CLOCKS = {"wall": "perf_counter_ns", "cpu": "process_time_ns"}


def allowed_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def default_core() -> int:
    """The fastest core this process may use (see :func:`device_info.pick_prime_core`)."""
    cores = allowed_cores()
    return device_info.pick_prime_core(device_info.local_max_freqs(cores))


class ProcessPinning:
    """Pin every thread of this process to ``core``; restore each thread's mask on exit.

    ``os.sched_setaffinity(0, ...)`` changes only the calling thread (Linux semantics),
    so threads that already exist (a BLAS or OpenMP pool started by an earlier import)
    would keep running anywhere. Each task in ``/proc/self/task`` is pinned explicitly;
    threads created later inherit the mask of their creator.
    """

    def __init__(self, core: int):
        self.core = core
        self._saved: dict[int, set[int]] = {}
        self._original: set[int] = set(os.sched_getaffinity(0))

    @staticmethod
    def _tids() -> list[int]:
        try:
            return [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:  # no procfs: the calling thread is all we can reach
            return [0]

    def __enter__(self) -> "ProcessPinning":
        if self.core not in os.sched_getaffinity(0):
            raise EdgesegError(f"core {self.core} is not available to this process "
                               f"(allowed: {','.join(map(str, allowed_cores()))})",
                               "pick one of the allowed cores with --core")
        for tid in self._tids():
            try:
                self._saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {self.core})
            except (ProcessLookupError, PermissionError):
                continue  # the thread ended between listing and pinning
        return self

    def pinned_mask(self) -> list[int]:
        """The calling thread's affinity as the kernel reports it now."""
        return sorted(os.sched_getaffinity(0))

    def unpinned_threads(self) -> int:
        """How many live threads are *not* confined to the core (should be 0)."""
        bad = 0
        for tid in self._tids():
            try:
                if os.sched_getaffinity(tid) != {self.core}:
                    bad += 1
            except (ProcessLookupError, PermissionError):
                continue
        return bad

    def __exit__(self, *exc) -> None:
        # Threads started while pinned inherited the single core: they get the
        # process's original mask; threads that existed before get their own back.
        for tid in self._tids():
            mask = self._saved.get(tid, self._original)
            try:
                os.sched_setaffinity(tid, mask)
            except (ProcessLookupError, PermissionError, OSError):
                continue


def threads_in_effect(runtime) -> dict[str, Any]:
    """Intra-/inter-op threads as the backend reports them (read back, not assumed)."""
    info: dict[str, Any] = {"threads_intra_op": runtime.threads, "threads_inter_op": 1,
                            "threads_source": "requested"}
    if runtime.backend == "onnxruntime" and hasattr(runtime, "session"):
        so = runtime.session.get_session_options()
        info.update(threads_intra_op=so.intra_op_num_threads, threads_inter_op=so.inter_op_num_threads,
                    execution_mode=str(so.execution_mode).rsplit(".", 1)[-1].lower(),
                    threads_source="onnxruntime session options")
        # 0 means "one per core" to ONNX Runtime: that would not be a single-core run.
        if so.intra_op_num_threads == 0:
            info["threads_intra_op"] = "0 (one per core)"
    elif runtime.backend == "torch":
        import torch

        info.update(threads_intra_op=torch.get_num_threads(), threads_inter_op=torch.get_num_interop_threads(),
                    threads_source="torch.get_num_threads")
    return info


def _backend_version(backend: str) -> str | None:
    from importlib import metadata

    dist = {"onnxruntime": "onnxruntime", "torch": "torch", "tflite": "ai-edge-litert", "tensorrt": "tensorrt"}
    try:
        return metadata.version(dist.get(backend, backend))
    except metadata.PackageNotFoundError:
        return None


class LocalTarget(Target):
    """In-process measurement of a runtime on one pinned core of this machine."""

    kind = "local"

    def __init__(self, artifact: str | os.PathLike, core: int | None = None, threads: int = 1,
                 backend: str | None = None, seed: int = 0, numerics: str = "fused", clock: str = "wall"):
        if clock not in CLOCKS:
            raise EdgesegError(f"unknown clock {clock!r}", f"use one of: {', '.join(CLOCKS)}")
        self.artifact = Path(artifact)
        self.clock = clock
        # Latency is what deployment runs: ONNX Runtime's fused int8 kernels of this CPU.
        self.numerics = numerics
        self.core = default_core() if core is None else core
        self.threads = threads
        self.backend = backend
        self.seed = seed
        self.runtime = None
        self.feeds: dict[str, Any] | None = None
        self._pin: ProcessPinning | None = None
        self._runtime_info: dict[str, Any] = {}

    @property
    def address(self) -> str:
        return os.uname().nodename

    @property
    def warmup_each_block(self) -> bool:
        return False  # the runtime stays loaded and warm between blocks

    def open(self) -> None:
        from edgeseg.runtimes.base import load_runtime

        self._pin = ProcessPinning(self.core).__enter__()
        try:
            if (self.backend or _suffix_backend(self.artifact)) == "torch":
                _torch_single_interop()
            # Loaded after pinning so any thread the runtime starts inherits the core.
            self.runtime = load_runtime(self.artifact, backend=self.backend, threads=self.threads,
                                        numerics=self.numerics)
            self.feeds = self.runtime.random_feeds(self.seed)
            info = threads_in_effect(self.runtime)
            info["core"] = self.core
            info["affinity"] = self._pin.pinned_mask()
            info["unpinned_threads"] = self._pin.unpinned_threads()
            info["backend"] = self.runtime.backend
            info["backend_version"] = _backend_version(self.runtime.backend)
            info["numerics"] = self.runtime.numerics
            info["timer"] = f"time.{CLOCKS[self.clock]} around Runtime.run"
            info["inputs"] = {k: list(v.shape) for k, v in self.feeds.items()}
            self._runtime_info = info
        except BaseException:
            self.close()
            raise

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._runtime_info)

    def device_state(self) -> DeviceState:
        return device_info.local_state(self.core)

    def measure(self, runs: int, warmup: int) -> Measurement:
        assert self.runtime is not None and self.feeds is not None, "open() first"
        run, feeds = self.runtime.run, self.feeds
        now = getattr(time, CLOCKS[self.clock])
        for _ in range(warmup):
            run(feeds)
        samples = []
        # The collector would otherwise pause a random run for a full collection.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(runs):
                t0 = now()
                run(feeds)
                samples.append((now() - t0) / 1e6)
        finally:
            if gc_was_enabled:
                gc.enable()
        # Affinity read back after the runs: proves the pin held for the whole block.
        self._runtime_info["affinity"] = self._pin.pinned_mask() if self._pin else []
        return Measurement(LatencyStats.from_samples(samples, warmup=warmup))

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self._pin is not None:
            self._pin.__exit__(None, None, None)
            self._pin = None


def _suffix_backend(path: Path) -> str | None:
    from edgeseg.runtimes.base import SUFFIXES

    return SUFFIXES.get(path.suffix.lower())


def _torch_single_interop() -> None:
    import torch

    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed for this process; threads_in_effect() records the real value


class LocalTransport(Transport):
    """Host subprocesses behind the transport interface (each in its own process group)."""

    kind = "local"

    def __init__(self, workdir: str | os.PathLike):
        self.workdir = str(workdir)
        Path(self.workdir).mkdir(parents=True, exist_ok=True)

    @classmethod
    def default(cls) -> "LocalTransport":
        """Runner binaries and models cached under ``$XDG_CACHE_HOME/edgeseg/runner``."""
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return cls(os.path.join(base, "edgeseg", "runner"))

    @property
    def address(self) -> str:
        return os.uname().nodename

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        shown = quote_argv(argv)
        start = time.monotonic()
        proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, cwd=self.workdir)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Kill the whole group: a runner's children must not outlive the benchmark.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RemoteTimeout(f"{shown} ran past {timeout:.0f}s and was killed",
                                "raise the timeout, or run fewer runs per repeat")
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return CommandResult(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                             shown, time.monotonic() - start)

    def push(self, local, remote: str, timeout: float = 600) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{remote}.part"
        shutil.copyfile(local, tmp)
        shutil.copymode(local, tmp)
        os.replace(tmp, remote)

    def pull(self, remote: str, local, timeout: float = 600) -> None:
        from edgeseg.utils.atomic import atomic_path

        if not Path(remote).is_file():
            raise EdgesegError(f"{remote} does not exist", "check the runner wrote it")
        with atomic_path(local) as tmp:
            shutil.copyfile(remote, tmp)
