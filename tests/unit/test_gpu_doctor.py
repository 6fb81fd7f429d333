"""perfsuite doctor's logic with fakes: each check's pass and fail, the table, the JSON, the exit code and the line."""

import json

import pytest

from fake_gpu import FakeNVML as BusyNVML

import perfsuite.doctor as doctor
import perfsuite.doctor.harness as harness
from perfsuite.cli import main
from perfsuite.doctor import (FAILED, OK, SKIPPED, Check, check_attention, check_decode_syncs, check_latency_syncs,
                              check_memory, check_nvml, check_repeatability, check_timing_bracket, run_doctor)
from perfsuite.measure.gpu_state import GpuMonitor


def known(seconds):
    return lambda: (lambda: seconds)  # starts the call; its true duration is read after the bracket


@pytest.mark.parametrize("bracket_s, status", [(0.0201, OK), (0.0150, FAILED), (0.0400, FAILED)])
def test_the_timing_bracket_must_cover_the_known_call_and_not_much_more(bracket_s, status):
    check = check_timing_bracket("cuda", known_call=known(0.020), timed=lambda fn: fn() or bracket_s)
    assert check.status == status
    if bracket_s < 0.02:
        assert "synchronize" in check.fix  # a bracket shorter than the kernel: the sync is missing


def test_the_real_cpu_bracket_times_a_real_sleep():
    check = check_timing_bracket("cpu")
    assert check.values["measured_ms"] >= 0.98 * check.values["known_ms"] >= 0.98 * doctor.BRACKET_MS


