"""A benchmark binary on a device: push it and the model (cached by hash), pin, run, parse.

:class:`RunnerTarget` works over any transport (adb for phones; the local transport
for a Linux build of ``benchmark_model`` or a test's fake runner). Per measurement it
runs, e.g. on a Snapdragon 778G::

    taskset 80 /data/local/tmp/edgeseg/cache/<hash>/benchmark_model --graph=... \\
        --num_threads=1 --use_xnnpack=true --num_runs=10 --warmup_runs=10 ...

The core defaults to the prime core (highest ``cpuinfo_max_freq``). Files are cached
on the device in ``cache/<sha256 of the file group>/``; a group is complete only once its
``.complete`` marker exists, so an interrupted push is redone, never half-trusted.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any

from edgeseg.benchmark import device_info
from edgeseg.benchmark.device_info import DeviceState
from edgeseg.benchmark.parsers import ParseError
from edgeseg.benchmark.runners import PhoneRunner, phone_runner_for, taskset_mask
from edgeseg.benchmark.targets.base import Measurement, Target, Transport
from edgeseg.errors import DeviceError, EdgesegError


def group_digest(files: list[Path]) -> str:
    """sha256 over the names and contents of a group of files (the cache key)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


class DeviceCache:
    """Files pushed once per content hash into ``WORKDIR/cache/<hash>/``."""

    def __init__(self, transport: Transport, workdir: str, timeout_s: float = 900):
        self.transport, self.workdir, self.timeout_s = transport, workdir.rstrip("/"), timeout_s
        self.pushed: list[str] = []  # file names actually sent (not found in the cache)

    def ensure(self, files: list[Path], executable: bool = False) -> str:
        digest = group_digest(files)
        remote_dir = f"{self.workdir}/cache/{digest[:16]}"
        marker = f"{remote_dir}/.complete"
        t = self.transport
        if t.run(["test", "-f", marker], 30).rc == 0:
            return remote_dir
        for f in files:  # every transport's push creates the folder
            t.push(f, f"{remote_dir}/{f.name}", timeout=self.timeout_s)
            self.pushed.append(f.name)
        script = f"touch {shlex.quote(marker)}"  # the marker goes last: only a complete group has it
        if executable:
            names = " ".join(shlex.quote(f"{remote_dir}/{f.name}") for f in files)
            script = f"chmod 755 {names} && {script}"
        t.run_script(script, 30).check("finishing the cache entry")
        return remote_dir


