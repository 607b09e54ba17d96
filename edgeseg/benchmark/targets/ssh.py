"""Jetson boards (or any Linux box) through the real ``ssh`` binary, timed with ``trtexec``.

:class:`SshTransport` runs ``ssh -o BatchMode=yes ... HOST CMD`` (never a password
prompt; ``~/.ssh/config`` aliases, users, ports and keys apply as usual; extra options
come from ``EDGESEG_SSH_OPTIONS``). Files are streamed through ``ssh ... 'cat > TMP'``,
checked with ``sha256sum`` on the device and renamed into place: one quoting layer (the
remote ``sh``) on every OpenSSH version, unlike scp whose remote-path quoting differs
between its legacy and SFTP modes.

:class:`JetsonTarget` first reads the device's TensorRT version (trtexec's ``[TensorRT
vNNNN]`` banner, else ``import tensorrt`` there, else dpkg) and follows it:

* TensorRT >= 10: the plan goes into the ONNX (the FP32 export is quantized here to the
  QDQ/fp16 ONNX with int8 activations) and trtexec builds it ``--stronglyTyped``;
* TensorRT 8.5 / 8.6: the FP32 ONNX with ``--fp16 --int8 --precisionConstraints=obey
  --layerPrecisions=...`` from the plan's component tags, and the TensorRT calibration
  cache written from the host's table for the device's version (``--calib``).

The engine is built once and cached on the device; one profiling run (``--exportProfile``,
``--exportLayerInfo``) gives the per-component GPU time and the planned-vs-actual
precision; then ``warmup + runs`` inferences per block are timed with ``--exportTimes``
(per-run samples) while ``tegrastats`` samples clocks, temperatures and power. Device
state includes ``nvpmodel -q``, whether jetson_clocks pinned the clocks, and the L4T release.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from edgeseg.benchmark import device_info, parsers, runners
from edgeseg.benchmark.device_info import UNAVAILABLE, DeviceState
from edgeseg.benchmark.stats import LatencyStats
from edgeseg.benchmark.targets.base import DeviceLost, Measurement, RemoteTransport, Target, quote_argv
from edgeseg.benchmark.targets.runner import DeviceCache
from edgeseg.errors import DeviceError, EdgesegError


def find_ssh(ssh: str | None = None) -> str:
    exe = shutil.which(ssh or os.environ.get("EDGESEG_SSH", "ssh"))
    if exe is None:
        raise EdgesegError("the `ssh` binary was not found", "install OpenSSH (Debian/Ubuntu: `apt install openssh-client`)")
    return exe


class SshTransport(RemoteTransport):
    kind = "ssh"
    LINK_ERROR_CODES = (255,)  # ssh's own failures; any other code is the remote command's

    def __init__(self, host: str, user: str | None = None, port: int | None = None, workdir: str | None = None,
                 ssh: str | None = None, options: list[str] | None = None, connect_timeout: int = 15):
        self.ssh = find_ssh(ssh)
        self.host, self.user, self.port = host, user, port
        extra = list(options) if options is not None else shlex.split(os.environ.get("EDGESEG_SSH_OPTIONS", ""))
        # BatchMode: fail instead of prompting for a password or host key; keep-alives turn a
        # dead link into ssh's exit 255 within ~15 s instead of a hang.
        self.base = [self.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                     "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", *extra]
        if port:
            self.base += ["-p", str(port)]
        if user:
            self.base += ["-l", user]
        # One authenticated connection for the whole benchmark (dozens of commands): a
        # background master started up front, every command a client of it. The master is
        # started with -f and its stdio on /dev/null, so no command waits on its pipes.
        self._control_dir = tempfile.mkdtemp(prefix="edgeseg-ssh-")
        control = ["-o", f"ControlPath={self._control_dir}/%C"]
        self._master = [*self.base, *control, "-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-N", "-f"]
        self.base += [*control, "-o", "ControlMaster=no"]
        self.base += ["--", host]
        self._master += ["--", host]
        self._start_master()
        home = self._connect()
        super().__init__(workdir or os.environ.get("EDGESEG_SSH_WORKDIR") or f"{home}/.cache/edgeseg")

    def _start_master(self) -> None:
        try:
            subprocess.run(self._master, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
        except subprocess.TimeoutExpired:
            pass  # _connect() reports the problem with ssh's own message

    def close(self) -> None:
        """Stop the connection master and remove its socket folder."""
        if getattr(self, "_control_dir", None):
            try:
                subprocess.run([*self.base[:-2], "-O", "exit", "--", self.host], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=15)
            except subprocess.TimeoutExpired:
                pass
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    def __del__(self):  # best effort: never leave a master behind
        try:
            self.close()
        except Exception:
            pass

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    def _connect(self) -> str:
        try:
            res = subprocess.run([*self.base, "echo", "$HOME"], stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            raise DeviceError(f"ssh to {self.address} did not answer within 60 s",
                              "check the host is up and reachable (`ssh HOST true`)") from e
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["no message"])[-1]
            raise DeviceError(f"cannot ssh to {self.address}: {why}",
                              "check `ssh -o BatchMode=yes HOST true` works without a password "
                              "(ssh-copy-id, or a Host entry with IdentityFile in ~/.ssh/config)")
        return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "/tmp"

    def _client(self, remote_cmdline: str) -> list[str]:
        return [*self.base, remote_cmdline]

    def _reachable(self) -> bool:
        try:
            res = subprocess.run([*self.base, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def _reconnect_hint(self) -> str:
        return f"check {self.address} is powered and on the network (`ssh {self.host} true`), then run again"

    # ---------------------------------------------------------------- files
    def push(self, local: str | Path, remote: str, timeout: float = 600) -> None:
        local = Path(local)
        if not local.is_file():
            raise EdgesegError(f"{local} does not exist", "check the path")
        h = hashlib.sha256()
        with open(local, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        tmp = f"{remote}.part-{uuid.uuid4().hex[:8]}"
        q_tmp, q_remote = shlex.quote(tmp), shlex.quote(remote)
        script = (f"mkdir -p \"$(dirname {q_remote})\" && cat > {q_tmp} && "
                  f"s=$(sha256sum < {q_tmp} | cut -d' ' -f1) && "
                  f"if [ \"$s\" = {h.hexdigest()} ]; then mv -f {q_tmp} {q_remote}; "
                  f"else rm -f {q_tmp}; echo \"sha256 mismatch: $s\" >&2; exit 3; fi")
        with open(local, "rb") as f:
            try:
                res = subprocess.run(self._client(f"sh -c {shlex.quote(script)}"), stdin=f, capture_output=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise DeviceError(f"copying {local.name} to {self.address} took longer than {timeout:.0f}s",
                                  "check the network, or raise --timeout") from e
        if res.returncode != 0:
            if not self._reachable():
                raise DeviceLost(f"lost {self.address} while copying {local.name}", self._reconnect_hint())
            raise DeviceError(f"copying {local.name} to {self.address} failed: "
                              f"{res.stderr.decode('utf-8', 'replace').strip()}",
                              f"check there is space in {self.workdir} (`df -h`) and sha256sum is installed")

    def pull(self, remote: str, local: str | Path, timeout: float = 600) -> None:
        from edgeseg.utils.atomic import atomic_path

        with atomic_path(local) as tmp, open(tmp, "wb") as out:
            try:
                res = subprocess.run(self._client(f"cat {shlex.quote(remote)}"), stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.PIPE, timeout=timeout)
            except subprocess.TimeoutExpired as e:
                raise DeviceError(f"copying {remote} from {self.address} took longer than {timeout:.0f}s",
                                  "check the network") from e
            if res.returncode != 0:
                if not self._reachable():
                    raise DeviceLost(f"lost {self.address} while copying {remote}", self._reconnect_hint())
                raise DeviceError(f"copying {remote} from {self.address} failed: "
                                  f"{res.stderr.decode('utf-8', 'replace').strip()}", "check the file exists")


# --------------------------------------------------------------------------- Jetson state
JETSON_COMMANDS = {
    "nvpmodel": "nvpmodel -q",
    # --show needs root; -n never prompts. Without it the devfreq files below still tell.
    "jetson_clocks": "sudo -n jetson_clocks --show",
    "gpu_devfreq": ('for d in /sys/class/devfreq/*; do case "$d" in *gv11b*|*ga10b*|*gp10b*|*gpu*) '
                    'echo "$(basename "$d") $(cat "$d/cur_freq") $(cat "$d/min_freq") $(cat "$d/max_freq")";; '
                    'esac; done'),
    "l4t": "cat /etc/nv_tegra_release",
}


def parse_nvpmodel(text: str | None) -> str:
    """``NV Power Mode: MAXN`` (+ mode id on the next line) -> ``MAXN (mode 0)``."""
    if not text:
        return UNAVAILABLE
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return UNAVAILABLE
    after = text[m.end():].split()
    mode_id = after[0] if after and after[0].isdigit() else None
    return f"{m.group(1)} (mode {mode_id})" if mode_id is not None else m.group(1)


def parse_gpu_devfreq(text: str | None) -> dict[str, float] | None:
    """First GPU devfreq line ``name cur min max`` (Hz) -> MHz figures."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            cur, lo, hi = (int(p) / 1e6 for p in parts[1:])
            return {"cur_mhz": round(cur, 1), "min_mhz": round(lo, 1), "max_mhz": round(hi, 1)}
    return None


