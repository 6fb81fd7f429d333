"""The plugin as a user meets it: run with pytester, check the JSON and the terminal.

Sessions run in this process (pytester's in-process run: a subprocess costs seconds of imports each; what a
session plants, it plants with monkeypatch, undone when it ends). "No GPU" is planted by making torch see none,
so the tests hold on a GPU machine too. tests/plugin/test_run.py runs ``perfsuite run`` in processes where the
process boundary is what is tested (Ctrl-C).
"""

import json
from pathlib import Path

import pytest

LATENCY_TEST = (Path(__file__).parents[2] / "perfsuite" / "benchmarks" / "test_latency.py").read_text()
FAST = ["--perfsuite-rounds=3", "--perfsuite-warmup=1", "-p", "no:cacheprovider"]


PFEIFFER = ["--perfsuite-cells=adapter == 'pfeiffer' and phase == 'prefill'", "--perfsuite-journal=j.jsonl", *FAST]


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_latency=LATENCY_TEST)
    return pytester


@pytest.fixture
def pfeiffer_journal(suite) -> bytes:
    """The journal of one measured session of the pfeiffer cells, which the resume tests below start from."""
    first = suite.runpytest_inprocess(*PFEIFFER)
    first.assert_outcomes(passed=2)
    return (suite.path / "j.jsonl").read_bytes()


@pytest.fixture
def no_gpu(monkeypatch):
    """torch sees no GPU (in this process; a subprocess would need CUDA_VISIBLE_DEVICES)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_every_cell_writes_the_whole_record(suite):
    cells = "adapter in ('none', 'lora', 'lora-merged') and batch == 1"
    result = suite.runpytest_inprocess(f"--perfsuite-cells={cells}", "--benchmark-json=out.json", *FAST)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_latency?lora-r8-b1-s32?*"])
    doc = json.loads((suite.path / "out.json").read_text())
    assert doc["perfsuite"]["profile"] == "smoke" and doc["perfsuite"]["not_run"] == []
    by_id = {b["extra_info"]["cell_id"]: b["extra_info"] for b in doc["benchmarks"]}
    assert set(by_id) == {"latency[none-r0-b1-s32]", "latency[lora-r8-b1-s32]", "latency[lora-merged-r8-b1-s32]"}
    for cell_id, info in by_id.items():
        assert info["perfsuite_schema"] == 2 and info["status"] == "ok"
        assert info["cell"]["model"] == "tiny" and info["cell"]["device"] == "cpu"
        assert info["model_dims"]["n_layer"] == 2
        assert info["env"]["torch_version"] and info["env"]["device_name"] and info["env"]["cpu_isa"]
        # one loop for the shape, whole although three cells were selected (a selection times whole shape groups, as
        # the baseline did): the plain model, 8 adapters and the probe; 3 rounds asked → one rotation of 10
        assert info["cycle"] == 10 and len(info["samples_ms"]) == info["rounds"] == 10
        assert info["loop_members"].count(",") == 9 and info["loop_members"].endswith("probe")
        assert "lora-merged-r*" in info["loop_members"] and "houlsby-r8" in info["loop_members"]
        assert len(info["probe_samples_ms"]) == 10 and info["norm_time"] > 0 and info["probe_time_ms"] > 0
        assert info["flops"] > 0 and info["flops_per_s"] > 0 and info["time_ms"] > 0
        # the CPU's peak memory of one call, from torch.profiler's allocator events
        assert info["host_syncs"] == 0 and info["weights_bytes"] > 0 and info["peak_mem_bytes"] > 0
        assert info["gpu_state_before"] is None  # no GPU: never faked
        if cell_id == "latency[none-r0-b1-s32]":  # the plain model is not timed against itself
            assert "ref_samples_ms" not in info and "slowdown_pct" not in info
        else:
            assert len(info["ref_samples_ms"]) == 10 and "slowdown_pct" in info
    plain = by_id["latency[none-r0-b1-s32]"]["samples_ms"]
    assert by_id["latency[lora-r8-b1-s32]"]["ref_samples_ms"] == plain  # one shared plain-model measurement
    # unmerged LoRA does more arithmetic than the plain model; merged LoRA exactly as much
    assert by_id["latency[lora-r8-b1-s32]"]["flops"] > by_id["latency[none-r0-b1-s32]"]["flops"]
    assert by_id["latency[lora-merged-r8-b1-s32]"]["flops"] == by_id["latency[none-r0-b1-s32]"]["flops"]


def test_out_of_memory_is_recorded_frees_the_group_and_the_run_goes_on(suite):
    """A simulated OOM inside the b4 shape group's loop, while its frame holds an adapted model: the cell is
    recorded as oom, its group-mate is skipped without trying again, and the failed group's model is gone
    (weakly referenced, dead) before the next cell starts — no OOM cascade on a GPU."""
    suite.makeconftest("""
