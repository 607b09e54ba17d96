import os
import threading

import pytest

from tests.bench_helpers import tiny_artifact_folder, tiny_conv_onnx
from edgeseg.benchmark.device_info import DeviceState
from edgeseg.benchmark.harness import BenchSettings, artifact_facts, run_benchmark
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.benchmark.targets.base import DeviceLost, Measurement, Target
from edgeseg.benchmark.targets.local import LocalTarget, ProcessPinning, default_core
from edgeseg.errors import EdgesegError

CORES = sorted(os.sched_getaffinity(0))


def test_local_target_pins_one_core_one_thread_and_restores(tmp_path):
    onnx_path = tiny_conv_onnx(tmp_path / "m.onnx")
    before = os.sched_getaffinity(0)
    core = CORES[-1]
    with LocalTarget(onnx_path, core=core) as t:
        info = t.runtime_info()
        assert os.sched_getaffinity(0) == {core}
        assert info["affinity"] == [core]
        assert info["unpinned_threads"] == 0
        assert info["threads_intra_op"] == 1 and info["threads_inter_op"] == 1
        assert info["threads_source"] == "onnxruntime session options"  # read back, not assumed
        m = t.measure(runs=7, warmup=2)
        assert m.stats.n == 7 and m.stats.warmup == 2 and len(m.stats.samples_ms) == 7
        assert all(v > 0 for v in m.stats.samples_ms)
        assert m.command is None  # in-process: nothing ran on a device shell
    assert os.sched_getaffinity(0) == before


def test_pinning_reaches_threads_that_already_exist_and_restores_them():
    core = CORES[0]
    ready, done = threading.Event(), threading.Event()
    seen = {}

    def worker():
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10)

    th = threading.Thread(target=worker)
    th.start()
    ready.wait(10)
    original = os.sched_getaffinity(seen["tid"])
    try:
        with ProcessPinning(core) as pin:
            assert os.sched_getaffinity(seen["tid"]) == {core}
            assert pin.unpinned_threads() == 0
        assert os.sched_getaffinity(seen["tid"]) == original
    finally:
        done.set()
        th.join()


def test_pinning_refuses_a_core_we_may_not_use():
    with pytest.raises(EdgesegError, match="not available to this process"):
        ProcessPinning(max(CORES) + 1000).__enter__()


