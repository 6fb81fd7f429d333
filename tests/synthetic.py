"""Planted runs for the tests: records with known samples, on a machine of our choosing, as results documents.

Nothing here measures anything: times are drawn from seeded distributions with a run-to-run (process) effect,
so the comparison logic is tested against known truths on any machine. :func:`cli` runs perfsuite's command line
in the test's own process, for tests that need a real run but not a process of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfsuite.cells.grid import Cell
from perfsuite.formats.io import write_json_atomic
from perfsuite.formats.record import CellRecord, not_run
from perfsuite.formats.results import Results, results_document, results_from_document
from perfsuite.measure.paired import PairedTiming

CPU = "GenuineIntel family 6 model 143 stepping 8: Test CPU"
HEADER = {"machine_info": {"node": "test"}, "commit_info": {"id": "0123456789abcdef", "branch": "main"},
          "datetime": "2026-11-23T00:00:00+00:00", "pytest_benchmark_version": "5.2.0"}


def env(host: str = "host-a#boot-0001", cpu: str = CPU, threads: int = 1, torch: str = "2.13.0+cpu", **extra) -> dict:
    return {"device": "cpu", "device_name": "cpu: Test CPU", "host": host, "cpu": cpu, "cpu_isa": "AVX2",
            "cpu_cores": 2, "gpu": None, "gpu_driver": None, "torch_version": torch, "cuda_version": None,
            "cudnn_version": None, "threads": threads, **extra}


def cell(adapter: str = "lora", rank: int = 8, batch: int = 1, seq_len: int = 32, **kw) -> Cell:
    return Cell("latency", adapter, rank if adapter != "none" else 0, batch=batch, seq_len=seq_len, **kw)


def record(c: Cell, *, seed: int, ratio: float = 1.2, base_ms: float = 0.3, run_sd: float = 0.0,
           round_sd: float = 0.01, ratio_run_sd: float = 0.0, n: int = 30, e: dict | None = None) -> CellRecord:
    """A timed cell: the reference's rounds ~ base_ms × process effect × lognormal noise; the cell's rounds its
    reference's times ``ratio`` (× a process effect on the ratio, and round noise)."""
    rng = np.random.default_rng(seed)
    process = float(np.exp(rng.normal(0.0, run_sd)))
    ratio_process = float(np.exp(rng.normal(0.0, ratio_run_sd)))
    ref = base_ms * process * rng.lognormal(0.0, round_sd, n)
    own = ref * ratio * ratio_process * rng.lognormal(0.0, round_sd, n)
    t = PairedTiming(tuple(own), tuple(ref))
    return CellRecord(c, env=e or env(), metrics={
        "time_ms": t.time_ms, "ref_time_ms": t.ref_time_ms, "slowdown_pct": t.slowdown_pct, "iqr_pct": t.iqr_pct,
        "samples_ms": list(t.adapter_ms), "ref_samples_ms": list(t.ref_ms), "rounds": n})


def timed_only(c: Cell, *, seed: int, time_ms: float = 2.0, run_sd: float = 0.0, n: int = 30,
               e: dict | None = None) -> CellRecord:
    """A cell without a paired reference (e.g. the subspace analysis): times only."""
    rng = np.random.default_rng(seed)
    samples = time_ms * float(np.exp(rng.normal(0.0, run_sd))) * rng.lognormal(0.0, 0.01, n)
    return CellRecord(c, env=e or env(), metrics={"time_ms": float(np.median(samples)), "samples_ms": list(samples)})


def document(records: list[CellRecord], profile: str = "smoke", **settings) -> dict:
    """A results document as a run writes it (benchmarks for the cells that ran, not_run for the others)."""
    benches = [{"name": f"test_{r.cell.workload}[{r.cell.param_id}]", "fullname":
                f"tests/benchmarks/test_{r.cell.workload}.py::test_{r.cell.workload}[{r.cell.param_id}]",
                "extra_info": r.to_dict(), "stats": {"rounds": len(r.samples_ms or [])}} for r in records if r.ok]
    return results_document(HEADER, benches, {"profile": profile, "device": "cpu", "dtype": "float32", **settings},
                            [r for r in records if not r.ok])


def results(records: list[CellRecord], profile: str = "smoke", source: str = "run.json") -> Results:
    return results_from_document(document(records, profile), source)


def write(path: Path, records: list[CellRecord], profile: str = "smoke") -> Path:
    return write_json_atomic(path, document(records, profile))


