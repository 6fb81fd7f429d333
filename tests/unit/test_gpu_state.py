"""GPU state per cell from NVML, tested with a fake NVML: clocks, throttling, one re-measurement; null on a CPU."""

import pytest
import synthetic as syn
import torch

from perfsuite.measure.gpu_state import GpuMonitor, monitor_for, throttled, throttled_during, watched
from perfsuite.measure.machine import driver_version, nvml_initialised
from perfsuite.measure.timing import RoundPolicy, round_robin
from perfsuite.workloads.latency import run_latency_cell
from perfsuite.workloads.context import CellContext


class FakeNVML:
    """pynvml's functions over scripted readings: each read takes the next SM clock and throttle bits."""

    def __init__(self, clocks, reasons=None):
        self.clocks, self.reasons, self.reads = list(clocks), list(reasons or [0] * len(clocks)), 0

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetClockInfo(self, handle, kind):
        if kind == 1:  # SM
            self.reads += 1
            return self.clocks[min(self.reads - 1, len(self.clocks) - 1)]
        return 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons[min(self.reads, len(self.reasons) - 1)]

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 61

    def nvmlDeviceGetPowerUsage(self, handle):
        return 412_000  # mW


def test_a_reading_has_clocks_temperature_power_and_reasons():
    state = GpuMonitor(FakeNVML([1755], reasons=[0x4 | 0x1]), "h").read()
    assert state == {"sm_clock_mhz": 1755, "mem_clock_mhz": 2619, "max_sm_clock_mhz": 1980, "temperature_c": 61,
                     "power_w": 412.0, "throttle_reasons": ["gpu_idle", "sw_power_cap"]}


@pytest.mark.parametrize("state, reason", [
    ({"sm_clock_mhz": 1755, "max_sm_clock_mhz": 1980, "throttle_reasons": []}, None),
    ({"sm_clock_mhz": 1400, "max_sm_clock_mhz": 1980, "throttle_reasons": []}, "SM clock 1400 MHz below 75%"),
    ({"sm_clock_mhz": 1900, "max_sm_clock_mhz": 1980, "throttle_reasons": ["hw_thermal_slowdown"]},
     "hw_thermal_slowdown"),
    ({"sm_clock_mhz": 1900, "max_sm_clock_mhz": 1980, "throttle_reasons": ["gpu_idle"]}, None),
    ({"sm_clock_mhz": 1700, "max_sm_clock_mhz": 1980, "throttle_reasons": ["sw_power_cap"]}, None),  # at its limit
    ({"sm_clock_mhz": 1400, "max_sm_clock_mhz": 1980, "throttle_reasons": ["sw_power_cap"]}, "SM clock 1400 MHz"),
    (None, None),
])
def test_throttling_is_a_low_clock_or_a_slowing_reason(state, reason):
    got = throttled(state)
    assert (got is None) if reason is None else got.startswith(reason)


def test_a_loop_measured_while_throttled_is_measured_again_once():
    runs = []
    monitor = GpuMonitor(FakeNVML([1900, 1300, 1900, 1900]), "h")  # the first loop ends throttled
    result, fields = watched(lambda: runs.append(1) or len(runs), monitor)
    assert result == 2 and len(runs) == 2 and fields["remeasured_throttled"]
    assert fields["gpu_state_before"]["sm_clock_mhz"] == 1900 and fields["gpu_throttled"] is None
    steady = GpuMonitor(FakeNVML([1900] * 4), "h")
    assert watched(lambda: "once", steady)[1]["remeasured_throttled"] is False


def test_on_a_cpu_there_is_no_monitor_and_nothing_is_faked():
    assert monitor_for("cpu") is None
    result, fields = watched(lambda: 3, None)
    assert result == 3 and fields == {"gpu_state_before": None, "gpu_state_after": None, "gpu_throttled": None,
                                      "remeasured_throttled": False}


