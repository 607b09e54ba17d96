"""Benchmark targets: ``local`` | ``adb[:SERIAL]`` | ``ssh://[user@]host[:port]``.

Each target is a transport plus a runner's output parser (see ``base.py``); this module
only reads the ``--target`` string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeseg.errors import EdgesegError

_SSH = re.compile(r"ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[^\]]+\]|[^@/:\s]+)(?::(?P<port>\d+))?/?")
# adb serials: USB serials, emulator-5554, host:port for adb over TCP.
_SERIAL = re.compile(r"[A-Za-z0-9._:\-\[\]]+")


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # local | adb | ssh
    serial: str | None = None  # adb
    user: str | None = None  # ssh
    host: str | None = None
    port: int | None = None

    @property
    def address(self) -> str:
        if self.kind == "adb":
            return self.serial or "(the only device)"
        if self.kind == "ssh":
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"{user}{self.host}{port}"
        return "localhost"


def parse_target(text: str) -> TargetSpec:
    s = (text or "local").strip()
    if s == "local":
        return TargetSpec("local")
    if s == "adb":
        return TargetSpec("adb")
    if s.startswith("adb:"):
        serial = s[4:]
        if not serial or not _SERIAL.fullmatch(serial):
            raise EdgesegError(f"cannot read adb serial {serial!r}",
                               "use --target adb:SERIAL with a serial from `adb devices`, e.g. adb:R5CR1234ABC")
        return TargetSpec("adb", serial=serial)
    if s.startswith("ssh://"):
        m = _SSH.fullmatch(s)
        if not m:
            raise EdgesegError(f"cannot read ssh target {s!r}",
                               "use --target ssh://user@host or ssh://user@host:port (a ~/.ssh/config alias works too)")
        port = int(m.group("port")) if m.group("port") else None
        if port is not None and not 0 < port < 65536:
            raise EdgesegError(f"ssh port {port} is out of range", "use a port between 1 and 65535")
        return TargetSpec("ssh", user=m.group("user"), host=m.group("host").strip("[]"), port=port)
    raise EdgesegError(f"unknown target {s!r}",
                       "use --target local, --target adb[:SERIAL] or --target ssh://user@host")