def skipped(c: Cell, status: str = "oom", reason: str = "CUDA out of memory") -> CellRecord:
    return not_run(c, status, reason)


class FakeBenchmark:
    """Enough of pytest-benchmark's fixture for perfsuite.measure.bench_bridge.record_rounds (a workload's record then holds
    its timing metrics)."""

    disabled = False

    def pedantic(self, fn, rounds, iterations):
        self.stats = type("S", (), {"stats": type("D", (), {"data": [0.0] * rounds})()})()


# --- a GPU-shaped results file for the mode figures (planted numbers, never measured) ---------------

SYNTHETIC_GPU = "synthetic: GPU-shaped numbers, not measured"
LAUNCH_MS = 0.006  # host time per eager kernel launch
KERNEL_FLOOR_MS = 0.001  # device time of the smallest kernel
KERNELS = {"none": 600, "lora": 600 + 13 * 24, "houlsby": 600 + 10 * 24}  # dispatcher ops of a 24-layer forward
DEVICE_KERNELS = {"none": 400, "lora": 400 + 4 * 24, "houlsby": 400 + 5 * 24}  # of which launch a kernel
TOKEN_DEVICE_MS = 0.00175  # device ms per token of gpt2-medium in fp16 at ~400 TFLOP/s


def gpu_modes_records(adapters=("lora", "houlsby"), ranks=(10, 100), batches=(1, 8, 32), seq_lens=(128, 512)):
    """Eager and graphs latency cells of a gpt2-medium-shaped model on a GPU-shaped machine: eager wall time is
    the larger of launch time and device time, a graph replay's is its device time; an adapter adds kernels
    (launches) and a little device work per token (∝ r)."""
    e = env(device="cuda", device_name=SYNTHETIC_GPU, gpu=SYNTHETIC_GPU, torch="2.13.0+cu128")
    out = []
    for mode in ("eager", "graphs"):
        for s in seq_lens:
            for b in batches:
                def times(adapter, rank):
                    device = DEVICE_KERNELS[adapter] * KERNEL_FLOOR_MS + b * s * TOKEN_DEVICE_MS * (1 + rank / 2000)
                    wall = max(KERNELS[adapter] * LAUNCH_MS, device) + 0.05 if mode == "eager" else device + 0.02
                    return wall, device

                base_wall, base_device = times("none", 0)
                seed = len(out)
                out.append(_with_device(record(cell("none", 0, b, s, mode=mode, device="cuda", dtype="float16",
                                                    model="gpt2-medium"), seed=seed, ratio=1.0, base_ms=base_wall, n=8,
                                               e=e), base_device, base_device, base_wall, base=True))
                for a in adapters:
                    for r in ranks:
                        wall, device = times(a, r)
                        rec = record(cell(a, r, b, s, mode=mode, device="cuda", dtype="float16", model="gpt2-medium"),
                                     seed=seed + r, ratio=wall / base_wall, base_ms=base_wall, n=8, e=e)
                        out.append(_with_device(rec, device, base_device, wall))
    return out


def _with_device(rec: CellRecord, device_ms: float, ref_device_ms: float, wall_ms: float,
                 base: bool = False) -> CellRecord:
    extra = {"device_ms": device_ms, "host_bound_pct": 100.0 * (1 - device_ms / wall_ms),
             "device_time_source": "cuda events"}
    if base:
        return CellRecord(rec.cell, env=rec.env, metrics={k: v for k, v in rec.metrics.items()
                                                          if k not in ("ref_time_ms", "slowdown_pct", "ref_samples_ms")}
                          | extra)
    return rec.with_metrics(**extra, device_slowdown_pct=100.0 * (device_ms / ref_device_ms - 1))


def planted_ab_runner(ratios: dict[str, float], calls: list):
    """``perfsuite.ab.run_benchmarks`` stand-in: writes a planted run of the plain model, LoRA and Houlsby; LoRA's
    slow-down depends on the side's checkout (``ratios``: "A" → ratio, "B" → ratio), each side named in ``calls``."""
    cells = [cell("none"), cell("lora"), cell("houlsby")]

    def run(checkout, out_json, options, *, own_code=False, **kw):
        assert own_code  # every A/B run imports its own side's code
        side = "A" if "worktree-a" in str(checkout) else "B"
        calls.append(side)
        k = len(calls)
        records = [record(c, seed=97 * k + i, ratio=1.0 if c.adapter == "none" else
                          (ratios[side] if c.adapter == "lora" else 1.2), run_sd=0.03, ratio_run_sd=0.005)
                   for i, c in enumerate(cells)]
        return write(Path(out_json), records)
    return run