def test_corrupt_model_restores_affinity(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    before = os.sched_getaffinity(0)
    with pytest.raises(EdgesegError, match="cannot load"):
        LocalTarget(bad, core=CORES[0]).open()
    assert os.sched_getaffinity(0) == before


def test_default_core_is_allowed():
    assert default_core() in CORES


def test_settings_blocks_and_validation():
    assert BenchSettings(runs=10, repeats=3).blocks() == [4, 3, 3]
    assert sum(BenchSettings(runs=50, repeats=5).blocks()) == 50
    for bad in (dict(runs=0), dict(warmup=-1), dict(runs=5, repeats=6), dict(cooldown_s=-1)):
        with pytest.raises(EdgesegError):
            BenchSettings(**bad).validate()


class FlakyTarget(Target):
    """A device that answers ``good_blocks`` blocks, then disappears."""

    kind = "fake"

    def __init__(self, good_blocks: int, fresh_process: bool = True):
        self.good_blocks = good_blocks
        self.calls: list[tuple[int, int]] = []
        self.fresh = fresh_process
        self.opened = self.closed = False

    @property
    def address(self):
        return "fake-serial"

    @property
    def warmup_each_block(self):
        return self.fresh

    def open(self):
        self.opened = True

    def close(self):
        self.closed = True

    def runtime_info(self):
        return {"backend": "fake"}

    def device_state(self):
        if len(self.calls) > self.good_blocks:
            raise DeviceLost("device fake-serial is gone", "reconnect it")
        return DeviceState(governor="performance")

    def measure(self, runs, warmup):
        self.calls.append((runs, warmup))
        if len(self.calls) > self.good_blocks:
            raise DeviceLost("lost the device fake-serial while running: runner", "reconnect it")
        base = float(len(self.calls))
        return Measurement(LatencyStats.from_samples([base] * runs, warmup), command=f"runner --n={runs}")


def test_harness_keeps_measured_blocks_when_the_device_vanishes():
    sleeps = []
    t = FlakyTarget(good_blocks=2)
    r = run_benchmark(t, BenchSettings(runs=10, warmup=3, repeats=5, cooldown_s=2.5), sleep=sleeps.append)
    assert t.opened and t.closed
    assert not r.complete and "lost the device" in r.error
    assert r.latency.n == 4 and r.latency.samples_ms == [1.0, 1.0, 2.0, 2.0]
    assert len(r.repeats) == 2
    assert r.device_after is None  # could not be read: not copied from "before"
    assert r.device_before.governor == "performance"
    assert sleeps == [2.5, 2.5, 2.5]  # a cool-down before every block that started
    assert t.calls == [(2, 3), (2, 3), (2, 3)]  # fresh runner process: warm-up every block
    assert r.commands == ["runner --n=2"]


def test_harness_warms_up_once_for_a_loaded_runtime():
    t = FlakyTarget(good_blocks=99, fresh_process=False)
    r = run_benchmark(t, BenchSettings(runs=6, warmup=4, repeats=3), sleep=lambda s: None)
    assert r.complete and r.latency.n == 6
    assert t.calls == [(2, 4), (2, 0), (2, 0)]


def test_artifact_facts_reads_plan_and_refuses_a_stale_manifest(tmp_path):
    plan = {"name": None, "spec": "backbone=int8,head=fp16", "precisions": {"backbone": "int8", "head": "fp16"}}
    folder = tiny_artifact_folder(tmp_path / "art", plan=plan)
    facts, got = artifact_facts(folder)
    assert got == plan
    assert facts["model"] == "tiny_conv" and facts["name"] == "tiny.onnx"
    assert facts["input_shape"] == [1, 3, 32, 32]
    with open(folder / "tiny.onnx", "ab") as f:
        f.write(b"\0")  # changed after export: the manifest's model and plan no longer describe it
    with pytest.raises(EdgesegError, match="not the file recorded"):
        artifact_facts(folder)
    bare = tiny_conv_onnx(tmp_path / "bare" / "m.onnx")
    facts, got = artifact_facts(bare)
    assert got is None and "model" not in facts


def test_full_local_benchmark_report(tmp_path):
    folder = tiny_artifact_folder(tmp_path / "art")
    facts, plan = artifact_facts(folder)
    r = run_benchmark(LocalTarget(folder, core=CORES[0]), BenchSettings(runs=12, warmup=2, repeats=2),
                      artifact=facts, plan=plan)
    assert r.complete and r.latency.n == 12 and r.latency.warmup == 2
    assert r.settings["core"] == CORES[0]
    assert r.runtime["affinity"] == [CORES[0]]
    assert r.device_before.core == CORES[0] and r.device_after is not None
    assert r.latency.min_ms <= r.latency.p50_ms <= r.latency.p90_ms <= r.latency.p99_ms <= r.latency.max_ms


def test_phone_runner_on_this_host_through_the_local_transport(tmp_path):
    """--target local --runner-bin: the same runner target as a phone, over host subprocesses."""
    from edgeseg.benchmark.targets.local import LocalTransport
    from edgeseg.benchmark.targets.runner import RunnerTarget
    from tests import fake_runners as fr

    runner = fr.write_runner(tmp_path / "bin", "benchmark_model", fr.BENCHMARK_MODEL)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    cache = tmp_path / "cache"
    target = RunnerTarget.for_artifact(LocalTransport(cache), model, runner_bin=runner, core=CORES[0], timeout_s=60)
    r = run_benchmark(target, BenchSettings(runs=8, warmup=2, repeats=2))
    assert r.complete and r.target["kind"] == "local"
    assert r.latency.n == 8 and r.latency.mean_ms == pytest.approx(15.0)
    assert r.commands[0].startswith(f"taskset {1 << CORES[0]:x} ")
    assert fr.calls(cache, "benchmark_model").count(f"Cpus_allowed_list:\t{CORES[0]}") == 2


def test_runner_failure_before_any_block_is_a_plain_error(tmp_path):
    from edgeseg.benchmark.targets.local import LocalTransport
    from edgeseg.benchmark.targets.runner import RunnerTarget
    from edgeseg.errors import DeviceError
    from tests import fake_runners as fr

    runner = fr.write_runner(tmp_path / "bin", "benchmark_model", "#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    target = RunnerTarget.for_artifact(LocalTransport(tmp_path / "cache"), model, runner_bin=runner, core=CORES[0])
    with pytest.raises(DeviceError, match="exited with 139: Segmentation fault"):
        run_benchmark(target, BenchSettings(runs=2, warmup=0))


def test_cpu_clock_counts_the_work_of_a_run_not_the_waits(tmp_path):
    """--clock cpu: on a loaded machine the waits for the core are not the model's cost."""
    import time

    onnx_path = tiny_conv_onnx(tmp_path / "m.onnx")
    with pytest.raises(EdgesegError, match="unknown clock"):
        LocalTarget(onnx_path, core=CORES[0], clock="gpu")
    for clock in ("wall", "cpu"):
        with LocalTarget(onnx_path, core=CORES[0], clock=clock) as t:
            assert t.runtime_info()["timer"].startswith("time.perf_counter_ns" if clock == "wall"
                                                        else "time.process_time_ns")
            real_run = t.runtime.run
            t.runtime.run = lambda feeds: (time.sleep(0.02), real_run(feeds))  # a run that waits 20 ms
            ms = t.measure(runs=3, warmup=0).stats.samples_ms
        if clock == "wall":
            assert min(ms) >= 20
        else:
            assert max(ms) < 15  # the tiny conv's own CPU time, without the sleep
