"""A small fake Android device that the *real* ``adb`` client talks to over TCP.

It speaks adb's device-side transport protocol on a loopback port, so
``adb connect 127.0.0.1:PORT`` and then ``adb -s 127.0.0.1:PORT shell|push|pull`` work
against it exactly as against a phone reached over Wi-Fi:

* the connection handshake: CNXN, and AUTH with a real RSA signature check against
  the adb server's public key (PKCS#1 v1.5 over a 20-byte token, as adbd does), or
  ``RSAPUBLICKEY`` accepted only when the test says the user tapped "allow";
* streams: OPEN / OKAY / WRTE / CLSE with adb's one-write-in-flight flow control;
* ``shell,v2,...:CMD``: the shell protocol v2 (stdout, stderr and exit-code packets),
  and legacy ``shell:CMD`` (raw output, no exit code) when ``shell_v2`` is not offered;
* ``sync:``: STAT, SEND (v1 ``path,mode``), RECV, LIST and QUIT for push and pull.

Commands run with ``sh -c`` in the host's filesystem, with a ``bin`` folder of fake
device tools (``getprop``, ``dumpsys``, ``logcat``...) first on PATH. File transfers are
refused outside the device's root folder, so a test can never write elsewhere.
``vanish()`` drops the connection and stops listening: a phone unplugged mid-run.
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import struct
import subprocess
import threading
from pathlib import Path

A_SYNC, A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (
    0x434E5953, 0x4E584E43, 0x48545541, 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257)
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
SYNC_DATA_MAX = 64 * 1024
# DER prefix of a SHA-1 DigestInfo: adb signs the raw 20-byte token as if it were a SHA-1 digest.
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")

SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN = 0, 1, 2, 3, 4


def parse_android_pubkey(text: str) -> tuple[int, int]:
    """``adbkey.pub`` (base64 of Android's RSAPublicKey struct) -> (modulus, exponent)."""
    blob = base64.b64decode(text.split()[0])
    words = struct.unpack_from("<I", blob, 0)[0]
    modulus = int.from_bytes(blob[8:8 + 4 * words], "little")
    exponent = struct.unpack_from("<I", blob, 8 + 8 * words)[0]
    return modulus, exponent


def verify_signature(token: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    digest = SHA1_DIGEST_INFO + token
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    return em == expected


class _Stream:
    """One adb stream. Writes go through a sender thread so the connection's reader
    thread never blocks waiting for the host's OKAY (which only it can read)."""

    def __init__(self, device: "FakeAdbDevice", conn: "_Connection", local_id: int, remote_id: int):
        self.device, self.conn, self.local_id, self.remote_id = device, conn, local_id, remote_id
        self.can_write = threading.Event()  # set when the host acknowledged our last WRTE
        self.can_write.set()
        self.closed = threading.Event()
        self.outbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._sender, daemon=True).start()

    def write(self, data: bytes) -> bool:
        if self.closed.is_set() or self.conn.dead.is_set():
            return False
        self.outbox.put(bytes(data))
        return True

    def close(self) -> None:
        """Close after everything queued so far has been sent."""
        self.outbox.put(None)

    def _sender(self) -> None:
        while True:
            item = self.outbox.get()
            if item is None:
                if not self.closed.is_set():
                    self.closed.set()
                    self.conn.send(A_CLSE, self.local_id, self.remote_id)
                self.conn.streams.pop(self.local_id, None)
                return
            step = min(self.conn.host_maxdata, MAX_PAYLOAD)
            for i in range(0, len(item), step):
                # adb flow control: one WRTE in flight until the host's OKAY.
                while not self.can_write.wait(0.1):
                    if self.closed.is_set() or self.conn.dead.is_set():
                        break
                if self.closed.is_set() or self.conn.dead.is_set():
                    break
                self.can_write.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, item[i:i + step])

    def start(self) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_close(self) -> None:
        self.closed.set()