def test_a_latency_forward_that_reads_back_fails_the_sync_check():
    import torch

    class ReadsBack(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # .item() in disguise

    assert check_latency_syncs("cpu").status == OK
    bad = check_latency_syncs("cpu", ReadsBack(), torch.ones(3))
    assert bad.status == FAILED and bad.values["counts"] == {"read_back": 1} and "read-back" in bad.fix


def test_a_verified_decode_syncs_once_per_window():
    check = check_decode_syncs("cpu")
    assert check.status == OK and check.values["per_window"] == 1.0 and check.values["windows"] >= 1


def test_memory_and_nvml_are_skipped_on_a_cpu_and_say_why():
    for check in (check_memory("cpu"), check_nvml("cpu")):
        assert check.status == SKIPPED and check.fix


class FakeNVML:
    def __init__(self, clock=1900, reasons=0):
        self.clock, self.reasons = clock, reasons

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetClockInfo(self, h, kind):
        return self.clock if kind == 1 else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons

    def nvmlDeviceGetTemperature(self, h, kind):
        return 45

    def nvmlDeviceGetPowerUsage(self, h):
        return 80_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000


def test_nvml_reads_clocks_power_limit_and_throttle_state():
    ok = check_nvml("cuda", GpuMonitor(FakeNVML(), "h"), busy=_no_work)
    assert ok.status == OK and "700 W limit" in ok.figure and "not throttled" in ok.figure
    hot = check_nvml("cuda", GpuMonitor(FakeNVML(reasons=0x40), "h"), busy=_no_work)
    assert hot.status == FAILED and "hw_thermal_slowdown" in hot.fix


def _no_work():
    import contextlib

    return contextlib.nullcontext()


def test_an_idle_gpu_passes_the_clock_check_and_a_throttled_one_fails_it():
    """An idle H100 parks its SM clock near 345 MHz with NVML's gpu_idle reason: read at once (as the old doctor
    did, right after nvmlInit) that is not throttling; the doctor reads under a known kernel, where the clock is
    the boost clock. A GPU that throttles under that kernel fails."""
    idle = BusyNVML()
    ok = check_nvml("cuda", GpuMonitor(idle, "h"), busy=idle.busy)
    assert ok.status == OK and ok.values["state"]["sm_clock_mhz"] == 1980 and idle.running == 0
    hot = BusyNVML(throttled=True)
    failed = check_nvml("cuda", GpuMonitor(hot, "h"), busy=hot.busy)
    assert failed.status == FAILED and "hw_thermal_slowdown" in failed.fix
    from perfsuite.measure.gpu_state import throttled

    parked = GpuMonitor(BusyNVML(), "h").read()  # no kernel running: idle clock, gpu_idle
    assert parked["sm_clock_mhz"] == 345 and throttled(parked) is None


def test_an_nvml_that_sees_no_work_under_a_known_kernel_reads_another_gpu():
    idle = BusyNVML()
    check = check_nvml("cuda", GpuMonitor(idle, "h"), busy=_no_work)  # the kernel ran elsewhere
    assert check.status == FAILED and "CUDA_VISIBLE_DEVICES" in check.fix


def test_attention_runs_fp16_and_bf16_at_the_paper_shapes_on_this_cpu():
    check = check_attention("cpu")
    assert check.status == OK, check.fix
    assert set(check.values["calls"]) == {"float16 causal", "float16 decoder mask", "bfloat16 causal",
                                          "bfloat16 decoder mask"}
    assert check.values["seq_len"] == 512 and all(c["backend"] != "unknown" for c in check.values["calls"].values())
    seen = []

    def off(device, dtype, **shape):
        seen.append(shape)
        return {"backend": "efficient_attention", "relative_error": 0.3, "ok": False}

    bad = check_attention("cuda", attend=off)
    assert bad.status == FAILED and "float16 causal" in bad.fix
    assert {(s["batch"], s["n_head"], s["head_dim"]) for s in seen} == {(32, 16, 64)}  # gpt2-medium, b32 on a GPU


def test_repeatability_retries_once_then_fails_with_what_to_fix():
    loops = iter([{"a": [1.0]}, {"a": [1.2]}, {"a": [1.0]}, {"a": [1.01]}])
    passed = check_repeatability("cpu", loop=lambda: next(loops))
    assert passed.status == OK and passed.values["attempts"] == 2
    noisy = iter([{"a": [1.0]}, {"a": [1.2]}] * 2)
    failed = check_repeatability("cpu", loop=lambda: next(noisy))
    assert failed.status == FAILED and "20.0 %" in failed.fix and failed.values["attempts"] == 2


def test_a_failed_check_gives_exit_1_and_one_line_naming_it(monkeypatch, tmp_path, capsys):
    checks = (("timing bracket", lambda d: Check("timing bracket", "1 ms", OK)),
              ("memory", lambda d: Check("memory", "-", SKIPPED, "no GPU")),
              ("nvml", lambda d: Check("nvml", "unreadable", FAILED, "install nvidia-ml-py")),
              ("repeatability", lambda d: 1 / 0))
    monkeypatch.setattr(doctor, "CHECKS", checks)
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--device", "cpu", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "perfsuite doctor: nvml failed: install nvidia-ml-py (and 1 more failed check(s))" in captured.err
    assert "skipped: memory (no GPU)" in captured.out
    data = json.loads(out.read_text())
    assert not data["ok"] and [c["status"] for c in data["checks"]] == [OK, SKIPPED, FAILED, FAILED]
    assert "ZeroDivisionError" in data["checks"][3]["fix"]  # a check that raises fails, the rest still run


def test_all_checks_passing_exit_0():
    report = run_doctor("cpu", checks=(("a", lambda d: Check("a", "fine", OK)),))
    assert report.exit_code == 0 and report.verdict_line() == "perfsuite doctor: all 1 checks passed on cpu"
    assert report.table().splitlines()[2].split() == ["a", "fine", "ok"]


def test_doctor_has_help_and_refuses_a_missing_gpu(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--help"])
    assert e.value.code == 0 and "--device" in capsys.readouterr().out
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["doctor", "--device", "cuda"]) == 2
    assert "perfsuite doctor: error: no CUDA device" in capsys.readouterr().err


def test_syncs_cuda_reports_fail_the_checks_too(monkeypatch):
    """On CUDA, torch's own sync report is a second witness: syncs it sees fail the check even if the counter
    missed them (the report is planted here; on a CPU there is none)."""
    monkeypatch.setattr(harness, "_cuda_sync_warnings", lambda device, fn: 2)
    latency = check_latency_syncs("cpu")
    assert latency.status == FAILED and latency.values["cuda_sync_warnings"] == 2 and "CUDA saw 2" in latency.fix
    monkeypatch.setattr(harness, "_cuda_sync_warnings", lambda device, fn: 4)  # one per window of 4: fine
    assert check_decode_syncs("cpu").status == OK
    monkeypatch.setattr(harness, "_cuda_sync_warnings", lambda device, fn: 9)
    assert check_decode_syncs("cpu").status == FAILED
