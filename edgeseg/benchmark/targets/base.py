"""Transports and targets: how a benchmark reaches a device, and what runs there.

A :class:`Transport` moves commands and files: ``run(argv, timeout) -> CommandResult``
(rc, stdout, stderr), ``push`` and ``pull``. Arguments are always a list and every one
is quoted with :func:`shlex.quote` before it reaches a shell, so a model called
``a b;rm -rf ~.tflite`` is just a file name.

A :class:`Target` knows how to run *one* benchmark measurement on its device
(``measure(runs, warmup) -> Measurement``) and how to read the device's state. The
harness (``benchmark/harness.py``) owns repeats, cool-downs, statistics and the report,
so targets stay small: a transport plus a runner's output parser.

Remote commands are wrapped so that a host-side failure never leaves a runner busy on
the device: they run under ``timeout`` *on the device*, their pid is written to a pid
file, and when the host gives up (timeout, Ctrl-C, lost link) it kills what is left.
"""

from __future__ import annotations

import abc
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgeseg.benchmark.device_info import DeviceState
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.errors import DeviceError


class DeviceLost(DeviceError):
    """The device stopped answering (unplugged, rebooted, network gone)."""


class RemoteTimeout(DeviceError):
    """A command ran past its time limit on the device (and was killed there)."""


@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    command: str  # exactly what ran, as the user would type it on the device
    seconds: float = 0.0

    def check(self, what: str) -> "CommandResult":
        if self.rc != 0:
            detail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-3:]
            raise DeviceError(f"{what} failed on the device (exit {self.rc}): {' | '.join(detail) or 'no output'}",
                              f"the command was: {self.command}")
        return self


@dataclass
class Measurement:
    """One measured block of runs (one runner invocation, or one in-process loop)."""

    stats: LatencyStats
    command: str | None = None  # exact command run on the device (None for in-process)
    extra: dict[str, Any] = field(default_factory=dict)  # runner figures beyond latency
    output: str = ""  # raw runner output, kept for the log


def quote_argv(argv: Sequence[str]) -> str:
    if isinstance(argv, (str, bytes)):
        raise TypeError("pass the command as a list of arguments, not a string")
    return " ".join(shlex.quote(str(a)) for a in argv)


class Transport(abc.ABC):
    """Commands and files to and from one device."""

    kind: str = "?"

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float) -> CommandResult: ...

    @abc.abstractmethod
    def push(self, local: str | Path, remote: str, timeout: float = 600) -> None: ...

    @abc.abstractmethod
    def pull(self, remote: str, local: str | Path, timeout: float = 600) -> None: ...

    def run_script(self, script: str, timeout: float) -> CommandResult:
        """Run a shell script we wrote (never user text) with ``sh -c``."""
        return self.run(["sh", "-c", script], timeout)

    def close(self) -> None:
        pass


