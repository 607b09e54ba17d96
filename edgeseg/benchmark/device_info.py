"""Device facts and state: CPU model, SoC, governor, frequencies, temperatures.

The same parsing serves every target. The local target reads the files directly; remote
targets run one probe script (:func:`probe_script`) over their transport and hand its
output to :func:`parse_probe_output`. Either way the result is a :class:`DeviceState`
built by :func:`state_from_sources`. Anything that cannot be read is recorded as
``"unavailable"``: never guessed, never defaulted to a plausible number.
"""

from __future__ import annotations

import datetime as _dt
import glob
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

UNAVAILABLE = "unavailable"

# ARM MIDR implementer/part numbers of common mobile and Jetson cores, so a report says
# "Cortex-A78" rather than "0xd41". Unknown parts are shown by their raw numbers.
_ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x4E, 0x004): "NVIDIA Carmel",
    (0x51, 0x801): "Kryo 2xx Silver", (0x51, 0x800): "Kryo 2xx Gold",
    (0x51, 0x803): "Kryo 3xx Silver", (0x51, 0x802): "Kryo 3xx Gold",
    (0x51, 0x805): "Kryo 4xx/5xx Silver", (0x51, 0x804): "Kryo 4xx/5xx Gold",
}

# Files that describe the board/SoC, tried in order (first readable one wins).
_MODEL_FILES = ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model",
                "/sys/class/dmi/id/product_name")
_SOC_FILES = ("/sys/devices/soc0/machine", "/sys/devices/soc0/soc_id", "/sys/devices/soc0/family")

# Android properties, most specific first.
_MODEL_PROPS = ("ro.product.model",)
_SOC_PROPS = ("ro.soc.model", "ro.board.platform", "ro.hardware.chipname", "ro.hardware")
ANDROID_PROPS = ("ro.product.manufacturer", "ro.product.model", "ro.soc.manufacturer", "ro.soc.model",
                 "ro.board.platform", "ro.hardware.chipname", "ro.hardware", "ro.build.version.release",
                 "ro.build.fingerprint")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class DeviceState:
    """What the device was and how it was running at one moment (before or after a run)."""

    model: str = UNAVAILABLE
    soc: str = UNAVAILABLE
    cpu_model: str = UNAVAILABLE
    core: int | None = None
    governor: str = UNAVAILABLE
    cur_freq_mhz: float | str = UNAVAILABLE
    max_freq_mhz: float | str = UNAVAILABLE
    temperatures_c: dict[str, float] | str = UNAVAILABLE
    # int8-relevant instruction sets (benchmark/cpu_isa.py): VNNI or not decides whether
    # ONNX Runtime's fused x86 int8 kernels saturate; dot product / I8MM on ARM.
    isa: dict[str, Any] | str = UNAVAILABLE
    extra: dict[str, Any] = field(default_factory=dict)  # nvpmodel, jetson_clocks, Android release...
    time: str = field(default_factory=_now)

    @property
    def max_temperature_c(self) -> float | None:
        if isinstance(self.temperatures_c, dict) and self.temperatures_c:
            return max(self.temperatures_c.values())
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "soc": self.soc, "cpu_model": self.cpu_model, "core": self.core,
                "governor": self.governor, "cur_freq_mhz": self.cur_freq_mhz,
                "max_freq_mhz": self.max_freq_mhz, "temperatures_c": self.temperatures_c,
                "isa": dict(self.isa) if isinstance(self.isa, dict) else self.isa,
                "extra": dict(self.extra), "time": self.time}

    @property
    def isa_summary(self) -> str:
        if isinstance(self.isa, dict):
            return f"{self.isa.get('summary', '?')} (int8: {self.isa.get('int8_dot', '?')})"
        return str(self.isa)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeviceState":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# --------------------------------------------------------------------------- parsing
def cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as a list of key/value blocks (one per processor, plus global ones)."""
    blocks, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            cur[k.strip().lower()] = v.strip()
    if cur:
        blocks.append(cur)
    return blocks


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        return None


def cpu_model_from_cpuinfo(text: str, core: int | None) -> str:
    """The CPU model of ``core`` (x86 ``model name``; ARM implementer/part decoded)."""
    blocks = cpuinfo_blocks(text)
    procs = [b for b in blocks if "processor" in b and _int(b["processor"]) is not None]
    block = next((b for b in procs if core is not None and _int(b["processor"]) == core), None)
    if block is None and procs:
        block = procs[0] if core is None else None
    if block is None:
        return UNAVAILABLE
    if block.get("model name"):
        return block["model name"]
    impl, part = _int(block.get("cpu implementer", "")), _int(block.get("cpu part", ""))
    if impl is not None and part is not None:
        name = _ARM_PARTS.get((impl, part))
        raw = f"implementer {impl:#x} part {part:#05x}"
        return f"{name} ({raw})" if name else raw
    return UNAVAILABLE


def hardware_from_cpuinfo(text: str) -> str | None:
    """The ``Hardware`` line of older ARM kernels (e.g. 'Qualcomm Technologies, Inc SM7325')."""
    for block in cpuinfo_blocks(text):
        if block.get("hardware"):
            return block["hardware"]
    return None


def khz_to_mhz(text: str | None) -> float | str:
    v = _int((text or "").strip())
    return round(v / 1000.0, 1) if v is not None and v > 0 else UNAVAILABLE


def thermal_zones(files: dict[str, str | None]) -> dict[str, float]:
    """``{zone type: °C}`` from ``/sys/class/thermal/thermal_zoneN/{type,temp}`` contents."""
    temps: dict[str, float] = {}
    for path, content in files.items():
        m = re.fullmatch(r"(.*/thermal_zone\d+)/temp", path)
        if not m or content is None:
            continue
        raw = _int(content.strip())
        if raw is None:
            continue
        # sysfs reports millidegrees Celsius; a few drivers report whole degrees.
        celsius = raw / 1000.0 if abs(raw) >= 1000 else float(raw)
        kind = (files.get(f"{m.group(1)}/type") or "").strip() or os.path.basename(m.group(1))
        name, i = kind, 2
        while name in temps:  # several zones can share a type ("cpu-1-0-usr" is unique, "tsens" is not)
            name, i = f"{kind}#{i}", i + 1
        temps[name] = round(celsius, 1)
    return temps


def thermalservice_temperatures(text: str | None) -> dict[str, float]:
    """Temperatures from ``dumpsys thermalservice`` (``Temperature{mValue=.., mName=..}`` lines).

    Only the "Current temperatures from HAL" block is read when present, so cached
    or threshold entries elsewhere in the dump are not mistaken for readings.
    """
    if not text:
        return {}
    section = text
    m = re.search(r"Current temperatures from HAL:(.*?)(?:\n\S[^\n]*:\s*\n|\Z)", text, re.S)
    if m:
        section = m.group(1)
    temps: dict[str, float] = {}
    for entry in re.finditer(r"Temperature\{([^}]*)\}", section):
        fields = dict(kv.split("=", 1) for kv in (x.strip() for x in entry.group(1).split(",")) if "=" in kv)
        try:
            value = float(fields.get("mValue", "nan"))
        except ValueError:
            continue
        if value != value:  # NaN: the HAL has no reading for this sensor
            continue
        temps[fields.get("mName", f"sensor{len(temps)}")] = round(value, 1)
    return temps


def state_from_sources(core: int | None, files: dict[str, str | None],
                       props: dict[str, str | None] | None = None,
                       commands: dict[str, str | None] | None = None) -> DeviceState:
    """Build a :class:`DeviceState` from raw file contents, Android properties and command outputs."""
    props = {k: (v or "").strip() for k, v in (props or {}).items()}
    commands = commands or {}
    cpuinfo = files.get("/proc/cpuinfo") or ""

    def first_file(paths) -> str | None:
        for p in paths:
            v = (files.get(p) or "").replace("\x00", "").strip()
            if v:
                return v
        return None

    def first_prop(names) -> str | None:
        return next((props[n] for n in names if props.get(n)), None)

    manufacturer = props.get("ro.product.manufacturer") or ""
    model = first_prop(_MODEL_PROPS)
    if model and manufacturer and not model.lower().startswith(manufacturer.lower()):
        model = f"{manufacturer} {model}"
    model = model or first_file(_MODEL_FILES) or UNAVAILABLE

    soc = first_prop(_SOC_PROPS)
    if soc and props.get("ro.soc.manufacturer") and "ro.soc.model" in props and soc == props.get("ro.soc.model"):
        soc = f"{props['ro.soc.manufacturer']} {soc}"
    soc = soc or hardware_from_cpuinfo(cpuinfo) or first_file(_SOC_FILES) or UNAVAILABLE

    state = DeviceState(model=model, soc=soc, core=core,
                        cpu_model=cpu_model_from_cpuinfo(cpuinfo, core) if cpuinfo else UNAVAILABLE)
    from edgeseg.benchmark.cpu_isa import isa_from_cpuinfo

    isa = isa_from_cpuinfo(cpuinfo, core) if cpuinfo else None
    if isa is not None:
        state.isa = isa.to_dict()
    if core is not None:
        base = f"/sys/devices/system/cpu/cpu{core}/cpufreq"
        gov = (files.get(f"{base}/scaling_governor") or "").strip()
        state.governor = gov or UNAVAILABLE
        state.cur_freq_mhz = khz_to_mhz(files.get(f"{base}/scaling_cur_freq"))
        state.max_freq_mhz = khz_to_mhz(files.get(f"{base}/cpuinfo_max_freq"))
        scaling_max = khz_to_mhz(files.get(f"{base}/scaling_max_freq"))
        if scaling_max != UNAVAILABLE and scaling_max != state.max_freq_mhz:
            # A capped scaling_max_freq (thermal or power policy) explains slow runs.
            state.extra["scaling_max_freq_mhz"] = scaling_max
    temps = thermal_zones(files) or thermalservice_temperatures(commands.get("thermalservice"))
    state.temperatures_c = temps or UNAVAILABLE
    if props.get("ro.build.version.release"):
        state.extra["android_release"] = props["ro.build.version.release"]
    return state


# --------------------------------------------------------------------------- local
def core_files(core: int | None) -> list[str]:
    paths = ["/proc/cpuinfo", *_MODEL_FILES, *_SOC_FILES]
    if core is not None:
        base = f"/sys/devices/system/cpu/cpu{core}/cpufreq"
        paths += [f"{base}/{n}" for n in ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq",
                                          "scaling_max_freq")]
    return paths


def _read(path: str) -> str | None:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def local_state(core: int | None) -> DeviceState:
    """This machine's state, read straight from /proc and /sys."""
    files = {p: _read(p) for p in core_files(core)}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        files[f"{zone}/type"] = _read(f"{zone}/type")
        files[f"{zone}/temp"] = _read(f"{zone}/temp")
    state = state_from_sources(core, files)
    if state.isa == UNAVAILABLE:  # no readable /proc/cpuinfo: lscpu, else the architecture alone
        from edgeseg.benchmark.cpu_isa import host_isa

        state.isa = host_isa().to_dict()
    state.extra["kernel"] = os.uname().release
    return state


