"""One benchmark report through each transport, all on this machine.

    python benchmarks/remote_targets_demo.py -o out/transport-reports

* local: the tiny test ONNX on one pinned core (real ONNX Runtime timings);
* adb:   the real `adb` client and a private adb server talking to tests/fake_adb_device.py,
         running the stand-in benchmark_model of tests/fake_runners.py;
* ssh:   the real `ssh` client against a private sshd on 127.0.0.1, running the stand-in
         trtexec (engine build from a mixed precision plan + timed runs + tegrastats).

The adb and ssh latencies are the stand-in runners' made-up figures: this shows what
crosses each transport (commands, files, pinning, device state, parsing), not the speed
of a phone or a Jetson. It needs `adb`, `sshd` and `ssh` (scripts/ci-system-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, default=Path("out/transport-reports"))
    args = ap.parse_args(argv)

    from edgeseg.benchmark.harness import BenchSettings, artifact_facts, run_benchmark
    from edgeseg.benchmark.targets.adb import AdbTransport
    from edgeseg.benchmark.targets.local import LocalTarget
    from edgeseg.benchmark.targets.runner import RunnerTarget
    from edgeseg.benchmark.targets.ssh import JetsonTarget, SshTransport
    from tests import fake_runners as fr
    from tests.bench_helpers import tiny_artifact_folder
    from tests.fake_adb_device import FakeAdbDevice, parse_android_pubkey
    from tests.sshd_server import SshServer

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeseg-demo-") as tmp_text:
        tmp = Path(tmp_text)
        folder = tiny_artifact_folder(tmp / "tiny")
        facts, plan = artifact_facts(folder)

        # ---------------------------------------------------------------- local
        report = run_benchmark(LocalTarget(folder), BenchSettings(runs=50, warmup=10), artifact=facts, plan=plan)
        _save(report, args.out / "local")

        # ---------------------------------------------------------------- adb
        home = tmp / "adbhome"
        home.mkdir()
        port = str(_free_port())
        os.environ["ANDROID_ADB_SERVER_PORT"] = port
        os.environ["FAKE_LOGCAT"] = str(tmp / "logcat.txt")
        env = {**os.environ, "HOME": str(home)}
        subprocess.run(["adb", "start-server"], env=env, check=True, capture_output=True, timeout=60)
        try:
            key = parse_android_pubkey((home / ".android" / "adbkey.pub").read_text())
            with FakeAdbDevice(tmp / "phone", authorized_keys=[key], tools=fr.PHONE_TOOLS) as dev:
                subprocess.run(["adb", "connect", dev.serial], check=True, capture_output=True, timeout=30)
                time.sleep(0.5)
                runner = fr.write_runner(tmp / "bin", "benchmark_model", fr.BENCHMARK_MODEL)
                model = tmp / "mobileinst.tflite"
                model.write_bytes(b"TFL3" + bytes(64))
                target = RunnerTarget.for_artifact(AdbTransport(dev.serial, workdir=str(dev.root / "edgeseg")),
                                                   model, runner_bin=runner, timeout_s=120)
                mfacts, mplan = artifact_facts(model)
                _save(run_benchmark(target, BenchSettings(runs=20, warmup=5, repeats=2), artifact=mfacts, plan=mplan),
                      args.out / "adb")
                subprocess.run(["adb", "disconnect", dev.serial], capture_output=True, timeout=30)
        finally:
            subprocess.run(["adb", "kill-server"], env=env, capture_output=True, timeout=60)

        # ---------------------------------------------------------------- ssh
        server = SshServer(tmp / "sshd", tools=fr.JETSON_TOOLS).start()
        try:
            trtexec = fr.write_runner(tmp / "bin", "trtexec", fr.TRTEXEC)
            t = SshTransport(server.alias, options=server.options, workdir=str(tmp / "jetson"))
            target = JetsonTarget(t, folder, runner_bin=trtexec, plan_spec="backbone=fp16,head=fp32", timeout_s=120)
            _save(run_benchmark(target, BenchSettings(runs=20, warmup=5, repeats=2), artifact=facts, plan=plan),
                  args.out / "ssh")
        finally:
            server.stop()
    return 0


def _save(report, stem: Path) -> None:
    for suffix in (".json", ".md", ".html"):
        report.save(stem.with_suffix(suffix))
    lat = report.latency
    print(f"{report.target['kind']:5s} {report.target['address']:24s} complete={report.complete} n={lat.n} "
          f"mean={lat.mean_ms:.3f} ms p50={'-' if lat.p50_ms is None else f'{lat.p50_ms:.3f}'} "
          f"source={lat.source} -> {stem}.{{json,md,html}}")
    for cmd in report.commands:
        print(f"      $ {cmd[:160]}{'...' if len(cmd) > 160 else ''}")


if __name__ == "__main__":
    sys.exit(main())