import gc, weakref
import pytest, torch
import perfsuite.workloads.latency as latency

HELD = []
original = latency.measure_group


def measure_group(cell, ctx):
    if cell.batch == 4:
        model = ctx.models.build_adapted(cell.model, cell.dtype, cell.device, "houlsby", 8)
        HELD.append(weakref.ref(model))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    return original(cell, ctx)


@pytest.fixture(autouse=True)
def oom_in_the_b4_group_and_its_model_gone_after(monkeypatch):
    assert all(ref() is None for ref in HELD), "the failed cell's model outlived it"
    monkeypatch.setattr(latency, "measure_group", measure_group)
""")
    result = suite.runpytest_inprocess("--perfsuite-cells=adapter in ('houlsby', 'lora') and phase == 'prefill'",
                                       "--benchmark-json=out.json",
                                       "-rs", *FAST)
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*latency?houlsby-r8-b4-s32?: oom: CUDA out of memory*",
                                 "*SKIPPED*latency?lora-r8-b4-s32?: oom: its shape group ran out of memory*"])
    doc = json.loads((suite.path / "out.json").read_text())
    assert [b["extra_info"]["cell_id"] for b in doc["benchmarks"]] == ["latency[houlsby-r8-b1-s32]",
                                                                      "latency[lora-r8-b1-s32]"]
    assert [e["status"] for e in doc["perfsuite"]["not_run"]] == ["oom", "oom"]


def test_gpu_profile_without_a_gpu_is_skipped_with_a_reason(suite, no_gpu):
    result = suite.runpytest_inprocess("--perfsuite-profile=paper", "-rs", *FAST,
                                        "--perfsuite-cells=adapter == 'lora' and batch == 1 and seq_len == 128")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*no_device: profile 'paper' needs a GPU and none is visible*"])


@pytest.mark.parametrize("args,message", [
    (["--perfsuite-profile=huge"], "*perfsuite: unknown profile 'huge'; known: smoke, paper*"),
    (["--perfsuite-cells=batch <"], "*perfsuite: cannot parse cell selection*"),
    (["--perfsuite-shard=3/2"], "*perfsuite: shard '3/2': need 1 <= I <= N*"),
    (["--perfsuite-resume"], "*--perfsuite-resume needs --perfsuite-journal FILE*"),
    (["--perfsuite-cells=adapter == 'nonexistent'"], "*matches none of the cells of profile 'smoke'*"),
    (["--perfsuite-cells=adapter in 5"], "*cell selection 'adapter in 5' on *"),
])
def test_bad_options_and_selections_that_cannot_select_give_one_clear_line(suite, args, message):
    result = suite.runpytest_inprocess(*args, *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_journal_keeps_cells_and_resume_skips_them(suite, pfeiffer_journal):
    assert pfeiffer_journal == (suite.path / "j.jsonl").read_bytes()  # a session that measured both cells
    second = suite.runpytest_inprocess(*PFEIFFER, "--perfsuite-resume", "-rs")
    second.assert_outcomes(skipped=1)  # nothing left to measure: one skip that says so
    second.stdout.fnmatch_lines(["*no latency cells in this profile and selection*"])
    assert "empty parameter set" not in second.stdout.str()
    lines = [json.loads(x) for x in (suite.path / "j.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["header", "benchmark", "benchmark"]


def test_shards_split_the_grid(suite):
    """The suite here holds latency cells only: its two shape groups go to two of the three shards, whole."""
    ids = []
    for i in (1, 2, 3):
        result = suite.runpytest_inprocess("--collect-only", "-q", f"--perfsuite-shard={i}/3", *FAST)
        ids.append({line for line in result.stdout.lines if "test_latency[" in line and "[no-cells]" not in line})
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    whole = suite.runpytest_inprocess("--collect-only", "-q", *FAST)
    assert ids[0] | ids[1] | ids[2] == {line for line in whole.stdout.lines if "test_latency[" in line}
    for shape in ("-b1-s32]", "-b4-s32]"):  # a latency shape group is never split across shards
        assert sum(any(t.endswith(shape) for t in shard) for shard in ids) == 1


def test_ctrl_c_inside_a_cell_ends_as_an_interruption_not_a_traceback(pytester):
    """Interrupted before its timing started, a cell must not leave pytest-benchmark's 'fixture was not used'
    warning behind: under filterwarnings=error it turned Ctrl-C into a traceback wall and exit 1."""
    pytester.makepyfile(test_interrupted="""