def local_max_freqs(cores: list[int]) -> dict[int, int | None]:
    """``cpuinfo_max_freq`` (kHz) of each core, ``None`` where cpufreq is not exposed."""
    out = {}
    for c in cores:
        raw = _read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq")
        out[c] = _int(raw.strip()) if raw else None
    return out


def pick_prime_core(max_freqs: dict[int, int | None]) -> int:
    """The fastest core: highest ``cpuinfo_max_freq``; ties (or no cpufreq) -> highest index.

    On big.LITTLE phones the prime core is the one with the highest maximum frequency
    (Snapdragon 778G: cpu7 at 2.4 GHz). The highest index breaks ties because cpu0
    usually takes most interrupts.
    """
    if not max_freqs:
        raise ValueError("no cores to choose from")
    return max(max_freqs, key=lambda c: (max_freqs[c] or 0, c))


# --------------------------------------------------------------------------- remote probe
MARK = "@@edgeseg@@"


def probe_script(core: int | None, props: tuple[str, ...] = (),
                 commands: dict[str, str] | None = None, all_max_freqs: bool = False) -> str:
    """A POSIX ``sh`` script printing every file, property and command output the state needs.

    One round trip per probe matters on adb/ssh (each connection costs tens of ms, and
    the device state should be a snapshot, not a slow walk). Output sections start with
    ``@@edgeseg@@ F|P|C <name>``; unreadable items print ``@@edgeseg@@ MISSING``.
    """
    lines = [
        f"f() {{ echo '{MARK} F '\"$1\"; v=$(cat \"$1\" 2>/dev/null) && printf '%s\\n' \"$v\" "
        f"|| echo '{MARK} MISSING'; }}",
    ]
    for p in core_files(core):
        lines.append(f"f {shlex.quote(p)}")
    lines.append('for z in /sys/class/thermal/thermal_zone*; do [ -e "$z" ] || continue; '
                 'f "$z/type"; f "$z/temp"; done')
    if all_max_freqs:
        lines.append('for c in /sys/devices/system/cpu/cpu[0-9]*; do f "$c/cpufreq/cpuinfo_max_freq"; done')
    for prop in props:
        lines.append(f"echo '{MARK} P {prop}'; getprop {shlex.quote(prop)} 2>/dev/null || echo '{MARK} MISSING'")
    for name, cmd in (commands or {}).items():
        # The command runs in a subshell so a failing or missing tool cannot end the probe.
        lines.append(f"echo '{MARK} C {name}'; ( {cmd} ) 2>&1 || echo '{MARK} MISSING'")
    lines.append(f"echo '{MARK} END'")
    return "\n".join(lines) + "\n"