def git(repo, *args: str) -> str:
    """``git -C repo ARGS``'s output (a failed command fails the test)."""
    import subprocess

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def two_commit_checkout(root):
    """A tiny git repository shaped like a perfsuite checkout, two commits (base, head): what ``perfsuite ab``
    makes worktrees of."""
    (root / "perfsuite").mkdir(parents=True)
    (root / "tests" / "benchmarks").mkdir(parents=True)
    (root / "perfsuite" / "__init__.py").write_text("VERSION = 'base'\n")
    (root / "tests" / "benchmarks" / "test_latency.py").write_text("# stand-in\n")
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    (root / "perfsuite" / "__init__.py").write_text("VERSION = 'head'\n")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "head")
    return root


def cli(*args: str, cwd: Path | None = None):
    """``perfsuite ARGS`` run in this process, its output captured: a ``subprocess.CompletedProcess`` like a run in
    a subprocess gives, without the seconds of imports a process costs. For tests whose subject is not the process
    boundary (a killed or concurrent run is, and runs in a subprocess)."""
    import contextlib
    import io
    import os
    import subprocess

    from perfsuite.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or Path(__file__).parents[1])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["perfsuite", *args], code, out.getvalue(), err.getvalue())



def comparison_doc(cells: list[tuple], *, mode: str = "gating", baseline_runs: int = 5) -> dict:
    """A comparison document (current format) with planted verdicts, for the report's tests: ``cells`` holds
    (cell id, cell verdict, [(metric, unit, verdict, change, ci_low, ci_high, p_adjusted, detectable), ...])."""
    entries = []
    for cell_id, verdict, metrics in cells:
        entries.append({"cell_id": cell_id, "part": "smoke", "verdict": verdict,
                        "moved": [m[0] for m in metrics if m[2] in ("regression", "improvement")], "remeasured": 0,
                        "metrics": [{"metric": name, "unit": unit, "verdict": v, "baseline": 20.0, "current": 20.0 + ch,
                                     "change": ch, "ci_low": lo, "ci_high": hi, "detectable": det, "change_pct": ch,
                                     "ci_low_pct": lo, "ci_high_pct": hi, "p_value": p, "p_adjusted": p, "df": 8.0,
                                     "noise_pct": 2.0, "baseline_runs": baseline_runs, "current_runs": 1}
                                    for name, unit, v, ch, lo, hi, p, det in metrics]})
    summary: dict[str, int] = {}
    for e in entries:
        summary[e["verdict"]] = summary.get(e["verdict"], 0) + 1
    part = {"profile": "smoke", "mode": mode, "baseline": "baselines/smoke_cpu.json", "baseline_runs": baseline_runs,
            "current_runs": 1, "machine": "cpu: Test CPU", "baseline_machine": "cpu: Test CPU", "differences": [],
            "hint": None, "error_control": "holm", "tests": 2 * len(entries), "alpha": 0.01,
            "per_test_alpha": 0.01 / (2 * len(entries))}
    return {"perfsuite_comparison": 3, "gating": mode in ("gating", "ab"), "parts": [part], "cells": entries,
            "summary": summary}


def planted_comparison() -> tuple[Results, dict]:
    """The issue's planted comparison: a confirmed regression (LoRA, +12 pp), an inconclusive move larger than it
    (AdapterH, +19 pp: noise must not look like a regression), a cell with no baseline (AdapterL: new), and the
    unchanged plain model; as the run's results and the comparison document."""
    recs = [record(cell(a), seed=k, ratio=r) for k, (a, r) in enumerate(
        (("none", 1.0), ("lora", 1.32), ("houlsby", 1.39), ("lin", 1.15)))]
    doc = comparison_doc([
        (cell("none").id, "unchanged", [("time", "%", "unchanged", 0.4, -2.0, 2.9, 0.7, 6.0)]),
        (cell("lora").id, "regression", [("slowdown", "pp", "regression", 12.0, 8.1, 15.9, 0.0004, 6.5),
                                         ("time", "%", "regression", 10.2, 6.8, 13.7, 0.0009, 6.0)]),
        (cell("houlsby").id, "inconclusive", [("slowdown", "pp", "inconclusive", 19.3, -4.0, 42.6, 0.08, 24.0),
                                              ("time", "%", "unchanged", 1.0, -3.0, 5.0, 0.6, 6.0)]),
        (cell("lin").id, "new", []),
    ])
    return results(recs), doc