class _ShellStream(_Stream):
    def __init__(self, device, conn, local_id, remote_id, command: str, v2: bool):
        super().__init__(device, conn, local_id, remote_id)
        self.v2 = v2
        self.buf = b""
        self.command = command

    def start(self) -> None:
        """Start the process (only after the host got our OKAY, or early output would be lost)."""
        device, command, v2 = self.device, self.command, self.v2
        env = {**os.environ, "PATH": f"{device.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        device.commands.append(command)
        self.proc = subprocess.Popen(["sh", "-c", command], cwd=device.root, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
                                     start_new_session=True)
        device.processes.append(self.proc)
        self.lock = threading.Lock()
        pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, SHELL_STDOUT), daemon=True)]
        if v2:
            pumps.append(threading.Thread(target=self._pump, args=(self.proc.stderr, SHELL_STDERR), daemon=True))
        for t in pumps:
            t.start()
        threading.Thread(target=self._finish, args=(pumps,), daemon=True).start()
        device.on_command(command)

    def _packet(self, kind: int, data: bytes) -> bool:
        if not self.v2:
            return self.write(data)
        with self.lock:
            return self.write(bytes([kind]) + struct.pack("<I", len(data)) + data)

    def _pump(self, pipe, kind: int) -> None:
        while True:
            chunk = os.read(pipe.fileno(), 16384)
            if not chunk:
                return
            if not self._packet(kind, chunk):
                return  # the host went away; the process is left running, like a real leftover

    def _finish(self, pumps) -> None:
        rc = self.proc.wait()
        for t in pumps:
            t.join()
        if self.v2 and not self.closed.is_set():
            self._packet(SHELL_EXIT, bytes([rc & 0xFF]))
        self.close()

    def on_data(self, data: bytes) -> None:
        if not self.v2:
            self._stdin(data)
            return
        self.buf += data
        while len(self.buf) >= 5:
            kind, size = self.buf[0], struct.unpack_from("<I", self.buf, 1)[0]
            if len(self.buf) < 5 + size:
                return
            payload, self.buf = self.buf[5:5 + size], self.buf[5 + size:]
            if kind == SHELL_STDIN:
                self._stdin(payload)
            elif kind == SHELL_CLOSE_STDIN:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass

    def _stdin(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass


class _SyncStream(_Stream):
    def __init__(self, device, conn, local_id, remote_id):
        super().__init__(device, conn, local_id, remote_id)
        self.buf = b""
        self.sending: tuple[Path, int, bytearray] | None = None  # (path, mode, data) during SEND

    def _need(self, n: int) -> bytes | None:
        if len(self.buf) < n:
            return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _path(self, raw: bytes) -> Path | None:
        p = Path(os.path.abspath(raw.decode("utf-8", "surrogateescape")))
        return p if self.device.allowed(p) else None

    def _fail(self, message: str) -> None:
        msg = message.encode()
        self.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)

    def on_data(self, data: bytes) -> None:
        self.buf += data
        while True:
            if len(self.buf) < 8:
                return
            ident, length = self.buf[:4], struct.unpack_from("<I", self.buf, 4)[0]
            if self.sending is not None:
                if ident == b"DATA":
                    if len(self.buf) < 8 + length:
                        return
                    self.sending[2].extend(self.buf[8:8 + length])
                    self.buf = self.buf[8 + length:]
                    continue
                if ident == b"DONE":
                    self.buf = self.buf[8:]
                    path, mode, content = self.sending
                    self.sending = None
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(bytes(content))
                    os.chmod(path, mode & 0o7777)
                    self.device.pushed.append(str(path))
                    self.write(b"OKAY" + struct.pack("<I", 0))
                    continue
                self._fail(f"unexpected {ident!r} during SEND")
                self.close()
                return
            if len(self.buf) < 8 + length:
                return
            arg, self.buf = self.buf[8:8 + length], self.buf[8 + length:]
            if ident == b"QUIT":
                self.close()
                return
            if ident == b"STAT":
                p = self._path(arg)
                try:
                    st = os.stat(p) if p else None
                except OSError:
                    st = None
                if st is None:
                    self.write(b"STAT" + struct.pack("<III", 0, 0, 0))
                else:
                    self.write(b"STAT" + struct.pack("<III", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                                                     int(st.st_mtime)))
            elif ident == b"SEND":
                path_text, _, mode_text = arg.rpartition(b",")
                p = self._path(path_text)
                if p is None:
                    self._fail(f"permission denied: {path_text.decode(errors='replace')}")
                    self.close()
                    return
                self.sending = (p, int(mode_text or b"420"), bytearray())
            elif ident == b"RECV":
                p = self._path(arg)
                if p is None or not p.is_file():
                    self._fail(f"remote object '{arg.decode(errors='replace')}' does not exist")
                    continue
                content = p.read_bytes()
                out = bytearray()
                for i in range(0, len(content), SYNC_DATA_MAX):
                    chunk = content[i:i + SYNC_DATA_MAX]
                    out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                out += b"DONE" + struct.pack("<I", 0)
                self.write(bytes(out))
            elif ident == b"LIST":
                p = self._path(arg)
                out = bytearray()
                if p is not None and p.is_dir():
                    for entry in sorted(p.iterdir()):
                        st = entry.stat()
                        name = entry.name.encode()
                        out += b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size, int(st.st_mtime), len(name))
                        out += name
                out += b"DONE" + b"\x00" * 16  # same layout as a dent: id, mode, size, mtime, namelen
                self.write(bytes(out))
            else:
                self._fail(f"unknown sync request {ident!r}")
                self.close()
                return


