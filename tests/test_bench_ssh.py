"""The ssh transport and Jetson target through the REAL ssh client against a private sshd."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeseg.benchmark.harness import BenchSettings, run_benchmark
from edgeseg.benchmark.targets.base import RemoteTimeout
from edgeseg.benchmark.targets.ssh import (JetsonTarget, SshTransport, jetson_clocks_state, parse_gpu_devfreq,
                                           parse_l4t, parse_nvpmodel)
from edgeseg.errors import DeviceError, EdgesegError
from tests import fake_runners as fr
from tests.bench_helpers import tiny_artifact_folder
from tests.sshd_server import SSHD, SshServer


@pytest.fixture
def sshd(tmp_path):
    if SSHD is None:  # fail, not skip: these tests are the ssh evidence
        pytest.fail("sshd is not installed: run scripts/ci-system-deps.sh (apt install openssh-server)")
    server = SshServer(tmp_path / "sshd", tools=fr.JETSON_TOOLS, env={"FAKE_RUNNER_SLEEP": "0"}).start()
    try:
        yield server
    finally:
        server.stop()


def _transport(server, tmp_path, **kw) -> SshTransport:
    return SshTransport(server.alias, options=server.options, workdir=str(tmp_path / "jetson"), **kw)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_run_exit_codes_streams_and_config_alias(sshd, tmp_path):
    t = _transport(sshd, tmp_path)
    r = t.run(["sh", "-c", "echo out; echo err >&2; exit 9"], timeout=30)
    assert (r.rc, r.stdout, r.stderr) == (9, "out\n", "err\n")
    assert t.address == "fakejetson"  # the Host alias from the ssh config, resolved by ssh itself


def test_batchmode_never_prompts(sshd, tmp_path):
    other = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    cfg = tmp_path / "cfg"
    cfg.write_text(sshd.config.read_text().replace(f"IdentityFile {sshd.folder / 'clientkey'}",
                                                  f"IdentityFile {other}"))
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="cannot ssh to fakejetson") as e:
        SshTransport(sshd.alias, options=["-F", str(cfg)])
    assert time.monotonic() - t0 < 20  # failed, did not wait for a password
    assert "BatchMode" in e.value.fix


HOSTILE = ["a b.onnx", "it's.onnx", 'q"uote.onnx', "x;touch PWNED;.onnx", "$(touch PWNED).onnx",
           "`touch PWNED`.onnx", "-rf.onnx", "new\nline.onnx", "star*?.onnx"]


def test_hostile_file_names_are_data(sshd, tmp_path):
    t = _transport(sshd, tmp_path)  # one connection for all names (each ssh command costs a login shell)
    for name in HOSTILE:
        local = tmp_path / "src" / name
        local.parent.mkdir(exist_ok=True)
        local.write_bytes(b"onnx bytes " + name.encode())
        remote = f"{t.workdir}/{name}"
        t.push(local, remote)
        assert t.run(["cat", remote], 30).stdout == "onnx bytes " + name, name
        back = tmp_path / "back" / "copy.bin"
        t.pull(remote, back)
        assert back.read_bytes() == local.read_bytes(), name
    assert not list(tmp_path.rglob("PWNED")) and not Path(os.path.expanduser("~/PWNED")).exists()
    assert sorted(p.name for p in Path(t.workdir).iterdir()) == sorted(HOSTILE)  # no .part leftovers


def test_push_detects_corruption_by_sha256(sshd, tmp_path, monkeypatch):
    t = _transport(sshd, tmp_path)
    local = tmp_path / "m.onnx"
    local.write_bytes(b"x" * 1000)
    real = subprocess.run

    def flaky(argv, *a, **kw):  # the link flips a byte: feed different content than was hashed
        if kw.get("stdin") not in (None, subprocess.DEVNULL):
            kw["stdin"].close()
            kw = {**kw, "input": b"y" * 1000}
            kw.pop("stdin")
        return real(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "run", flaky)
    with pytest.raises(DeviceError, match="sha256 mismatch"):
        t.push(local, f"{t.workdir}/m.onnx")
    monkeypatch.undo()
    assert not Path(t.workdir, "m.onnx").exists()


@pytest.mark.slow
def test_device_side_timeout_kills_the_process_tree(sshd, tmp_path):
    t = _transport(sshd, tmp_path)
    pids = tmp_path / "pids"
    with pytest.raises(RemoteTimeout, match="killed there"):
        t.run(["sh", "-c", f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; wait"], timeout=2)
    time.sleep(0.5)
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), pid


@pytest.mark.slow
def test_host_side_timeout_kills_leftovers(sshd, tmp_path, monkeypatch):
    """Killing the ssh client does not stop a command without a pty: the pid file does."""
    t = _transport(sshd, tmp_path)
    monkeypatch.setattr(t, "HOST_GRACE_S", -27.0)  # the host gives up after 3 s, the device after 30 s
    pids = tmp_path / "pids"
    with pytest.raises(RemoteTimeout, match="did not finish"):
        t.run(["sh", "-c", f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; wait"], timeout=30)
    time.sleep(0.5)
    assert pids.read_text().split()
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), pid


def test_unreachable_host_is_one_clear_error(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text("Host nowhere\n  HostName 127.0.0.1\n  Port 1\n")
    with pytest.raises(DeviceError, match="cannot ssh to nowhere"):
        SshTransport("nowhere", options=["-F", str(cfg)])


# ----------------------------------------------------------------- Jetson target
def _folder_with_calibration(tmp_path) -> Path:
    from edgeseg.export.manifest import Manifest
    from edgeseg.quantize.cache import CalibrationTable, TensorRange
    from edgeseg.utils.hashing import sha256_file

    folder = tiny_artifact_folder(tmp_path / "art")
    table = CalibrationTable("entropy", {"image": TensorRange(2.5), "c1": TensorRange(4.0), "r1": TensorRange(4.0),
                                         "masks": TensorRange(1.0)}, num_images=8,
                             model_sha256=sha256_file(folder / "tiny.onnx"))
    table.save(folder / "tiny.entropy.calib.json")
    m = Manifest.load(folder)
    m.add_artifact("tiny.entropy.calib.json", kind="calibration-table", model="tiny.onnx", method="entropy")
    m.save(folder)
    return folder


def test_jetson_benchmark_end_to_end(sshd, tmp_path):
    folder = _folder_with_calibration(tmp_path)
    trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
    t = _transport(sshd, tmp_path)
    target = JetsonTarget(t, folder, runner_bin=trtexec, plan_spec="backbone=int8,head=fp16", timeout_s=60)
    report = run_benchmark(target, BenchSettings(runs=6, warmup=2, repeats=2))
    assert report.complete
    # per-run samples from --exportTimes (run i took i ms), first `warmup` of each block dropped
    assert report.latency.source == "samples"
    assert report.latency.samples_ms == [3.0, 4.0, 5.0, 3.0, 4.0, 5.0]
    assert report.latency.n == 6 and report.latency.warmup == 4
    build, profile, timing = report.commands[:3]
    assert "--saveEngine=" in build and "--buildOnly" in build  # TensorRT 8.5: no --skipInference yet
    for flag in ("--fp16", "--int8", "--precisionConstraints=obey",
                 "--layerPrecisions=/backbone/conv/Conv:int8,/backbone/act/Relu:int8,/head/conv/Conv:fp16"):
        assert flag in build
    assert "--calib=" in build
    assert "--loadEngine=" in timing and "--iterations=5" in timing and "--exportTimes=" in timing
    assert "--exportProfile=" in profile and "--exportLayerInfo=" in profile  # the per-component run
    assert report.runtime["typing"] == "weak" and report.runtime["tensorrt_source"] == "trtexec banner"
    assert report.extra["per_component"]["available"]
    assert "per_component_ms" in report.runtime  # one line in the report tables
    calls = fr.calls(t.workdir and Path(t.workdir), "trtexec")
    assert "CALIB_HEADER TRT-8502-EntropyCalibration2" in calls  # cache written for the device's TensorRT
    assert report.runtime["tensorrt"] == "8.5.2" and report.runtime["engine_built_now"] is True
    assert report.plan["precisions"] == {"backbone": "int8", "head": "fp16"}
    ts = report.extra["per_repeat"][0]["tegrastats"]
    assert ts["samples"] >= 1 and ts["max_temperature_c"]["GPU"] == 41.5
    assert ts["mean_util_pct"]["GR3D_FREQ"] == 45.0
    st = report.device_before
    assert st.extra["nvpmodel"] == "MAXN (mode 0)" and st.extra["jetson_clocks"] == "on"
    assert report.extra["per_repeat"][0]["tensorrt"] == "8.5.2"
    # no leftovers from the runs (times/tegrastats files removed), engine cached for next time
    assert not list(Path(t.workdir).glob("run-*"))
    again = JetsonTarget(_transport(sshd, tmp_path), folder, runner_bin=trtexec, plan_spec="backbone=int8,head=fp16",
                         timeout_s=60)
    r2 = run_benchmark(again, BenchSettings(runs=2, warmup=0))
    assert r2.runtime["engine_built_now"] is False and r2.runtime["pushed_files"] == []


def test_jetson_int8_without_calibration_is_a_clear_error(sshd, tmp_path):
    folder = tiny_artifact_folder(tmp_path / "art")
    trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
    target = JetsonTarget(_transport(sshd, tmp_path), folder, runner_bin=trtexec, plan_spec="backbone=int8")
    with pytest.raises(EdgesegError, match="no calibration table was found"):
        run_benchmark(target, BenchSettings(runs=2, warmup=0))


def test_jetson_stale_calibration_table_is_refused(sshd, tmp_path):
    from edgeseg.quantize.cache import CalibrationTable

    folder = _folder_with_calibration(tmp_path)
    table = CalibrationTable.load(folder / "tiny.entropy.calib.json")
    table.model_sha256 = "0" * 64  # calibrated on another graph (e.g. before a re-export)
    table.save(folder / "tiny.entropy.calib.json")
    trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
    target = JetsonTarget(_transport(sshd, tmp_path), folder, runner_bin=trtexec, plan_spec="backbone=int8")
    with pytest.raises(EdgesegError, match="different ONNX file"):
        run_benchmark(target, BenchSettings(runs=2, warmup=0))


@pytest.mark.slow
def test_jetson_vanishing_mid_run_keeps_measured_blocks(tmp_path):
    server = SshServer(tmp_path / "sshd", tools=fr.JETSON_TOOLS, env={"FAKE_RUNNER_SLEEP": "1"}).start()
    try:
        folder = tiny_artifact_folder(tmp_path / "art")
        trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
        t = _transport(server, tmp_path, connect_timeout=3)
        target = JetsonTarget(t, folder, runner_bin=trtexec, timeout_s=60)

        def pull_the_plug():  # once the third timing run has started, the board loses power
            end = time.monotonic() + 60
            while time.monotonic() < end:
                runs = [c for c in fr.calls(Path(t.workdir), "trtexec") if "--exportTimes" in c]
                if len(runs) >= 3:
                    server.vanish()
                    return
                time.sleep(0.05)

        threading.Thread(target=pull_the_plug, daemon=True).start()
        report = run_benchmark(target, BenchSettings(runs=12, warmup=1, repeats=4))
        assert not report.complete and "lost fakejetson" in report.error.replace("the device ", "")
        assert report.latency.n == 6 and len(report.repeats) == 2
        assert report.device_after is None
    finally:
        server.stop()


@pytest.mark.slow
def test_cli_bench_over_ssh(sshd, tmp_path):
    folder = tiny_artifact_folder(tmp_path / "art")
    trtexec = fr.write_runner(tmp_path / "bin", "trtexec", fr.TRTEXEC)
    out = tmp_path / "jetson.json"
    env = {**os.environ, "EDGESEG_SSH_OPTIONS": f"-F {sshd.config}", "EDGESEG_SSH_WORKDIR": str(tmp_path / "j"),
           "EDGESEG_PROGRESS": "0"}
    res = subprocess.run([sys.executable, "-m", "edgeseg", "bench", str(folder), "--target", "ssh://fakejetson",
                          "--runner-bin", str(trtexec), "--plan", "backbone=fp16,head=fp32", "--runs", "4",
                          "--warmup", "1", "-o", str(out), "-o", str(tmp_path / "jetson.html")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    d = json.loads(out.read_text())
    assert d["target"] == {"kind": "ssh", "address": "fakejetson"}
    assert d["complete"] and d["latency"]["n"] == 4 and d["latency"]["source"] == "samples"
    assert d["plan"]["spec"] == "backbone=fp16,head=fp32"
    assert "--layerPrecisions=/backbone/conv/Conv:fp16,/backbone/act/Relu:fp16,/head/conv/Conv:fp32" in d["commands"][0]
    assert "<svg" in (tmp_path / "jetson.html").read_text()


# ----------------------------------------------------------------- pure parsers of Jetson state
def test_jetson_state_parsers():
    assert parse_nvpmodel("NV Power Mode: MODE_15W_2CORE\n3\n") == "MODE_15W_2CORE (mode 3)"
    assert parse_nvpmodel("NV Power Mode: MAXN") == "MAXN"
    assert parse_nvpmodel("nvpmodel: command not found") == "unavailable"
    assert parse_l4t(fr.NV_TEGRA_RELEASE) == "R35.4.1"
    assert parse_l4t(None) == "unavailable"
    gpu = parse_gpu_devfreq("17000000.gv11b 318750000 114750000 1377000000\n")
    assert gpu == {"cur_mhz": 318.8, "min_mhz": 114.8, "max_mhz": 1377.0}
    assert jetson_clocks_state(None, gpu) == "off"
    assert jetson_clocks_state(None, {**gpu, "min_mhz": 1377.0}) == "on"
    assert jetson_clocks_state("GPU MinFreq=1 MaxFreq=2 CurrentFreq=2", None) == "off"
    assert jetson_clocks_state("sudo: a password is required", None) == "unavailable"
