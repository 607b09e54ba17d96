"""Android phones through the real ``adb`` binary.

Every call is ``adb -s SERIAL ...`` (the serial is resolved up front, so a second phone
plugged in mid-run cannot receive half the commands). Shell commands use adb's shell
protocol v2, which carries the remote exit code; on devices without ``shell_v2`` the
exit code is echoed behind a marker and stripped from the output. Files are pushed to a
temporary name and renamed on the device, so an interrupted push never looks complete.

The adb server is whatever ``adb`` uses by default; ``ANDROID_ADB_SERVER_PORT`` (or
``ADB_SERVER_SOCKET``) selects another one, exactly as for adb itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from edgeseg.benchmark.targets.base import CommandResult, DeviceLost, RemoteTransport
from edgeseg.errors import DeviceError, EdgesegError

DEFAULT_WORKDIR = "/data/local/tmp/edgeseg"
_RC_MARK = "@@edgeseg-rc="


def find_adb(adb: str | None = None) -> str:
    exe = shutil.which(adb or os.environ.get("EDGESEG_ADB", "adb"))
    if exe is None:
        raise EdgesegError("the `adb` binary was not found",
                           "install Android platform-tools (Debian/Ubuntu: `apt install adb`) "
                           "or point EDGESEG_ADB at it")
    return exe


def parse_devices(text: str) -> list[tuple[str, str]]:
    """``adb devices`` output -> [(serial, state)]."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
    return out


class AdbTransport(RemoteTransport):
    kind = "adb"

    def __init__(self, serial: str | None = None, adb: str | None = None, workdir: str | None = None,
                 connect_timeout: float = 30.0):
        super().__init__(workdir or os.environ.get("EDGESEG_ADB_WORKDIR", DEFAULT_WORKDIR))
        self.adb = find_adb(adb)
        self.connect_timeout = connect_timeout
        self.serial = self._resolve_serial(serial)
        self.features = self._features()
        self.shell_v2 = "shell_v2" in self.features

    # ---------------------------------------------------------------- host-side adb
    def _adb(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.adb, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise DeviceError(f"`adb {' '.join(args)}` did not answer within {timeout:.0f}s",
                              "check `adb devices`; restart the server with `adb kill-server`") from e

    def _resolve_serial(self, serial: str | None) -> str:
        res = self._adb("devices", timeout=self.connect_timeout)
        if res.returncode != 0:
            raise DeviceError(f"`adb devices` failed: {res.stderr.strip() or res.stdout.strip()}",
                              "restart the adb server with `adb kill-server` and try again")
        devices = parse_devices(res.stdout)
        if serial is None:
            ready = [s for s, st in devices if st == "device"]
            if len(ready) == 1:
                return ready[0]
            if not devices:
                raise DeviceError("no Android device is connected",
                                  "plug the phone in with USB debugging on (or `adb connect HOST:PORT`), "
                                  "then check `adb devices`")
            listing = ", ".join(f"{s} ({st})" for s, st in devices)
            raise DeviceError(f"{len(ready)} ready devices ({listing}); cannot pick one",
                              "name it with --target adb:SERIAL")
        state = dict(devices).get(serial)
        if state is None:
            raise DeviceError(f"device {serial} is not connected (adb sees: "
                              f"{', '.join(s for s, _ in devices) or 'nothing'})",
                              "check the serial in `adb devices`; for a phone over Wi-Fi run `adb connect HOST:PORT`")
        if state == "unauthorized":
            raise DeviceError(f"device {serial} has not authorized this computer",
                              "unlock the phone and accept the 'Allow USB debugging' prompt, then run again")
        if state != "device":
            raise DeviceError(f"device {serial} is {state}", "reconnect it and check `adb devices` shows 'device'")
        return serial

    def _features(self) -> set[str]:
        res = self._adb("-s", self.serial, "features")
        if res.returncode != 0:
            return set()  # very old adb: assume the minimum (no shell_v2)
        return {f.strip() for f in re.split(r"[\s,]+", res.stdout) if f.strip()}

    # ---------------------------------------------------------------- RemoteTransport hooks
    @property
    def address(self) -> str:
        return self.serial

    def _client(self, remote_cmdline: str) -> list[str]:
        if not self.shell_v2:
            # No exit codes without shell v2: echo it behind a marker instead.
            remote_cmdline = f"{remote_cmdline}; echo {_RC_MARK}$?"
        return [self.adb, "-s", self.serial, "shell", remote_cmdline]

    def _reachable(self) -> bool:
        try:
            res = subprocess.run([self.adb, "-s", self.serial, "get-state"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0 and res.stdout.strip() == "device"

    def _reconnect_hint(self) -> str:
        return (f"reconnect {self.serial} (check the cable, or `adb connect` for Wi-Fi) "
                "and run the benchmark again")

    def _postprocess(self, result: CommandResult) -> CommandResult:
        if self.shell_v2:
            return result
        m = re.search(rf"{re.escape(_RC_MARK)}(\d+)\s*$", result.stdout)
        if m is None:
            # The marker is the last thing printed: without it the shell ended early
            # (link lost, or killed). 255 is what ssh uses for the same situation.
            result.rc = 255
        else:
            result.rc = int(m.group(1))
            result.stdout = result.stdout[:m.start()]
        return result

    # ---------------------------------------------------------------- files
    def push(self, local: str | Path, remote: str, timeout: float = 600) -> None:
        local = Path(local)
        if not local.is_file():
            raise EdgesegError(f"{local} does not exist", "check the path")
        tmp = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        res = self._adb("-s", self.serial, "push", str(local), tmp, timeout=timeout)
        if res.returncode != 0:
            if not self._reachable():
                raise DeviceLost(f"lost the device {self.serial} while pushing {local.name}", self._reconnect_hint())
            raise DeviceError(f"adb push of {local.name} failed: {(res.stderr or res.stdout).strip()}",
                              f"check there is space in {self.workdir} (`adb shell df {self.workdir}`)")
        self.run(["mv", "-f", tmp, remote], timeout=60).check(f"renaming {local.name} into place")

    def pull(self, remote: str, local: str | Path, timeout: float = 600) -> None:
        from edgeseg.utils.atomic import atomic_path

        with atomic_path(local) as tmp:
            res = self._adb("-s", self.serial, "pull", remote, str(tmp), timeout=timeout)
            if res.returncode != 0:
                if not self._reachable():
                    raise DeviceLost(f"lost the device {self.serial} while pulling {remote}", self._reconnect_hint())
                raise DeviceError(f"adb pull of {remote} failed: {(res.stderr or res.stdout).strip()}",
                                  "check the file exists on the device")