def parse_probe_output(text: str) -> tuple[dict[str, str | None], dict[str, str | None], dict[str, str | None]]:
    """Split probe output into (files, props, commands); unreadable items map to ``None``."""
    sections: dict[str, dict[str, str | None]] = {"F": {}, "P": {}, "C": {}}
    kind = name = None
    buf: list[str] = []

    def flush():
        if kind is not None:
            value: str | None = "\n".join(buf)
            if buf and buf[-1].strip() == f"{MARK} MISSING":
                value = None if len(buf) == 1 else "\n".join(buf[:-1])
            sections[kind][name] = value  # type: ignore[index]

    for line in text.splitlines():
        if line.startswith(f"{MARK} ") and not line.startswith(f"{MARK} MISSING"):
            flush()
            parts = line.split(" ", 2)
            kind, name, buf = (parts[1], parts[2] if len(parts) > 2 else "", [])
            if kind == "END":
                kind = None
            elif kind not in sections:
                kind = None
            continue
        if kind is not None:
            buf.append(line)
    flush()
    return sections["F"], sections["P"], sections["C"]


def max_freqs_from_files(files: dict[str, str | None]) -> dict[int, int | None]:
    """``{core: cpuinfo_max_freq kHz}`` from probe output (``all_max_freqs=True``)."""
    out: dict[int, int | None] = {}
    for path, content in files.items():
        m = re.fullmatch(r"/sys/devices/system/cpu/cpu(\d+)/cpufreq/cpuinfo_max_freq", path)
        if m:
            out[int(m.group(1))] = _int((content or "").strip()) if content else None
    return out