def jetson_clocks_state(show: str | None, gpu: dict[str, float] | None) -> str:
    """Whether jetson_clocks pinned the clocks: GPU min == max frequency means pinned.

    ``jetson_clocks --show`` (root only) prints ``GPU MinFreq=.. MaxFreq=.. CurrentFreq=..``;
    without root the GPU devfreq min/max tell the same thing.
    """
    if show:
        m = re.search(r"GPU MinFreq=(\d+) MaxFreq=(\d+)", show)
        if m:
            return "on" if m.group(1) == m.group(2) else "off"
    if gpu:
        return "on" if gpu["min_mhz"] == gpu["max_mhz"] else "off"
    return UNAVAILABLE


def parse_l4t(text: str | None) -> str:
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else UNAVAILABLE


# --------------------------------------------------------------------------- Jetson target
class JetsonTarget(Target):
    kind = "ssh"

    def __init__(self, transport: RemoteTransport, artifact, runner_bin: Path | None = None,
                 calib: Path | None = None, core: int | None = None, timeout_s: float = 900.0,
                 plan: dict[str, Any] | None = None, plan_spec: str | None = None, build_timeout_s: float = 3600.0,
                 build_options=None, profile_runs: int = 10):
        from edgeseg.export.tensorrt.build_plan import BuildOptions

        from edgeseg.runtimes.base import resolve_artifact

        self.transport = transport
        self.artifact = Path(artifact)
        self.onnx = resolve_artifact(artifact)
        if self.onnx.suffix.lower() != ".onnx":
            raise EdgesegError(f"the Jetson target builds TensorRT engines from ONNX, not {self.onnx.name}",
                               "pass the export folder or the .onnx file")
        self.runner_bin = Path(runner_bin) if runner_bin else None
        self.calib = Path(calib) if calib else None
        self.core = core
        self.timeout_s = timeout_s
        self.build_timeout_s = build_timeout_s
        self.plan = plan
        self.plan_spec = plan_spec
        self.cache = DeviceCache(transport, transport.workdir, timeout_s)
        self.setup_commands: list[str] = []
        self.trtexec: str | None = None
        self.trt_version: str | None = None
        self.engine: str | None = None
        self.precision: runners.TrtexecPlan | None = None
        self.build_options = build_options or BuildOptions()
        self.profile_runs = profile_runs  # 0: no per-component profiling run
        self.typing: str | None = None
        self.device_model = None  # the ONNX model the device's TensorRT parsed
        self.component_profile: dict[str, Any] | None = None  # per-component time and precision (report extra)
        self._info: dict[str, Any] = {}

    @property
    def address(self) -> str:
        return self.transport.address

    @property
    def warmup_each_block(self) -> bool:
        return True  # every block is a fresh trtexec process

    # ---------------------------------------------------------------- set-up
    def _find_trtexec(self) -> str:
        if self.runner_bin is not None:
            return f"{self.cache.ensure([self.runner_bin], executable=True)}/{self.runner_bin.name}"
        res = self.transport.run_script("command -v trtexec || { [ -x /usr/src/tensorrt/bin/trtexec ] && "
                                        "echo /usr/src/tensorrt/bin/trtexec; }", 30)
        path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if res.rc != 0 or not path:
            raise EdgesegError(f"trtexec was not found on {self.address}",
                               "install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) "
                               "or pass --runner-bin PATH/trtexec")
        return path

    def _plan_and_nodes(self, onnx_model) -> tuple[dict[str, str] | None, dict[str, list[str]]]:
        from edgeseg.export.manifest import Manifest, find_manifest
        from edgeseg.export.tags import nodes_by_component

        nodes = nodes_by_component(onnx_model)
        plan = None
        if self.plan_spec:
            from edgeseg.quantize.plan import PrecisionPlan

            if find_manifest(self.onnx) is not None and Manifest.load(self.onnx).components:
                pp = Manifest.load(self.onnx).plan(self.plan_spec)
            else:
                pp = PrecisionPlan.parse(self.plan_spec, [c for c in nodes if c])
            self.plan = pp.to_dict()
        if self.plan:
            plan = dict(self.plan.get("precisions") or {})
            if self.plan.get("exceptions"):
                # Units below the component level: one precision per unit, trtexec
                # --layerPrecisions names each node at its unit's precision.
                from edgeseg.quantize.plan import PrecisionPlan
                from edgeseg.quantize.units import node_tags

                tags, plan = node_tags(onnx_model, PrecisionPlan.from_dict(self.plan))
                nodes = {}
                for node, tag in tags.items():
                    nodes.setdefault(tag, []).append(node)
        return plan, nodes

    def _index(self, model):
        """Engine layers -> ONNX nodes -> components (and the plan's units, when it has any)."""
        from edgeseg.export.tensorrt.names import OnnxIndex

        if self.plan and self.plan.get("exceptions"):
            from edgeseg.quantize.plan import PrecisionPlan
            from edgeseg.quantize.units import node_tags

            return OnnxIndex.from_model(model, node_tags(model, PrecisionPlan.from_dict(self.plan))[0])
        return OnnxIndex.from_model(model)

    def _calibration_table(self):
        """The host's calibration table: --calib, else the manifest's table for this ONNX."""
        from edgeseg.export.manifest import Manifest, find_manifest
        from edgeseg.quantize.cache import CalibrationTable, read_trt_cache

        path = self.calib
        if path is None and find_manifest(self.onnx) is not None:
            m = Manifest.load(self.onnx)
            tables = [name for name, info in m.artifacts.items()
                      if info.get("kind") == "calibration-table" and info.get("model") == self.onnx.name]
            if tables:
                path = self.onnx.parent / tables[-1]
        if path is None:
            return None
        return CalibrationTable.load(path) if path.suffix == ".json" else read_trt_cache(path)

    def _device_tensorrt(self):
        """The device's TensorRT: trtexec's banner, else its Python bindings, else dpkg (one round trip)."""
        from edgeseg.export.tensorrt.versions import VERSION_PROBE, device_tensorrt

        commands = {"trtexec": f"{shlex.quote(self.trtexec)} --help", **VERSION_PROBE}
        res = self.transport.run_script(device_info.probe_script(None, commands=commands), 60)
        _, _, out = device_info.parse_probe_output(res.stdout)
        return device_tensorrt(out.get("trtexec") or "", out.get("python"), out.get("dpkg"))

    def _onnx_for_device(self, onnx_model, plan: dict[str, str] | None, typing: str, tmpdir: Path):
        """(local ONNX to push, its model): the artifact itself, or the QDQ/fp16 ONNX the device's TensorRT needs.

        Strongly typed builds need the plan inside the ONNX: an FP32 export is quantized here
        with int8 activations; a uint8 QDQ artifact gets int8 zero points (TensorRT's Q/DQ
        are symmetric int8 on every version, so this applies to explicit weak builds too).
        """
        import onnx

        from edgeseg.export.tensorrt.onnx_prep import activation_types, is_qdq, to_int8_activations

        if typing == "strong" and plan and any(p != "fp32" for p in plan.values()) and not is_qdq(onnx_model) \
                and not _has_fp16(onnx_model):
            from edgeseg.quantize.plan import PrecisionPlan
            from edgeseg.quantize.qdq import quantize_model
            from edgeseg.utils.hashing import sha256_file

            # the whole plan, units included (``plan`` is per component or unit)
            pp = PrecisionPlan.from_dict(self.plan) if self.plan else PrecisionPlan(dict(plan))
            table = None
            if pp.needs_calibration:
                table = self._calibration_table()
                if table is None:
                    raise EdgesegError("the plan runs components in INT8 but no calibration table was found",
                                       f"run `edgeseg calibrate {self.onnx} --images DIR` (it records the table "
                                       "in the manifest), or pass --calib TABLE.json")
                table.check_model(sha256_file(self.onnx), what="ONNX file")
            qmodel, _ = quantize_model(onnx.load(str(self.onnx)), pp, table, activation_dtype="int8")
            out = tmpdir / f"{self.onnx.stem}.{pp.label()}.trt.onnx"
            onnx.save(qmodel, str(out))
            return out, qmodel
        if is_qdq(onnx_model) and "uint8" in activation_types(onnx_model):
            converted, _ = to_int8_activations(onnx.load(str(self.onnx)))
            out = tmpdir / f"{self.onnx.stem}.trt.onnx"
            onnx.save(converted, str(out))
            return out, converted
        return self.onnx, onnx_model

    def open(self) -> None:
        import tempfile

        import onnx

        from edgeseg.export.tensorrt import trtexec as trtexec_lines
        from edgeseg.export.tensorrt.versions import choose_typing
        from edgeseg.quantize.cache import write_trt_cache
        from edgeseg.utils.hashing import sha256_file

        t = self.transport
        self.trtexec = self._find_trtexec()
        found = self._device_tensorrt()
        if found.version is None:
            raise EdgesegError(f"cannot tell the TensorRT version on {self.address}",
                               "check `trtexec --help` runs there (it prints [TensorRT vNNNN]), or that "
                               "`dpkg -l 'libnvinfer*'` lists TensorRT")
        self.trt_version = found.version.text
        self.typing = choose_typing(found.version, self.build_options.typing)
        onnx_model = onnx.load(str(self.onnx), load_external_data=False)
        plan, nodes = self._plan_and_nodes(onnx_model)
        with tempfile.TemporaryDirectory() as tmpdir:
            local_onnx, device_model = self._onnx_for_device(onnx_model, plan, self.typing, Path(tmpdir))
            self.device_model = device_model
            explicit = runners.is_qdq_model(device_model)
            extra = _external_data_files(device_model, self.onnx.parent) if local_onnx == self.onnx else []
            onnx_dir = self.cache.ensure([local_onnx, *extra])
            remote_onnx = f"{onnx_dir}/{local_onnx.name}"

            calib_remote = None
            needs_calib = self.typing == "weak" and bool(plan) and "int8" in plan.values() and not explicit
            if needs_calib:
                table = self._calibration_table()
                if table is None:
                    raise EdgesegError("the plan runs components in INT8 but no calibration table was found",
                                       f"run `edgeseg calibrate {self.onnx} --images DIR` (it records the table "
                                       "in the manifest), or pass --calib TABLE.json")
                table.check_model(sha256_file(self.onnx), what="ONNX file")
                # Written for the device's TensorRT: a cache with another version line is ignored.
                cache_file = Path(tmpdir) / f"{self.onnx.stem}.calib.cache"
                write_trt_cache(table, cache_file, trt_version=self.trt_version)
                calib_remote = f"{self.cache.ensure([cache_file])}/{cache_file.name}"

        if self.typing == "strong":
            self.precision = runners.TrtexecPlan(["--stronglyTyped"], False, "none",
                                                 {p: 0 for p in sorted(set((plan or {}).values()))})
        elif plan:
            self.precision = runners.trtexec_precision(plan, nodes, runners.float_nodes(onnx_model),
                                                       calib=calib_remote, explicit_quantization=explicit)
        else:
            flags = ["--int8", "--fp16"] if explicit else []  # a QDQ graph without a recorded plan
            self.precision = runners.TrtexecPlan(flags, False, "none", {})
        options = trtexec_lines.option_flags(self.build_options)
        key = hashlib.sha256("\0".join([onnx_dir, self.typing, *self.precision.flags, *options,
                                         self.trt_version]).encode()).hexdigest()
        self.engine = f"{t.workdir}/engines/{key[:16]}.engine"
        if self.typing == "strong":
            build = trtexec_lines.strongly_typed_build_argv(self.trtexec, remote_onnx, self.engine, found.version,
                                                            self.build_options)
        else:
            build = trtexec_lines.weak_typed_build_argv(self.trtexec, remote_onnx, self.engine, found.version,
                                                        self.precision.flags, self.build_options)
        self.setup_commands = [quote_argv(build)]
        built = False
        if t.run(["test", "-f", self.engine], 30).rc != 0:
            t.run(["mkdir", "-p", f"{t.workdir}/engines"], 30).check("creating the engine folder")
            res = t.run(build, self.build_timeout_s)
            if res.rc != 0:
                tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-4:])
                raise DeviceError(f"trtexec could not build the engine (exit {res.rc}): {tail}",
                                  f"run the command on the device to see the full log: {quote_argv(build)}")
            built = True
        self._info = {"backend": "tensorrt", "runner": "trtexec", "runner_path": self.trtexec,
                      "tensorrt": self.trt_version, "tensorrt_source": found.source,
                      "tensorrt_python": found.python_bindings, "typing": self.typing,
                      "onnx_pushed": local_onnx.name,
                      "precision_flags": [f if not f.startswith("--layerPrecisions=") else
                                          f"--layerPrecisions=<{sum(self.precision.layers.values())} layers>"
                                          for f in self.precision.flags],
                      "layer_precisions": self.precision.layer_spec_mode, "layers_per_precision": self.precision.layers,
                      "explicit_quantization": explicit, "engine": self.engine, "engine_built_now": built,
                      "calibration_cache": calib_remote or ("none (Q/DQ in the ONNX)" if explicit
                                                            else "none (no implicit INT8)"),
                      "core": self.core if self.core is not None else "not pinned",
                      "affinity": [self.core] if self.core is not None else [],
                      "affinity_source": "taskset mask" if self.core is not None else "not pinned (GPU benchmark)"}
        self.component_profile = self._profile(plan) if self.profile_runs else None
        if self.component_profile:
            self._info.update(_profile_summary(self.component_profile))

    def _profile(self, plan: dict[str, str] | None) -> dict[str, Any]:
        """One profiling run: per-component GPU time and planned-vs-actual precision, or why not."""
        from edgeseg.export.tensorrt import trtexec as trtexec_lines
        from edgeseg.export.tensorrt.layerinfo import parse_layer_information, precision_report
        from edgeseg.export.tensorrt.profile import component_times, parse_trtexec_profile

        t = self.transport
        stem = f"{t.workdir}/profile-{uuid.uuid4().hex[:10]}"
        prof, layers = f"{stem}.profile.json", f"{stem}.layers.json"
        argv = trtexec_lines.profile_argv(self.trtexec, self.engine, self.profile_runs, prof, layers)
        self.setup_commands.append(quote_argv(argv))
        try:
            res = t.run(argv, self.timeout_s)
            got = t.run_script(f"{_CAT_FUNCTION}; f {shlex.quote(prof)}; f {shlex.quote(layers)}; "
                               f"rm -f {shlex.quote(prof)} {shlex.quote(layers)}", 60)
        except DeviceError as e:
            return {"available": False, "reason": e.problem}
        files, _, _ = device_info.parse_probe_output(got.stdout)
        if res.rc != 0 or not files.get(prof):
            tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-2:])
            return {"available": False, "reason": f"trtexec profiling run failed (exit {res.rc}): {tail}"}
        index = self._index(self.device_model)
        info = parse_layer_information(files[layers]) if files.get(layers) else None
        metadata = {layer.name: layer.metadata for layer in info.layers} if info else None
        breakdown = component_times(parse_trtexec_profile(files[prof]), index, plan, metadata)
        out: dict[str, Any] = {"available": True, "iterations": self.profile_runs, **breakdown.to_dict()}
        if info is not None:
            out["precision"] = precision_report(info, index, plan or {}, source="trtexec --exportLayerInfo").to_dict()
        return out

    def runtime_info(self) -> dict[str, Any]:
        return {**self._info, "pushed_files": list(self.cache.pushed)}

    def close(self) -> None:
        self.transport.close()

    # ---------------------------------------------------------------- state
    def device_state(self) -> DeviceState:
        core = self.core if self.core is not None else 0
        res = self.transport.run_script(device_info.probe_script(core, commands=JETSON_COMMANDS), 60)
        files, props, outputs = device_info.parse_probe_output(res.stdout)
        state = device_info.state_from_sources(core, files, props, outputs)
        gpu = parse_gpu_devfreq(outputs.get("gpu_devfreq"))
        state.extra.update({"nvpmodel": parse_nvpmodel(outputs.get("nvpmodel")),
                            "jetson_clocks": jetson_clocks_state(outputs.get("jetson_clocks"), gpu),
                            "l4t": parse_l4t(outputs.get("l4t")),
                            "gpu_freq_mhz": gpu["cur_mhz"] if gpu else UNAVAILABLE})
        return state

    # ---------------------------------------------------------------- measuring
    def measure(self, runs: int, warmup: int) -> Measurement:
        t = self.transport
        stem = f"{t.workdir}/run-{uuid.uuid4().hex[:10]}"
        times, tegra = f"{stem}.times.json", f"{stem}.tegrastats"
        argv = runners.trtexec_time_argv(self.trtexec, self.engine, runs, warmup, times)
        if self.core is not None:
            argv = ["taskset", runners.taskset_mask(self.core), *argv]
        # tegrastats samples clocks, temperatures and rails while trtexec runs.
        script = (f"tp=; if command -v tegrastats >/dev/null 2>&1; then "
                  f"tegrastats --interval 200 > {shlex.quote(tegra)} 2>&1 & tp=$!; fi; "
                  f"{quote_argv(argv)}; rc=$?; [ -n \"$tp\" ] && kill $tp 2>/dev/null; exit $rc")
        try:
            res = t.run(["sh", "-c", script], self.timeout_s)
            output = res.stdout + "\n" + res.stderr
            if res.rc != 0:
                raise DeviceError(f"trtexec exited with {res.rc}: "
                                  f"{' | '.join(output.strip().splitlines()[-3:]) or 'no output'}",
                                  f"run it on the device to see why: {quote_argv(argv)}")
            summary = parsers.parse_trtexec(output)
            extra: dict[str, Any] = summary.extra()
            # One round trip: both result files, then remove them.
            got = t.run_script(f"{_CAT_FUNCTION}; f {shlex.quote(times)}; f {shlex.quote(tegra)}; "
                               f"rm -f {shlex.quote(times)} {shlex.quote(tegra)}", 60)
            files, _, _ = device_info.parse_probe_output(got.stdout)
            if files.get(times):
                samples = parsers.parse_trtexec_times(files[times])
                if len(samples) <= warmup:
                    raise DeviceError(f"trtexec timed {len(samples)} runs, fewer than the {warmup} warm-up runs",
                                      "raise --runs")
                stats = LatencyStats.from_samples(samples[warmup:], warmup=warmup)
                extra["samples_source"] = "trtexec --exportTimes latencyMs (H2D + compute + D2H)"
            else:
                stats = summary.stats("Latency", warmup=warmup)  # no trace: the summary, honestly labelled
            lines = [ln for ln in (files.get(tegra) or "").splitlines() if ln.strip()]
            extra["tegrastats"] = parsers.summarize_tegrastats([parsers.parse_tegrastats_line(ln) for ln in lines])
        except BaseException:
            try:
                t.run(["rm", "-f", times, tegra], 30)
            except DeviceError:
                pass  # the device is gone; the harness reports that
            raise
        return Measurement(stats, command=quote_argv(argv), extra=extra, output=output)