def test_a_latency_group_records_the_state_around_its_loop():
    cell = syn.cell("lora")
    ctx = CellContext(policy=lambda c: RoundPolicy.fixed(2), cells=[cell, syn.cell("none")],
                      gpu=GpuMonitor(FakeNVML([1980, 1800, 1790]), "h"))  # idle, after warm-up, after the loop
    with torch.inference_mode():
        record = run_latency_cell(None, cell, ctx)
    assert record.get("gpu_state_before")["sm_clock_mhz"] == 1800  # read after the warm-up
    assert record.get("gpu_state_after")["sm_clock_mhz"] == 1790 and record.get("gpu_throttled") is None


class Violation:
    def __init__(self, ns, at_us):
        self.violationTime, self.referenceTime = ns, at_us


class CountingNVML(FakeNVML):
    """FakeNVML with NVML's violation counters: per reading, cumulative thermal and power time (ns), one second
    apart; and a count of nvmlInit calls."""

    def __init__(self, clocks, reasons=None, thermal_ns=None, power_ns=None):
        super().__init__(clocks, reasons)
        self.thermal_ns, self.power_ns = list(thermal_ns or [0]), list(power_ns or [0])
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlSystemGetDriverVersion(self):
        return "550.54"

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        i = max(0, self.reads - 1)
        series = {0: self.power_ns, 1: self.thermal_ns}.get(policy)
        if series is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return Violation(series[min(i, len(series) - 1)], 1_000_000 * i)


def test_a_slowdown_in_the_middle_of_the_loop_is_seen_by_the_violation_counters():
    """Clocks at full speed when read before and after, but 80 ms of thermal slowdown in between: re-measured."""
    nvml = CountingNVML([1900] * 4, thermal_ns=[0, 80_000_000, 80_000_000, 80_000_000])
    runs = []
    result, fields = watched(lambda: runs.append(1) or len(runs), GpuMonitor(nvml, "h"))
    assert fields["remeasured_throttled"] and len(runs) == 2 and result == 2
    assert fields["gpu_throttled"] is None  # the second loop ran at speed
    assert fields["gpu_state_after"]["violation_ns"]["thermal"] == 80_000_000


def test_the_power_cap_at_high_load_is_not_throttling_unless_the_clock_falls():
    """A heavy fp16 loop at its power limit: sw_power_cap set and power violation time growing, clocks at 86 %."""
    capped = CountingNVML([1700] * 4, reasons=[0x4] * 4, power_ns=[0, 600_000_000, 900_000_000, 1_200_000_000])
    _, fields = watched(lambda: None, GpuMonitor(capped, "h"))
    assert fields["gpu_throttled"] is None and not fields["remeasured_throttled"]
    slowed = CountingNVML([1700, 1300, 1700, 1700], reasons=[0x4] * 4, power_ns=[0, 600_000_000])
    _, fields = watched(lambda: None, GpuMonitor(slowed, "h"))
    assert fields["remeasured_throttled"]


def test_throttling_over_a_loop_from_its_counters():
    def state(thermal_ns, at_us, clock=1900):
        return {"sm_clock_mhz": clock, "max_sm_clock_mhz": 1980, "throttle_reasons": [],
                "violation_ns": {"thermal": thermal_ns, "power": 0, "at_us": at_us}}

    assert throttled_during(state(0, 0), state(5_000_000, 1_000_000)) is None  # 0.5 % of the loop: noise
    assert throttled_during(state(0, 0), state(50_000_000, 1_000_000)).startswith("thermal violation for 50.0 ms")
    assert throttled_during(state(0, 0), state(0, 1_000_000, clock=1200)).startswith("SM clock 1200")
    assert throttled_during(None, None) is None


def test_the_monitor_reads_after_the_warm_up_of_the_loop_it_watches():
    nvml = CountingNVML([1980, 1850, 1840])
    _, fields = watched(lambda: round_robin({"a": lambda: None}, device="cpu", policy=RoundPolicy.fixed(1, warmup=3)),
                        GpuMonitor(nvml, "h"))
    assert fields["gpu_state_before"]["sm_clock_mhz"] == 1850 and fields["gpu_state_after"]["sm_clock_mhz"] == 1840


def test_nvml_is_initialised_once_per_process():
    nvml = CountingNVML([1900])
    for _ in range(3):
        assert nvml_initialised(nvml) is nvml
        assert driver_version(nvml) == "550.54"
    assert nvml.inits == 1