class RemoteTransport(Transport):
    """Shared logic of adb and ssh: device-side timeout, pid files, leftover cleanup.

    Subclasses provide :meth:`_client` (the host-side argv that runs one remote command
    line) and :meth:`_reachable` (is the device still there?).
    """

    # The host waits this much longer than the device-side timeout, so the device's own
    # ``timeout`` normally fires first and reports 124.
    HOST_GRACE_S = 10.0
    KILL_AFTER_S = 5
    # Exit codes that may mean "the link failed" rather than "the command failed" (then
    # the device is probed). None: any non-zero code (adb reports link errors as 1).
    LINK_ERROR_CODES: tuple[int, ...] | None = None

    def __init__(self, workdir: str):
        self.workdir = workdir.rstrip("/") or "/"

    # ---------------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _client(self, remote_cmdline: str) -> list[str]: ...

    @abc.abstractmethod
    def _reachable(self) -> bool: ...

    def _reconnect_hint(self) -> str:
        return "reconnect the device and run the benchmark again"

    def _postprocess(self, result: CommandResult) -> CommandResult:
        """Hook: recover the exit status when the client cannot pass it on (old adb devices)."""
        return result

    # ---------------------------------------------------------------- command wrapping
    def wrap(self, argv: Sequence[str], timeout: float, pidfile: str) -> str:
        """The remote command line: record our pid, then run under the device's ``timeout``.

        The inner ``sh`` writes its pid and ``exec``s ``timeout``, so the pid file names the
        process (and, with GNU timeout, the process group) that cleanup must kill. The
        whole line is one quoted ``sh -c`` argument, so the login shell on the device
        (bash, zsh, fish, Android's mksh) never interprets any of it.
        """
        limit = max(1, int(round(timeout)))
        q = shlex.quote(pidfile)
        # The pid file lives in the work folder; creating it first costs nothing, and a
        # pid file that cannot be written must not stop (or pollute stderr of) the command.
        inner = (f"{{ mkdir -p {shlex.quote(self.workdir)} && echo $$ > {q}; }} 2>/dev/null; "
                 f"exec timeout -k {self.KILL_AFTER_S} {limit} {quote_argv(argv)}")
        outer = f"sh -c {shlex.quote(inner)}; rc=$?; rm -f {q}; exit $rc"
        return f"sh -c {shlex.quote(outer)}"

    def kill_script(self, pidfile: str) -> str:
        q = shlex.quote(pidfile)
        script = (f"p=$(cat {q} 2>/dev/null); if [ -n \"$p\" ]; then "
                  f"kill -9 -$p 2>/dev/null; pkill -9 -P $p 2>/dev/null; kill -9 $p 2>/dev/null; fi; rm -f {q}")
        return f"sh -c {shlex.quote(script)}"

    def pidfile(self) -> str:
        return f"{self.workdir}/.edgeseg-{uuid.uuid4().hex[:12]}.pid"

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        pidfile = self.pidfile()
        cmdline = self.wrap(argv, timeout, pidfile)
        shown = quote_argv(argv)
        start = time.monotonic()
        try:
            proc = subprocess.run(self._client(cmdline), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout + self.HOST_GRACE_S)
        except subprocess.TimeoutExpired:
            # The link hung (or the device ignored its own timeout): kill what is left there.
            self._cleanup(pidfile)
            if not self._reachable():
                raise DeviceLost(f"lost the device {self.address} while running: {shown}", self._reconnect_hint())
            raise RemoteTimeout(f"{shown} did not finish within {timeout:.0f}s; the remote process was killed",
                                "raise the timeout, or run fewer runs per repeat")
        except KeyboardInterrupt:
            self._cleanup(pidfile)
            raise
        result = self._postprocess(CommandResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                                 proc.stderr.decode("utf-8", "replace"), shown,
                                                 time.monotonic() - start))
        if result.rc in (124, 137):
            # 124: the device's timeout fired (137: it had to SIGKILL after -k). Kill any
            # children the runner left behind (timeout signals only its own child).
            self._cleanup(pidfile)
            raise RemoteTimeout(f"{shown} ran past {timeout:.0f}s on {self.address} and was killed there",
                                "raise the timeout, or run fewer runs per repeat")
        link_error = result.rc != 0 and (self.LINK_ERROR_CODES is None or result.rc in self.LINK_ERROR_CODES)
        if link_error and not self._reachable():
            raise DeviceLost(f"lost the device {self.address} while running: {shown}", self._reconnect_hint())
        return result

    def _cleanup(self, pidfile: str) -> None:
        try:
            subprocess.run(self._client(self.kill_script(pidfile)), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=15)
        except (subprocess.TimeoutExpired, OSError):
            pass  # the device is gone; nothing left to kill from here


class Target(abc.ABC):
    """One benchmark on one device: prepare, read state, measure blocks of runs, clean up."""

    kind: str = "?"
    # Commands run once during open() (e.g. the trtexec engine build), shown in the report.
    setup_commands: Sequence[str] = ()

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    def open(self) -> None:
        """Prepare (push files, pin, load). Called once before any measurement."""

    @abc.abstractmethod
    def device_state(self) -> DeviceState: ...

    @abc.abstractmethod
    def measure(self, runs: int, warmup: int) -> Measurement:
        """Time ``runs`` runs after ``warmup`` untimed ones."""

    @abc.abstractmethod
    def runtime_info(self) -> dict[str, Any]:
        """Backend, threads and affinity *actually in effect*, runner binary and its hash."""

    @property
    def warmup_each_block(self) -> bool:
        """Whether every block needs its own warm-up (a fresh runner process reloads the model)."""
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> "Target":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
