"""The implementation axis without transformers: cell ids, old records, the hf profiles, the missing extra."""

import json
import sys
from pathlib import Path

import pytest
import synthetic as syn

from perfsuite.cells.grid import ADAPTER_NAMES, HF_ADAPTER_NAMES, RANK_FREE, Cell, get_profile, select
from perfsuite.compare.verdicts import compare_results
from perfsuite.formats.record import CellRecord
from perfsuite.hf import ADAPTERHUB_HINT, HF_EXTRA_HINT, library_versions, missing_extra
from perfsuite.job import summary_part_lines


def test_ref_ids_are_unchanged_and_hf_ids_say_hf():
    assert Cell("latency", "lora", 8, batch=1, seq_len=32).id == "latency[lora-r8-b1-s32]"
    assert Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf").id == "latency[lora-r8-b1-s32-hf]"
    assert Cell("recompute", "none", 0, batch=8, seq_len=16, window=4, gen_len=16, impl="hf").id == \
        "recompute[none-r0-b8-s16-w4-g16-hf]"


def test_records_without_impl_read_as_ref_and_a_bad_impl_is_refused():
    old = {"workload": "latency", "adapter": "lora", "rank": 8, "batch": 1, "seq_len": 32, "dtype": "float32",
           "device": "cpu", "model": "tiny"}
    record = CellRecord.from_dict({"perfsuite_schema": 2, "cell": old, "status": "ok"})
    assert record.cell.impl == "ref" and record.id == "latency[lora-r8-b1-s32]"
    with pytest.raises(ValueError, match="impl = 'jax' is not one of ref, hf"):
        Cell("latency", "lora", 8, impl="jax")


def test_hf_smoke_has_every_hf_method_and_the_ref_twins():
    cells = get_profile("hf-smoke").cells(device="cpu")
    hf = {(c.adapter, c.rank) for c in cells if c.impl == "hf" and c.workload == "latency"}
    assert {a for a, _ in hf} == {"none", *HF_ADAPTER_NAMES}
    assert ("ia3", RANK_FREE["ia3"]) in hf and ("lora", 8) in hf
    ref = {c.adapter for c in cells if c.impl == "ref" and c.workload == "latency"}
    assert ref == {"none"} | (set(HF_ADAPTER_NAMES) & set(ADAPTER_NAMES))
    recompute = [c for c in cells if c.workload == "recompute"]
    assert {c.impl for c in recompute} == {"ref", "hf"} and len(cells) == len({c.id for c in cells})
    assert len(select(cells, "impl == 'hf'")) == len(hf) * 2 + len(recompute) // 2  # the field selects


def test_hf_paper_is_the_paper_grid_on_both_implementations():
    profile = get_profile("hf-paper")
    cells = profile.cells(device="cuda")
    assert profile.needs_gpu and {c.model for c in cells} == {"gpt2-medium"}
    hf_lora = [c for c in cells if c.impl == "hf" and c.adapter == "lora"]
    assert {c.rank for c in hf_lora} == {10, 100, 250} and len(hf_lora) == 3 * 6 * 3


def test_without_transformers_an_hf_cell_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    cell = Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf")
    reason = missing_extra(cell)
    assert reason.endswith(HF_EXTRA_HINT) and "transformers" in reason and "\n" not in reason
    assert missing_extra(Cell("latency", "lora", 8, batch=1, seq_len=32)) is None  # ref cells need nothing
    versions = library_versions(cell)
    assert versions.startswith("transformers ") and ", peft " in versions  # a version, or "absent"


def test_adapterhub_cells_need_the_adapters_package(monkeypatch):
    import perfsuite.hf as hf

    monkeypatch.setattr(hf, "_installed", lambda m: m != "adapters")
    assert missing_extra(Cell("latency", "houlsby", 8, batch=1, seq_len=32, impl="hf")) == ADAPTERHUB_HINT
    assert missing_extra(Cell("latency", "lora", 8, batch=1, seq_len=32, impl="hf")) is None


def test_a_run_without_the_extra_records_hf_cells_as_missing_extra_and_exits_0(pytester):
    """perfsuite run --profile hf-smoke on a core install: skips with the one-line hint, not a crash."""
    pytester.makepyfile(test_latency=(Path(__file__).parents[1] / "benchmarks" / "test_latency.py").read_text())
    pytester.makeconftest("import sys\nsys.modules['transformers'] = None  # as on a core install\n")
    cells = "impl == 'hf' and batch == 1 and adapter in ('none', 'lora', 'ia3')"
    result = pytester.runpytest_inprocess("--perfsuite-profile=hf-smoke", f"--perfsuite-cells={cells}",
                                          "--benchmark-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
    assert result.ret == 0
    line = [l for l in result.outlines if l.startswith("perfsuite: ")]
    assert len(line) == 1 and line[0].startswith("perfsuite: 3 cells not run: the hf implementation needs transformers")
    assert line[0].endswith(f", not installed: {HF_EXTRA_HINT}")
    doc = json.loads((pytester.path / "out.json").read_text())
    assert {e["status"] for e in doc["perfsuite"]["not_run"]} == {"missing_extra"}
    assert {e["cell_id"] for e in doc["perfsuite"]["not_run"]} == {
        "latency[none-r0-b1-s32-hf]", "latency[lora-r8-b1-s32-hf]", "latency[ia3-r1-b1-s32-hf]"}


def test_a_part_on_two_models_without_a_baseline_is_said_once():
    """hf-modern-smoke's Llama- and Qwen2-shaped models are two setups, so two parts of one name: the run's summary
    said "no baseline for this machine" twice; it says it once."""
    records = [syn.record(syn.cell("lora", impl="hf", model=m), seed=k) for k, m in enumerate(("llama-tiny",
                                                                                             "qwen2-tiny"))]
    comparison = compare_results(syn.results(records, profile="hf-modern-smoke"), [], record_hint="record one with: X")
    assert [p.profile for p in comparison.parts] == ["hf-modern-smoke/hf"] * 2  # one name, two setups
    assert summary_part_lines(comparison.parts, Path("baselines")) == [
        "comparison: part hf-modern-smoke/hf: no baseline for this machine in baselines; record one with: X"]
