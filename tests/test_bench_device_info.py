import subprocess

from edgeseg.benchmark import device_info as di

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 38.40
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x2
CPU part\t: 0xd05
CPU revision\t: 0

processor\t: 7
BogoMIPS\t: 38.40
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd41
CPU revision\t: 0

Hardware\t: Qualcomm Technologies, Inc SM7325
"""

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
"""

THERMALSERVICE = """\
IsStatusOverride: false
Thermal Status: 0
Cached temperatures:
\tTemperature{mValue=99.0, mType=3, mName=stale, mStatus=0}
HAL Ready: true
Current temperatures from HAL:
\tTemperature{mValue=41.5, mType=0, mName=cpu-1-3-usr, mStatus=0}
\tTemperature{mValue=33.2, mType=3, mName=skin, mStatus=0}
\tTemperature{mValue=NaN, mType=2, mName=battery, mStatus=0}
Current cooling devices from HAL:
\tCoolingDevice{mValue=0, mType=2, mName=battery}
"""


def test_cpu_model_decodes_arm_parts_per_core():
    assert di.cpu_model_from_cpuinfo(ARM_CPUINFO, 7).startswith("Cortex-A78")
    assert di.cpu_model_from_cpuinfo(ARM_CPUINFO, 0).startswith("Cortex-A55")
    assert di.cpu_model_from_cpuinfo(ARM_CPUINFO, 3) == di.UNAVAILABLE  # core not listed: not guessed
    assert di.cpu_model_from_cpuinfo(X86_CPUINFO, 1) == "Intel(R) Xeon(R) CPU @ 2.20GHz"
    assert di.hardware_from_cpuinfo(ARM_CPUINFO) == "Qualcomm Technologies, Inc SM7325"


def test_thermal_zones_units_and_duplicate_types():
    files = {
        "/sys/class/thermal/thermal_zone0/type": "cpu-1-0-usr\n", "/sys/class/thermal/thermal_zone0/temp": "45200\n",
        "/sys/class/thermal/thermal_zone1/type": "tsens\n", "/sys/class/thermal/thermal_zone1/temp": "38\n",
        "/sys/class/thermal/thermal_zone2/type": "tsens\n", "/sys/class/thermal/thermal_zone2/temp": "39000",
        "/sys/class/thermal/thermal_zone3/type": "broken\n", "/sys/class/thermal/thermal_zone3/temp": None,
    }
    t = di.thermal_zones(files)
    assert t == {"cpu-1-0-usr": 45.2, "tsens": 38.0, "tsens#2": 39.0}


def test_thermalservice_reads_only_hal_block_and_skips_nan():
    assert di.thermalservice_temperatures(THERMALSERVICE) == {"cpu-1-3-usr": 41.5, "skin": 33.2}
    assert di.thermalservice_temperatures("") == {}


def test_state_from_android_sources():
    core = 7
    base = f"/sys/devices/system/cpu/cpu{core}/cpufreq"
    files = {"/proc/cpuinfo": ARM_CPUINFO, f"{base}/scaling_governor": "schedutil\n",
             f"{base}/scaling_cur_freq": "2400000\n", f"{base}/cpuinfo_max_freq": "2400000\n",
             f"{base}/scaling_max_freq": "1804800\n"}
    props = {"ro.product.manufacturer": "samsung", "ro.product.model": "SM-A536B", "ro.soc.manufacturer": "QTI",
             "ro.soc.model": "SM7325", "ro.build.version.release": "13"}
    st = di.state_from_sources(core, files, props, {"thermalservice": THERMALSERVICE})
    assert st.model == "samsung SM-A536B"
    assert st.soc == "QTI SM7325"
    assert st.cpu_model.startswith("Cortex-A78")
    assert st.governor == "schedutil"
    assert st.cur_freq_mhz == 2400.0 and st.max_freq_mhz == 2400.0
    assert st.extra["scaling_max_freq_mhz"] == 1804.8  # capped: worth seeing in a report
    assert st.temperatures_c == {"cpu-1-3-usr": 41.5, "skin": 33.2}  # thermal zones unreadable -> dumpsys
    assert st.extra["android_release"] == "13"


def test_state_unreadable_everything_is_unavailable():
    st = di.state_from_sources(2, {})
    for attr in ("model", "soc", "cpu_model", "governor", "cur_freq_mhz", "max_freq_mhz", "temperatures_c"):
        assert getattr(st, attr) == di.UNAVAILABLE, attr
    assert st.core == 2


def test_pick_prime_core():
    # Snapdragon 778G: 4x A55 @1.8, 3x A78 @2.2, 1x A78 @2.4 -> cpu7
    freqs = {0: 1804800, 1: 1804800, 2: 1804800, 3: 1804800, 4: 2208000, 5: 2208000, 6: 2208000, 7: 2400000}
    assert di.pick_prime_core(freqs) == 7
    assert di.pick_prime_core({0: None, 1: None, 2: None}) == 2  # no cpufreq: highest index
    assert di.pick_prime_core({0: 2000, 1: 3000, 2: 3000}) == 2


def test_probe_script_round_trip_through_real_sh(tmp_path):
    """The probe script runs in a real POSIX sh and its output parses back."""
    script = di.probe_script(0, props=("ro.product.model",), commands={"echo": "echo hello; echo world",
                                                                      "missing": "no-such-tool-xyz"},
                             all_max_freqs=True)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout
    files, props, commands = di.parse_probe_output(out)
    assert files["/proc/cpuinfo"] == open("/proc/cpuinfo").read().rstrip("\n")
    assert commands["echo"] == "hello\nworld"
    assert "no-such-tool-xyz" in (commands["missing"] or "")  # sh's "not found" message, kept
    assert props["ro.product.model"] is None  # no getprop on this host: missing, not empty
    # cpufreq missing on this VM -> None, present elsewhere -> a number; never invented
    for path in [p for p in files if p.endswith("scaling_governor")]:
        assert files[path] is None or files[path].strip()


def test_parse_probe_output_missing_and_multiline():
    text = ("@@edgeseg@@ F /a\nline1\nline2\n@@edgeseg@@ F /b\n@@edgeseg@@ MISSING\n"
            "@@edgeseg@@ P ro.x\nvalue\n@@edgeseg@@ C tool\nout\n@@edgeseg@@ MISSING\n@@edgeseg@@ END\n")
    files, props, commands = di.parse_probe_output(text)
    assert files == {"/a": "line1\nline2", "/b": None}
    assert props == {"ro.x": "value"}
    assert commands == {"tool": "out"}  # output kept even when the command failed


def test_local_state_reads_this_machine():
    st = di.local_state(0)
    assert st.core == 0
    expected = di.cpu_model_from_cpuinfo(open("/proc/cpuinfo").read(), 0)
    assert st.cpu_model == expected
    assert st.extra["kernel"]
    gov = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    try:
        want = open(gov).read().strip()
    except OSError:
        want = di.UNAVAILABLE
    assert st.governor == want


def test_local_max_freqs_none_or_positive():
    for v in di.local_max_freqs([0]).values():
        assert v is None or v > 0