_CAT_FUNCTION = device_info.probe_script(None).splitlines()[0]  # f(): print a file between markers


def _external_data_files(model, folder: Path) -> list[Path]:
    """Files holding the ONNX's external tensors (large models), which must travel with it."""
    names = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                names.add(entry.value)
    files = []
    for n in sorted(names):
        p = folder / n
        if not p.is_file():
            raise EdgesegError(f"external data file {n} of {folder} is missing", "re-export the model")
        files.append(p)
    return files


def _has_fp16(model) -> bool:
    """An ONNX already carrying fp16 components (``edgeseg quantize`` with fp16 parts): the plan is inside."""
    import onnx

    to_fp16 = [n for n in model.graph.node if n.op_type == "Cast"
               and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)]
    return bool(to_fp16) or any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def _profile_summary(profile: dict[str, Any]) -> dict[str, str]:
    """One-line runtime rows for the report tables; the full breakdown goes to the report's extra."""
    if not profile.get("available"):
        return {"per_component_ms": f"unavailable ({profile.get('reason')})"}
    comps = profile.get("components", [])
    out = {"per_component_ms": ", ".join(f"{c['component']} {c['average_ms']:.3f}" for c in comps)
                                + f" (sum {profile.get('total_ms', 0):.3f}, trtexec --exportProfile)"}
    if profile.get("precision"):
        out["precision_vs_plan"] = "; ".join(f"{c['component']}: {c['verdict']}"
                                             for c in profile["precision"]["components"])
    return out
