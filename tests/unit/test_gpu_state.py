"""GPU state per cell from NVML, tested with a fake NVML: clocks, throttling, one re-measurement; null on a CPU."""

import pytest
import synthetic as syn
import torch

from perfsuite.gpu_state import GpuMonitor, monitor_for, throttled, watched
from perfsuite.timing import RoundPolicy
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
                      gpu=GpuMonitor(FakeNVML([1800, 1790]), "h"))
    with torch.inference_mode():
        record = run_latency_cell(None, cell, ctx)
    assert record.get("gpu_state_before")["sm_clock_mhz"] == 1800
    assert record.get("gpu_state_after")["sm_clock_mhz"] == 1790 and record.get("gpu_throttled") is None
