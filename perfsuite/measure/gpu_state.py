"""The GPU's state around each measurement (NVML): clocks, temperature, power, throttle reasons and counters.

A GPU that throttles runs slower: a measurement taken then reads as a regression. So every cell on a GPU
records the state after its loop's warm-up and after its loop, and a loop measured while throttled is
re-measured once. Snapshots alone miss a slowdown in the middle of a loop, so the verdict comes from NVML's
*violation counters* (``nvmlDeviceGetViolationStatus``: nanoseconds the GPU spent held below its clocks, per
cause, as DCGM reads them) taken across the loop:

* thermal (and reliability / board-limit) time during the loop above ``THROTTLED_SHARE`` of it is throttling;
* power-cap time is not by itself: a heavy fp16 loop runs at its power limit by design (``sw_power_cap`` is set
  at high load) — it counts only when the SM clock fell below ``THROTTLED_BELOW`` of its maximum (nvbench's
  threshold);
* a snapshot with a thermal or hardware slowdown reason, or a clock below ``THROTTLED_BELOW``, is throttling —
  unless NVML says the GPU is idle (``gpu_idle``): an idle H100 parks its SM clock near 345 MHz, which is NVML
  saying "nothing to run", not "held back". A clock means something only while work runs; the doctor reads it
  with a known kernel running (:func:`perfsuite.doctor.check_nvml`).

NVML comes from the optional ``nvidia-ml-py`` package (module ``pynvml``), initialised once per process
(:func:`perfsuite.measure.machine.nvml_initialised`); without it, or on a CPU, these fields are ``null`` — never
guessed. Tests pass a fake module with the same functions.
"""

from __future__ import annotations

from typing import Any

from perfsuite.measure.machine import nvml_initialised

THROTTLED_BELOW = 0.75  # an SM clock below this share of the maximum is throttling (nvbench's threshold)
THROTTLED_SHARE = 0.01  # thermal violation time above this share of a loop's time is throttling
# nvmlClocksEventReasons / nvmlClocksThrottleReasons bits, and the ones that mean the GPU was slowed down.
REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
           0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
           0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}
SLOWING = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})
IDLE = "gpu_idle"  # nothing running: a low clock then is the idle state, not throttling
POWER_CAP = "sw_power_cap"  # slows the clocks only as far as the power limit: judged by the clock
NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0  # pynvml's constants, so a fake needs none
# nvmlPerfPolicyType_t: the causes whose violation time NVML counts
VIOLATIONS = {"power": 0, "thermal": 1, "board_limit": 3, "reliability": 5}
THERMAL_VIOLATIONS = ("thermal", "board_limit", "reliability")


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
        state = {"sm_clock_mhz": n.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM),
                 "mem_clock_mhz": n.nvmlDeviceGetClockInfo(h, NVML_CLOCK_MEM),
                 "max_sm_clock_mhz": self.max_sm_clock_mhz,
                 "temperature_c": n.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU),
                 "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000.0,
                 "throttle_reasons": [name for bit, name in REASONS.items() if bits & bit]}
        violations = self.violation_ns()
        if violations is not None:
            state["violation_ns"] = violations
        return state

    def power_limit_w(self) -> float | None:
        """The power limit the driver enforces (W), or None where NVML does not say."""
        n = self.nvml
        get = getattr(n, "nvmlDeviceGetEnforcedPowerLimit", None) or getattr(n, "nvmlDeviceGetPowerManagementLimit",
                                                                              None)
        return None if get is None else get(self.handle) / 1000.0

    def violation_ns(self) -> dict[str, int] | None:
        """Cumulative violation time per cause (ns) and NVML's reference timestamp (``at_us``), or None where the
        GPU or the library does not report them."""
        get = getattr(self.nvml, "nvmlDeviceGetViolationStatus", None)
        if get is None:
            return None
        out: dict[str, int] = {}
        for name, policy in VIOLATIONS.items():
            try:
                v = get(self.handle, policy)
            except Exception:  # this cause not supported on this GPU: left out, not guessed
                continue
            out[name] = int(v.violationTime)
            out["at_us"] = int(v.referenceTime)
        return out or None


def throttled(state: dict[str, Any] | None) -> str | None:
    """Why one snapshot counts as throttled (a thermal or hardware slowdown reason, or the clock below
    THROTTLED_BELOW of its maximum while not idle — the power cap alone is not), or None."""
    if not state:
        return None
    reasons = set(state.get("throttle_reasons") or ())
    slowing = sorted(SLOWING & reasons)
    if slowing:
        return ", ".join(slowing)
    clock, top = state.get("sm_clock_mhz"), state.get("max_sm_clock_mhz")
    if clock and top and clock < THROTTLED_BELOW * top and IDLE not in reasons:
        cap = " at the power cap" if POWER_CAP in (state.get("throttle_reasons") or ()) else ""
        return f"SM clock {clock} MHz below {THROTTLED_BELOW:.0%} of its {top} MHz maximum{cap}"
    return None


def throttled_during(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str | None:
    """Why the loop between two readings counts as throttled, from the violation counters across it (a slowdown
    in the middle of the loop included) and from both snapshots; None when it ran at speed."""
    a = (before or {}).get("violation_ns") or {}
    b = (after or {}).get("violation_ns") or {}
    span_ns = 1e3 * (b.get("at_us", 0) - a.get("at_us", 0))
    for name in THERMAL_VIOLATIONS:
        if name in a and name in b and b[name] > a[name]:
            held_ns = b[name] - a[name]
            if span_ns <= 0 or held_ns > THROTTLED_SHARE * span_ns:
                share = f" ({100 * held_ns / span_ns:.1f} % of the loop)" if span_ns > 0 else ""
                return f"{name} violation for {held_ns / 1e6:.1f} ms during the loop{share}"
    return throttled(before) or throttled(after)


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
    return {"gpu_state_before": before, "gpu_state_after": after, "gpu_throttled": throttled_during(before, after)}


def _observed(measure, monitor: GpuMonitor):
    """One run of ``measure()``; the first reading is replaced by one after the loop's warm-up, when the loop
    reports it (:func:`perfsuite.measure.timing.after_warmup`), so the warm-up's heating is not the loop's."""
    from perfsuite.measure.timing import after_warmup

    readings = {"before": monitor.read()}
    with after_warmup(lambda: readings.__setitem__("before", monitor.read())):
        result = measure()
    return result, readings["before"], monitor.read()


def watched(measure, monitor: GpuMonitor | None):
    """Run ``measure()`` with the GPU's state read after warm-up and after the loop; measured again once if the
    GPU throttled. Returns (its result, the state fields a record carries)."""
    if monitor is None:
        return measure(), state_fields(None, None) | {"remeasured_throttled": False}
    result, before, after = _observed(measure, monitor)
    remeasured = throttled_during(before, after) is not None
    if remeasured:
        result, before, after = _observed(measure, monitor)
    return result, state_fields(before, after) | {"remeasured_throttled": remeasured}
