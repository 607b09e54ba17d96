"""A private OpenSSH server on 127.0.0.1 for transport tests (real sshd, real ssh client).

Temporary host key and client key, an ``ssh_config`` with a ``Host`` alias (so the
client resolves the name the way a user's ~/.ssh/config would), strict host-key
checking against a known_hosts file written here, and ``SetEnv PATH=`` putting a folder
of fake device tools (tegrastats, nvpmodel...) first on the sessions' PATH.
``vanish()`` kills the server and every session under it: the board lost power.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 is the parent pid; the command name (field 2) may contain spaces, so split after ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in _children(p):
            out.append(c)
            todo.append(c)
    return out


class SshServer:
    def __init__(self, folder: Path, tools: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 alias: str = "fakejetson"):
        if SSHD is None:
            raise RuntimeError("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.alias = alias
        self.port = _free_port()
        self.user = getpass.getuser()
        self.bin = self.folder / "device-bin"
        self.bin.mkdir(exist_ok=True)
        for name, script in (tools or {}).items():
            (self.bin / name).write_text(script)
            (self.bin / name).chmod(0o755)
        for key in ("hostkey", "clientkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / key)], check=True)
        auth = self.folder / "authorized_keys"
        shutil.copy(self.folder / "clientkey.pub", auth)
        auth.chmod(0o600)
        setenv = " ".join(f"{k}={v}" for k, v in {"PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
                                                   **(env or {})}.items())
        (self.folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.folder / 'hostkey'}\n"
            f"AuthorizedKeysFile {auth}\nPidFile {self.folder / 'sshd.pid'}\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"PermitRootLogin prohibit-password\nSetEnv {setenv}\nLogLevel ERROR\n")
        host_pub = (self.folder / "hostkey.pub").read_text().strip()
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.config = self.folder / "ssh_config"
        self.config.write_text(
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {self.folder / 'clientkey'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n")
        self.proc: subprocess.Popen | None = None

    @property
    def options(self) -> list[str]:
        return ["-F", str(self.config)]

    def start(self) -> "SshServer":
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.proc.stdout.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def vanish(self) -> None:
        """Kill sshd and everything under it (sessions and the commands they run)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self) -> None:
        self.vanish()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
