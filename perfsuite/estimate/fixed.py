"""What a night pays whatever its cells: each process's session, and on each GPU shard (.github/workflows/nightly.yml)
the doctor and the GPU tests before its cells; once a night, the comparison and the report.

Host constants were calibrated on the project's 2-core VM (rates.HOST_FORWARD_REF_S says which) and are scaled by
this machine's own speed; the GPU-side ones are assumptions, said so where they are defined: no GPU was available
to measure them.
"""

from __future__ import annotations

from perfsuite.estimate.night import Night

SESSION_S = 3.0  # the run process and pytest's started, torch imported, tests collected, results written
COMPARE_S = 1.0  # the comparison with the baselines
REPORT_S = 4.0  # the report page and its figures: a fixed part ...
REPORT_S_PER_CELL = 0.09  # ... and per cell (tables, figure points)
FIRST_CELL_S = 3.0  # the first cell's first uses: lazy imports (dynamo, with the first count on the meta device), SDPA
CELL_OVERHEAD_S = 0.05  # per cell: pytest's setup and teardown, the record, the journal line
# On a GPU, assumed: a process's CUDA context, cuBLAS handles and first kernels.
CUDA_INIT_S = 3.0
# The doctor's host work (process, tiny-model builds, counted forwards and decodes, the attention's fp32
# references): `perfsuite doctor --device cpu` took 10.9 s on the loaded 2-core VM, about 4 s of it its CPU loops.
DOCTOR_HOST_S = 6.0
# `pytest tests/unit -m gpu` before its tests run: pytest, torch, and collecting tests/unit (25 s on the 2-core VM
# at a load average of 10; taken here as 8 s at the reference speed).
GPU_TESTS_SESSION_S = 8.0
GPU_TESTS_OTHER_S = 5.0  # the GPU tests other than the smoke run: tiny models, a few rounds each (assumed)
# What `perfsuite doctor` runs on a GPU (perfsuite.doctor, a layer above; tests/unit/test_estimate.py keeps these in
# step): its spins (the bracket's 20 ms calls and calibration, NVML's 400 ms kernel and 150 ms settle), and its
# repeatability loops: two loops of fp16 and bf16 probes at b8 × s512, 100 rounds and 10 warm-up each.
DOCTOR_SPINS_S = 6 * 0.020 + 0.400 + 0.150
DOCTOR_PROBE_TOKENS = 8 * 512
DOCTOR_PROBE_CALLS = 2 * 2 * (100 + 10)


def price_session(night: Night, cells: list, on_gpu: bool) -> None:
    speed = night.host.host_speed
    night.add("session and cells' overhead", speed * (SESSION_S + FIRST_CELL_S + CELL_OVERHEAD_S * len(cells))
              + (CUDA_INIT_S if on_gpu else 0.0))


def price_doctor(night: Night, cell) -> None:
    """``perfsuite doctor --device cuda``: the host work, NVML read under its spin, the bracket's spins, and the
    repeatability loops of device-bound probes at the paper's shapes (twice more at the ceiling: its retry)."""
    from perfsuite.estimate.latency import probe_s

    host = night.host.host_speed * DOCTOR_HOST_S + CUDA_INIT_S + DOCTOR_SPINS_S
    loops = DOCTOR_PROBE_CALLS * probe_s(night, cell, DOCTOR_PROBE_TOKENS)
    night.add("doctor (each shard)", host + loops, host + 2 * loops)


def price_gpu_tests(night: Night, smoke_s: float) -> None:
    """``pytest tests/unit -m gpu``: its session, the smoke profile end to end on the GPU (``smoke_s``, priced by
    the same model), the other GPU tests."""
    night.add("GPU tests (each shard)", night.host.host_speed * (GPU_TESTS_SESSION_S + GPU_TESTS_OTHER_S)
              + CUDA_INIT_S + smoke_s)


def compare_and_report_s(host_speed: float, cells: int) -> float:
    return host_speed * (COMPARE_S + REPORT_S + REPORT_S_PER_CELL * cells)
