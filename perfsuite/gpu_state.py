"""The GPU's state around each measurement (NVML): clocks, temperature, power and throttle reasons.

A GPU that throttles runs slower: a measurement taken then reads as a regression. So every cell on a GPU
records the state before and after its loop, and a loop measured while throttled is re-measured once
(nvbench flags a run below 75 % of the default SM clock, and checks suspects against the clock). NVML comes
from the optional ``nvidia-ml-py`` package (module ``pynvml``); without it, or on a CPU, these fields are
``null`` — never guessed. Tests pass a fake module with the same functions.
"""

from __future__ import annotations

from typing import Any

from perfsuite.machine import nvml_initialised

THROTTLED_BELOW = 0.75  # an SM clock below this share of the maximum is throttling (nvbench's threshold)
# nvmlClocksEventReasons / nvmlClocksThrottleReasons bits, and the ones that mean the GPU was slowed down.
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
           0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}
SLOWING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                     "hw_power_brake_slowdown"})
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0  # pynvml's constants, so a fake needs none


class GpuMonitor:
    """Reads one GPU's state through NVML (``nvml``: the pynvml module, or a fake with its functions)."""

    def __init__(self, nvml, handle):
        self.nvml, self.handle = nvml, handle
        self.max_sm_clock_mhz = nvml.nvmlDeviceGetMaxClockInfo(handle, NVML_CLOCK_SM)

    def read(self) -> dict[str, Any]:
        n, h = self.nvml, self.handle
        reasons_fn = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            n, "nvmlDeviceGetCurrentClocksThrottleReasons")
        bits = int(reasons_fn(h))
        return {"sm_clock_mhz": n.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM),
                "mem_clock_mhz": n.nvmlDeviceGetClockInfo(h, NVML_CLOCK_MEM),
                "max_sm_clock_mhz": self.max_sm_clock_mhz,
                "temperature_c": n.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU),
                "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "throttle_reasons": [name for bit, name in REASONS.items() if bits & bit]}


def throttled(state: dict[str, Any] | None) -> str | None:
    """Why a state counts as throttled (clock below THROTTLED_BELOW of the maximum, or a slowing reason), or None."""
    if not state:
        return None
    slowing = sorted(SLOWING & set(state.get("throttle_reasons") or ()))
    if slowing:
        return ", ".join(slowing)
    clock, top = state.get("sm_clock_mhz"), state.get("max_sm_clock_mhz")
    if clock and top and clock < THROTTLED_BELOW * top:
        return f"SM clock {clock} MHz below {THROTTLED_BELOW:.0%} of its {top} MHz maximum"
    return None


def monitor_for(device: str, nvml=None) -> GpuMonitor | None:
    """The monitor of the GPU torch uses for ``device`` (found by its UUID, so CUDA_VISIBLE_DEVICES is honoured),
    or None: on a CPU, without nvidia-ml-py, or when NVML cannot be used."""
    if not device.startswith("cuda"):
        return None
    nvml = nvml_initialised(nvml)
    if nvml is None:
        return None
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        return GpuMonitor(nvml, nvml.nvmlDeviceGetHandleByUUID(uuid))
    except Exception:  # NVML present but unusable (no driver, no permission, old torch): unknown, not an error
        return None


def state_fields(before: dict | None, after: dict | None) -> dict[str, Any]:
    """What a cell records: the state around its loop and whether it was throttled (all None on a CPU)."""
    return {"gpu_state_before": before, "gpu_state_after": after,
            "gpu_throttled": throttled(before) or throttled(after)}


def watched(measure, monitor: GpuMonitor | None):
    """Run ``measure()`` with the GPU's state read before and after; measured again once if the GPU throttled.
    Returns (its result, the state fields a record carries)."""
    if monitor is None:
        return measure(), state_fields(None, None) | {"remeasured_throttled": False}
    before = monitor.read()
    result = measure()
    after = monitor.read()
    remeasured = bool(throttled(before) or throttled(after))
    if remeasured:
        before = monitor.read()
        result = measure()
        after = monitor.read()
    return result, state_fields(before, after) | {"remeasured_throttled": remeasured}