class _Connection:
    def __init__(self, device: "FakeAdbDevice", sock: socket.socket):
        self.device, self.sock = device, sock
        self.streams: dict[int, _Stream] = {}
        self.send_lock = threading.Lock()
        self.dead = threading.Event()
        self.host_maxdata = 4096
        self.token = os.urandom(20)
        self.online = False

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bool:
        header = struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)
        try:
            with self.send_lock:
                self.sock.sendall(header + data)
            return True
        except OSError:
            self.dead.set()
            return False

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def banner(self) -> bytes:
        d = self.device
        props = f"ro.product.name={d.product};ro.product.model={d.model};ro.product.device={d.product};"
        return f"device::{props}features={','.join(d.features)}".encode()

    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                header = self._recv_exact(24)
                if header is None:
                    return
                cmd, arg0, arg1, length, _check, magic = struct.unpack("<6I", header)
                if magic != cmd ^ 0xFFFFFFFF:
                    return  # corrupt header: the protocol says close the connection
                data = self._recv_exact(length) if length else b""
                if data is None:
                    return
                self.handle(cmd, arg0, arg1, data)
        finally:
            self.dead.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def _go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.banner())

    def handle(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        d = self.device
        if cmd == A_CNXN:
            self.host_maxdata = arg1
            if d.require_auth:
                self.token = os.urandom(20)
                self.send(A_AUTH, AUTH_TOKEN, 0, self.token)
            else:
                self._go_online()
        elif cmd == A_AUTH:
            if arg0 == AUTH_SIGNATURE:
                if any(verify_signature(self.token, data, k) for k in d.authorized_keys):
                    d.auth_log.append("signature-ok")
                    self._go_online()
                else:
                    d.auth_log.append("signature-rejected")
                    self.token = os.urandom(20)
                    self.send(A_AUTH, AUTH_TOKEN, 0, self.token)
            elif arg0 == AUTH_RSAPUBLICKEY:
                d.auth_log.append("public-key-offered")
                if d.accept_new_keys:
                    d.authorized_keys.append(parse_android_pubkey(data.rstrip(b"\x00").decode()))
                    self._go_online()
                # else: the user never taps "allow"; the host shows the device as unauthorized
        elif not self.online:
            return  # nothing but CNXN/AUTH is valid before the handshake completes
        elif cmd == A_OPEN:
            service = data.rstrip(b"\x00").decode("utf-8", "surrogateescape")
            local_id = d.next_id()
            stream = self._open(service, local_id, arg0)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
                return
            self.streams[local_id] = stream
            self.send(A_OKAY, local_id, arg0)
            stream.start()
        elif cmd == A_OKAY:
            s = self.streams.get(arg1)
            if s:
                s.can_write.set()
        elif cmd == A_WRTE:
            s = self.streams.get(arg1)
            if s:
                self.send(A_OKAY, arg1, arg0)
                s.on_data(data)
        elif cmd == A_CLSE:
            s = self.streams.pop(arg1, None)
            if s:
                s.on_close()

    def _open(self, service: str, local_id: int, remote_id: int) -> _Stream | None:
        d = self.device
        if service.startswith("shell"):
            head, _, command = service.partition(":")
            opts = head.split(",")[1:]
            v2 = "v2" in opts and "shell_v2" in d.features
            return _ShellStream(d, self, local_id, remote_id, command, v2)
        if service == "sync:":
            return _SyncStream(d, self, local_id, remote_id)
        d.refused.append(service)
        return None


class FakeAdbDevice:
    """One fake device listening on 127.0.0.1; use as a context manager."""

    def __init__(self, root: str | os.PathLike, *, model: str = "EdgesegPhone", product: str = "edgeseg_fake",
                 features: tuple[str, ...] = ("shell_v2", "cmd"), require_auth: bool = True,
                 authorized_keys: list[tuple[int, int]] | None = None, accept_new_keys: bool = False,
                 tools: dict[str, str] | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.bin_dir = self.root / ".fake-device-bin"
        self.bin_dir.mkdir(exist_ok=True)
        for name, script in (tools or {}).items():
            path = self.bin_dir / name
            path.write_text(script)
            path.chmod(0o755)
        self.model, self.product, self.features = model, product, tuple(features)
        self.require_auth, self.accept_new_keys = require_auth, accept_new_keys
        self.authorized_keys = list(authorized_keys or [])
        self.commands: list[str] = []
        self.pushed: list[str] = []
        self.refused: list[str] = []
        self.auth_log: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self._command_hooks: list = []
        self._ids = 0
        self._id_lock = threading.Lock()
        self._connections: list[_Connection] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def allowed(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def next_id(self) -> int:
        with self._id_lock:
            self._ids += 1
            return self._ids

    def on_command(self, command: str) -> None:
        for hook in list(self._command_hooks):
            hook(command)

    def when_command(self, hook) -> None:
        """Call ``hook(command)`` for every shell command the host starts."""
        self._command_hooks.append(hook)

    def start(self) -> "FakeAdbDevice":
        self.listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self._stop.is_set():
                sock.close()
                return
            conn = _Connection(self, sock)
            self._connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def vanish(self) -> None:
        """Drop every connection and stop listening: the phone is gone."""
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        for conn in self._connections:
            conn.dead.set()
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
                conn.sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.vanish()
        for p in self.processes:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
            p.wait()

    def __enter__(self) -> "FakeAdbDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