class RunnerTarget(Target):
    def __init__(self, transport: Transport, model: Path, runner: PhoneRunner, runner_bin: Path,
                 core: int | None = None, timeout_s: float = 900.0, pin: bool = True):
        self.transport = transport
        self.model = Path(model)
        self.runner = runner
        self.runner_bin = Path(runner_bin)
        self.core = core
        self.timeout_s = timeout_s
        self.pin = pin
        self.android = transport.kind == "adb"
        self.cache = DeviceCache(transport, getattr(transport, "workdir", "/tmp/edgeseg"), timeout_s)
        self.remote_bin: str | None = None
        self.remote_model: str | None = None
        self.lib_dir: str | None = None
        self.cores: list[int] = []

    @classmethod
    def for_artifact(cls, transport: Transport, artifact, runner_bin: Path | None, core: int | None = None,
                     timeout_s: float = 900.0) -> "RunnerTarget":
        from edgeseg.runtimes.base import resolve_artifact

        model = resolve_artifact(artifact)
        runner = phone_runner_for(model)
        if runner_bin is None:
            raise EdgesegError(f"benchmarking {model.name} on a device needs the {runner.name} binary",
                               f"pass --runner-bin PATH/{runner.name} (built for the device, e.g. android_arm64)")
        if not Path(runner_bin).is_file():
            raise EdgesegError(f"runner binary {runner_bin} does not exist", "check the --runner-bin path")
        return cls(transport, model, runner, Path(runner_bin), core=core, timeout_s=timeout_s)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.transport.kind

    @property
    def address(self) -> str:
        return self.transport.address

    # ---------------------------------------------------------------- set-up
    def open(self) -> None:
        t = self.transport
        probe = t.run_script(device_info.probe_script(None, all_max_freqs=True), 60).check("reading the CPU layout")
        files, _, _ = device_info.parse_probe_output(probe.stdout)
        freqs = device_info.max_freqs_from_files(files)
        self.cores = sorted(freqs)
        if self.core is None:
            self.core = device_info.pick_prime_core(freqs) if freqs else None
        elif self.cores and self.core not in self.cores:
            raise EdgesegError(f"core {self.core} does not exist on {self.address} "
                               f"(cores: {','.join(map(str, self.cores))})", "pick one of those with --core")
        # Shared libraries built beside the runner (libTNN.so, libtensorflowlite*.so) go with it.
        libs = sorted(p for p in self.runner_bin.parent.glob("*.so") if p.is_file())
        bin_dir = self.cache.ensure([self.runner_bin, *libs], executable=True)
        self.remote_bin = f"{bin_dir}/{self.runner_bin.name}"
        self.lib_dir = bin_dir if libs else None
        model_files = self.runner.model_files(self.model)
        model_dir = self.cache.ensure(model_files)
        self.remote_model = f"{model_dir}/{self.model.name}"

    def runtime_info(self) -> dict[str, Any]:
        from edgeseg.utils.hashing import sha256_file

        return {"backend": self.runner.name, "runner": self.runner_bin.name,
                "runner_sha256": sha256_file(self.runner_bin) if self.runner_bin.is_file() else None,
                "threads_intra_op": 1, "threads_inter_op": 1, "threads_source": "runner flags",
                "core": self.core, "affinity": [self.core] if self.core is not None and self.pin else [],
                "affinity_source": "taskset mask" if self.pin and self.core is not None else "not pinned",
                "pushed_files": list(self.cache.pushed)}

    def close(self) -> None:
        self.transport.close()

    # ---------------------------------------------------------------- state
    def device_state(self) -> DeviceState:
        props = device_info.ANDROID_PROPS if self.android else ()
        commands = {"thermalservice": "dumpsys thermalservice"} if self.android else {}
        res = self.transport.run_script(device_info.probe_script(self.core, props=props, commands=commands), 60)
        files, got_props, outputs = device_info.parse_probe_output(res.stdout)
        return device_info.state_from_sources(self.core, files, got_props, outputs)

    # ---------------------------------------------------------------- measuring
    def command(self, runs: int, warmup: int) -> list[str]:
        argv = self.runner.argv(self.remote_bin, self.remote_model, runs, warmup, self.core, self.timeout_s)
        if self.lib_dir:
            argv = ["env", f"LD_LIBRARY_PATH={self.lib_dir}", *argv]
        if self.pin and self.core is not None:
            argv = ["taskset", taskset_mask(self.core), *argv]
        return argv

    def measure(self, runs: int, warmup: int) -> Measurement:
        t = self.transport
        since = None
        if self.android and self.runner.log_tag:
            since = t.run(["date", "+%m-%d %H:%M:%S.000"], 30).stdout.strip() or None
        res = t.run(self.command(runs, warmup), self.timeout_s)
        output = res.stdout + "\n" + res.stderr
        if res.rc != 0:
            raise DeviceError(f"{self.runner.name} exited with {res.rc}: "
                              f"{' | '.join(output.strip().splitlines()[-3:]) or 'no output'}",
                              f"run it by hand to see why: {res.command}")
        try:
            stats, extra = self.runner.parse(output, runs, warmup)
        except ParseError:
            if since is None:
                raise
            # Some Android builds (TNN's) log to logcat only.
            log = t.run(["logcat", "-d", "-T", since, "-s", self.runner.log_tag], 60)
            stats, extra = self.runner.parse(log.stdout, runs, warmup)
            extra["output_source"] = "logcat"
        return Measurement(stats, command=res.command, extra=extra, output=output)
