"""The adb transport and phone target, driven through the REAL `adb` client and server.

A private adb server (own port, own key in a temporary HOME) connects over TCP to
tests/fake_adb_device.py, which speaks adb's device protocol and runs commands on this
machine. The server is killed at the end (`adb kill-server`).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeseg.benchmark.harness import BenchSettings, run_benchmark
from edgeseg.benchmark.targets.adb import AdbTransport, parse_devices
from edgeseg.benchmark.targets.base import RemoteTimeout
from edgeseg.benchmark.targets.runner import RunnerTarget
from edgeseg.errors import DeviceError
from tests import fake_runners as fr
from tests.fake_adb_device import FakeAdbDevice, parse_android_pubkey

ADB = shutil.which("adb")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    """A private adb server: non-default port, temporary HOME (its own RSA key)."""
    if ADB is None:  # a missing client must fail, not skip: these tests are the adb evidence
        pytest.fail("the adb client is not installed: run scripts/ci-system-deps.sh (apt install adb)")
    home = tmp_path_factory.mktemp("adbhome")
    port = str(_free_port())
    mp = pytest.MonkeyPatch()
    mp.setenv("ANDROID_ADB_SERVER_PORT", port)
    env = {**os.environ, "HOME": str(home)}
    subprocess.run([ADB, "start-server"], env=env, check=True, capture_output=True, timeout=60)
    key = parse_android_pubkey((home / ".android" / "adbkey.pub").read_text())
    try:
        yield {"key": key, "env": env, "port": port}
    finally:
        subprocess.run([ADB, "kill-server"], env=env, capture_output=True, timeout=60)
        mp.undo()


def _adb(*args, timeout=30):
    return subprocess.run([ADB, *args], capture_output=True, text=True, timeout=timeout)


def _wait_state(serial, want, timeout=15.0):
    end = time.monotonic() + timeout
    state = None
    while time.monotonic() < end:
        state = dict(parse_devices(_adb("devices").stdout)).get(serial)
        if state == want:
            return state
        time.sleep(0.1)
    return state


@pytest.fixture
def device(adb_server, tmp_path, monkeypatch):
    """A connected fake phone whose storage is tmp_path/device."""
    monkeypatch.setenv("FAKE_LOGCAT", str(tmp_path / "logcat.txt"))
    root = tmp_path / "device"
    dev = FakeAdbDevice(root, authorized_keys=[adb_server["key"]], tools=fr.PHONE_TOOLS).start()
    assert "connected" in _adb("connect", dev.serial).stdout
    assert _wait_state(dev.serial, "device") == "device"
    try:
        yield dev
    finally:
        dev.stop()
        _adb("disconnect", dev.serial)


def _transport(dev) -> AdbTransport:
    return AdbTransport(dev.serial, workdir=str(dev.root / "edgeseg"))


def test_handshake_verified_our_rsa_signature(device):
    assert device.auth_log[0] == "signature-ok"  # the server's key really signed the token


def test_shell_v2_exit_codes_and_streams(device):
    t = _transport(device)
    assert t.shell_v2
    r = t.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=30)
    assert (r.rc, r.stdout, r.stderr) == (7, "out\n", "err\n")
    assert r.command == "sh -c 'echo out; echo err >&2; exit 7'"


HOSTILE = ["a b.tflite", "it's.tflite", 'q"uote.tflite', "x;rm -rf $HOME;.tflite", "$(touch PWNED).tflite",
           "`touch PWNED2`.tflite", "-rf.tflite", "new\nline.tflite"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names_are_data(device, tmp_path, name):
    t = _transport(device)
    local = tmp_path / "src" / name
    local.parent.mkdir()
    local.write_bytes(b"model bytes " + name.encode())
    remote = f"{t.workdir}/{name}"
    t.run(["mkdir", "-p", t.workdir], 30).check("mkdir")
    t.push(local, remote)
    assert t.run(["cat", remote], 30).stdout == "model bytes " + name
    back = tmp_path / "back.bin"
    t.pull(remote, back)
    assert back.read_bytes() == local.read_bytes()
    for marker in ("PWNED", "PWNED2"):  # a command substitution would have created these
        assert not (device.root / marker).exists() and not (Path.cwd() / marker).exists()
    assert sorted(p.name for p in Path(t.workdir).iterdir()) == [name]  # no .part leftovers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_device_side_timeout_kills_the_process_tree(device, tmp_path):
    t = _transport(device)
    pids = tmp_path / "pids"
    with pytest.raises(RemoteTimeout, match="killed there"):
        t.run(["sh", "-c", f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; wait"], timeout=2)
    time.sleep(0.5)
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), pid


@pytest.mark.slow
def test_host_side_timeout_kills_leftovers_through_the_pid_file(device, tmp_path, monkeypatch):
    """When the host gives up first (hung link), the device-side process is killed by pid."""
    t = _transport(device)
    monkeypatch.setattr(t, "HOST_GRACE_S", -27.0)  # host waits 3 s, the device's timeout is 30 s
    pids = tmp_path / "pids"
    with pytest.raises(RemoteTimeout, match="did not finish"):
        t.run(["sh", "-c", f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; wait"], timeout=30)
    time.sleep(0.5)
    assert pids.read_text().split()
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), pid


def test_legacy_device_without_shell_v2(adb_server, tmp_path):
    dev = FakeAdbDevice(tmp_path / "old", features=("cmd",), authorized_keys=[adb_server["key"]]).start()
    try:
        _adb("connect", dev.serial)
        assert _wait_state(dev.serial, "device") == "device"
        t = _transport(dev)
        assert not t.shell_v2
        r = t.run(["sh", "-c", "echo hi; exit 5"], timeout=30)
        assert r.rc == 5 and r.stdout == "hi\n"  # status recovered from the marker, marker stripped
        assert t.run(["true"], 30).rc == 0
    finally:
        dev.stop()
        _adb("disconnect", dev.serial)


def test_unauthorized_phone_is_one_clear_error(adb_server, tmp_path):
    dev = FakeAdbDevice(tmp_path / "locked", authorized_keys=[]).start()  # user never taps "allow"
    try:
        _adb("connect", dev.serial)
        assert _wait_state(dev.serial, "unauthorized") == "unauthorized"
        with pytest.raises(DeviceError, match="has not authorized this computer") as e:
            AdbTransport(dev.serial)
        assert "Allow USB debugging" in e.value.fix
        assert "signature-rejected" in dev.auth_log and "public-key-offered" in dev.auth_log
    finally:
        dev.stop()
        _adb("disconnect", dev.serial)


def test_unknown_serial(adb_server):
    with pytest.raises(DeviceError, match="is not connected"):
        AdbTransport("127.0.0.1:1")


def _tflite(tmp_path) -> Path:
    p = tmp_path / "host" / "mobile inst's.tflite"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"TFL3" + bytes(64))
    return p


def test_phone_benchmark_end_to_end(device, tmp_path):
    runner = fr.write_runner(tmp_path / "bin", "benchmark_model", fr.BENCHMARK_MODEL)
    model = _tflite(tmp_path)
    t = _transport(device)
    target = RunnerTarget.for_artifact(t, model, runner_bin=runner, timeout_s=60)
    report = run_benchmark(target, BenchSettings(runs=10, warmup=3, repeats=2))
    assert report.complete
    s = report.latency
    assert s.n == 10 and s.warmup == 6 and s.source == "benchmark_model summary"
    assert s.mean_ms == pytest.approx(15.0) and s.p50_ms is None
    core = max(int(c) for c in os.sched_getaffinity(0))  # no cpufreq here: highest index wins
    assert report.settings["core"] == core
    cmd = report.commands[0]
    assert cmd.startswith(f"taskset {1 << core:x} ") and "--num_threads=1" in cmd and "--use_xnnpack=true" in cmd
    assert "--num_runs=5" in cmd and "--warmup_runs=3" in cmd
    assert "'" in cmd  # the model's apostrophe is quoted, not interpreted
    log = fr.calls(device.root, "benchmark_model")
    assert log.count(f"Cpus_allowed_list:\t{core}") == 2  # the runner really ran pinned, twice
    st = report.device_before
    assert st.model == "samsung SM-A536B" and st.soc == "QTI SM7325"
    if not list(Path("/sys/class/thermal").glob("thermal_zone*")):
        assert st.temperatures_c == {"cpu-1-3-usr": 38.5, "skin": 31.0}  # from `dumpsys thermalservice`
    else:
        assert isinstance(st.temperatures_c, dict) and st.temperatures_c  # this host's thermal zones
    assert report.extra["per_repeat"][0]["memory_mb"]["Memory footprint delta from the start of the tool"]["overall"] == 3.25
    assert sorted(report.runtime["pushed_files"]) == ["benchmark_model", model.name]

    # second run: binary and model come from the on-device cache (nothing pushed)
    again = RunnerTarget.for_artifact(_transport(device), model, runner_bin=runner, timeout_s=60)
    r2 = run_benchmark(again, BenchSettings(runs=2, warmup=0))
    assert r2.complete and r2.runtime["pushed_files"] == []


def test_tnn_result_read_from_logcat(device, tmp_path):
    runner = fr.write_runner(tmp_path / "bin", "TNNTest", fr.TNNTEST)
    proto = tmp_path / "host" / "net.tnnproto"
    proto.parent.mkdir(parents=True)
    proto.write_text("proto")
    proto.with_suffix(".tnnmodel").write_bytes(b"weights")
    target = RunnerTarget.for_artifact(_transport(device), proto, runner_bin=runner, core=0, timeout_s=60)
    report = run_benchmark(target, BenchSettings(runs=7, warmup=2))
    assert report.latency.mean_ms == pytest.approx(32.238) and report.latency.n == 7
    assert report.extra["output_source"] == "logcat"
    assert " -dl 0" in report.commands[0] and report.commands[0].startswith("taskset 1 ")


@pytest.mark.slow
def test_device_vanishing_mid_run_keeps_measured_blocks(device, tmp_path, monkeypatch):
    runner = fr.write_runner(tmp_path / "bin", "benchmark_model", fr.BENCHMARK_MODEL)
    model = _tflite(tmp_path)
    monkeypatch.setenv("FAKE_RUNNER_SLEEP", "1")
    seen = []

    def pull_the_plug(command):
        if "benchmark_model" in command and "--graph" in command:
            seen.append(command)
            if len(seen) == 3:
                threading.Timer(0.3, device.vanish).start()

    device.when_command(pull_the_plug)
    target = RunnerTarget.for_artifact(_transport(device), model, runner_bin=runner, timeout_s=60)
    report = run_benchmark(target, BenchSettings(runs=12, warmup=1, repeats=4))
    assert not report.complete
    assert "lost the device" in report.error and device.serial in report.error
    assert report.latency.n == 6 and len(report.repeats) == 2  # two blocks of 3 were measured
    assert report.device_after is None


def test_cli_bench_over_adb_writes_report(device, tmp_path):
    runner = fr.write_runner(tmp_path / "bin", "benchmark_model", fr.BENCHMARK_MODEL)
    model = _tflite(tmp_path)
    out = tmp_path / "phone.json"
    env = {**os.environ, "EDGESEG_ADB_WORKDIR": str(device.root / "edgeseg"), "EDGESEG_PROGRESS": "0"}
    res = subprocess.run([sys.executable, "-m", "edgeseg", "bench", str(model), "--target", f"adb:{device.serial}",
                          "--runner-bin", str(runner), "--runs", "4", "--warmup", "1", "-o", str(out),
                          "-o", str(tmp_path / "phone.md")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    d = json.loads(out.read_text())
    assert d["target"] == {"kind": "adb", "address": device.serial}
    assert d["latency"]["n"] == 4 and d["complete"] is True
    assert d["commands"][0].startswith("taskset ")
    assert "taskset" in (tmp_path / "phone.md").read_text()