import pytest

@pytest.mark.perfsuite(workload="latency")
def test_latency(benchmark, perfsuite_cell, perfsuite_measure):
    def run_cell(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the model is being built
    perfsuite_measure(run_cell)
""")
    result = pytester.runpytest_inprocess("-W", "error::pytest_benchmark.logger.PytestBenchmarkWarning",
                                          "--perfsuite-cells=adapter == 'none' and batch == 1", *FAST,
                                          no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "PytestBenchmarkWarning" not in result.stdout.str() + result.stderr.str()


def test_a_gpu_profile_without_a_gpu_still_writes_its_json(suite, no_gpu):
    """No cell timed: pytest-benchmark alone writes no JSON; the cells that did not run must not be lost."""
    result = suite.runpytest_inprocess("--perfsuite-profile=paper", "--benchmark-json=out.json", "-W", "error",
                                        "--perfsuite-cells=adapter == 'lora' and batch == 1 and seq_len == 128", *FAST)
    result.assert_outcomes(skipped=3)
    doc = json.loads((suite.path / "out.json").read_text())
    assert doc["benchmarks"] == [] and {e["status"] for e in doc["perfsuite"]["not_run"]} == {"no_device"}
    assert len(doc["perfsuite"]["not_run"]) == 3


def test_resuming_a_journal_with_other_settings_is_refused(suite, pfeiffer_journal):
    result = suite.runpytest_inprocess(*PFEIFFER, "--perfsuite-resume", "--perfsuite-dtype=bfloat16")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot resume j.jsonl with other settings (dtype 'float32' → 'bfloat16')*"])


def test_graphs_cells_on_a_cpu_are_recorded_unsupported_with_the_reason_and_eager_cells_say_device_time_is_wall(suite):
    cells = "mode in ('eager', 'graphs') and adapter in ('none', 'lora') and batch == 1"
    result = suite.runpytest_inprocess(f"--perfsuite-cells={cells}", "--benchmark-json=out.json", "-rs", *FAST)
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*latency?lora-r8-b1-s32-graphs?: unsupported: CUDA graphs need a CUDA device*"])
    doc = json.loads((suite.path / "out.json").read_text())
    assert {r["cell_id"]: r["status"] for r in doc["perfsuite"]["not_run"]} == {
        "latency[none-r0-b1-s32-graphs]": "unsupported", "latency[lora-r8-b1-s32-graphs]": "unsupported"}
    for b in doc["benchmarks"]:
        info = b["extra_info"]
        assert info["device_time_source"] == "wall (cpu)" and info["device_ms"] == info["time_ms"]
        assert "host_bound_pct" not in info and "compile_s" not in info


def test_an_interrupt_on_an_instruction_without_a_line_number_is_still_reported():
    """Seen in CI: Ctrl-C landed where Python records no line number (tb_lineno None), and pytest's own report of
    the interrupt failed (INTERNALERROR, exit 1 instead of an interruption). perfsuite drops such entries first."""
    from types import SimpleNamespace

    from _pytest._code.code import ExceptionInfo, Traceback, TracebackEntry

    from perfsuite.plugin import pytest_keyboard_interrupt

    try:
        try:
            raise ValueError("before")
        except ValueError:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        excinfo = ExceptionInfo.from_current()
    real = list(excinfo.traceback)
    frame = real[0]._rawentry.tb_frame
    no_line = TracebackEntry(SimpleNamespace(tb_lineno=None, tb_frame=frame, tb_next=None, tb_lasti=-1))
    excinfo.traceback = Traceback([*real, no_line])
    pytest_keyboard_interrupt(excinfo)  # before: pytest 9.0's getrepr raised TypeError on the None line number
    assert len(excinfo.traceback) == len(real) and excinfo.value.__context__ is None
    assert "KeyboardInterrupt" in str(excinfo.getrepr(funcargs=True))
