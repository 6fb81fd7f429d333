"""Baselines: the file format (v1 and v2 migrate), the store (parts, runs kept, refusals) and finding a match."""

import json
import shutil
from pathlib import Path

import pytest
import synthetic as syn

from perfsuite.cli import main
from perfsuite.compare.baselines import add_runs, default_name, find, load_all, load_reference, parts_of
from perfsuite.formats.baseline import BASELINE_FORMAT, BaselineError, load_baseline
from perfsuite.measure.machine import Fingerprint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "baselines"
ROOT = Path(__file__).parents[2]
CELLS = [syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4)]


def run(seed: int, e=None, cells=CELLS, profile="smoke"):
    return syn.results([syn.record(c, seed=seed * 10 + k, run_sd=0.03, e=e) for k, c in enumerate(cells)], profile)


def test_runs_are_stored_per_part_and_keep_the_last_n(tmp_path):
    (r,) = add_runs([run(1), run(2)], directory=tmp_path, keep=3)
    assert r.created and r.runs_added == 2 and r.runs_kept == 2 and r.cells == 3
    assert r.path.name == default_name(parts_of(run(1))[0]) + ".json"
    (r,) = add_runs([run(3), run(4)], directory=tmp_path)  # the file's own keep (3) applies
    assert not r.created and (r.runs_before, r.runs_added, r.runs_kept) == (2, 2, 3)
    b = load_baseline(r.path)
    assert [run.cells["latency[lora-r8-b1-s32]"].get("time_ms") for run in b.runs] == [
        p.records[1].get("time_ms") for p in (parts_of(run(k))[0] for k in (2, 3, 4))]
    assert b.keep == 3 and b.fingerprint == parts_of(run(1))[0].fingerprint
    (r,) = add_runs([run(5)], directory=tmp_path, replace=True)
    assert load_baseline(r.path).runs[0].cells["latency[lora-r8-b1-s32]"].get("time_ms") == \
        parts_of(run(5))[0].records[1].get("time_ms") and len(load_baseline(r.path).runs) == 1


def test_round_trip_keeps_samples_and_numbers(tmp_path):
    (r,) = add_runs([run(1)], directory=tmp_path, note="made by a test")
    b = load_baseline(r.path)
    original = {rec.id: rec for rec in parts_of(run(1))[0].records}
    for cid, rec in b.runs[0].cells.items():
        assert rec.samples_ms == original[cid].samples_ms and rec.ref_samples_ms == original[cid].ref_samples_ms
        assert rec.get("slowdown_pct") == original[cid].get("slowdown_pct")
        assert rec.env == {}  # the machine is in the fingerprint, not repeated per cell
    assert b.note == "made by a test" and json.loads(r.path.read_text())["perfsuite_baseline"] == 4


def test_a_file_of_another_machine_is_never_silently_replaced(tmp_path):
    (r,) = add_runs([run(1)], directory=tmp_path, name="mine")
    before = r.path.read_text()
    other = run(2, e=syn.env(host="host-b#boot-0002"))
    with pytest.raises(BaselineError, match=r"mine.json is the baseline of another setup \(host: "
                                            "'host-a#boot-0001' vs 'host-b#boot-0002'\\); refusing"):
        add_runs([other], directory=tmp_path, name="mine")
    assert r.path.read_text() == before
    (r2,) = add_runs([other], directory=tmp_path, name="mine", force=True)
    assert r2.replaced_other and load_baseline(r2.path).fingerprint.host == "host-b#boot-0002"


def test_prune_drops_cells_the_newest_run_lacks(tmp_path):
    add_runs([run(1)], directory=tmp_path)
    (r,) = add_runs([run(2, cells=CELLS[:2])], directory=tmp_path, prune=True)
    assert load_baseline(r.path).cell_ids() == sorted(c.id for c in CELLS[:2])


def test_composite_results_are_stored_part_by_part(tmp_path):
    """A `full`-shaped run: fp16 latency (paper), bf16 recompute, fp32 subspace; one baseline per part."""
    lat = syn.cell("lora", batch=1, seq_len=128, dtype="float16", model="gpt2-medium")
    rec = syn.Cell("recompute", "none", 0, batch=1, seq_len=128, window=16, gen_len=512, dtype="bfloat16",
                   model="gpt2-medium")
    sub = syn.Cell("subspace", "lora", 8, rank_b=64, model="gpt2-medium")
    results = syn.results([syn.record(lat, seed=1), syn.record(rec, seed=2), syn.timed_only(sub, seed=3)], "full")
    parts = parts_of(results)
    assert [(p.profile, p.fingerprint.dtype) for p in parts] == [("paper", "float16"), ("recompute", "bfloat16"),
                                                                  ("subspace", "float32")]
    reports = add_runs([results], directory=tmp_path)
    assert sorted(r.path.name.split("_")[0] for r in reports) == ["paper", "recompute", "subspace"]
    assert all(len(load_baseline(r.path).cell_ids()) == 1 for r in reports)


def test_the_two_implementations_of_a_profile_are_parts_of_their_own(tmp_path):
    """hf-smoke runs the reference and transformers + peft: two parts, two baselines, named apart."""
    ref, hf = syn.cell("lora"), syn.cell("lora", impl="hf")
    hf_env = syn.env() | {"libraries": "transformers 5.23.0, peft 0.21.2"}
    results = syn.results([syn.record(ref, seed=1), syn.record(hf, seed=2, e=hf_env)], "hf-smoke")
    assert [(p.profile, [r.id for r in p.records]) for p in parts_of(results)] == [
        ("hf-smoke", [ref.id]), ("hf-smoke/hf", [hf.id])]
    reports = add_runs([results], directory=tmp_path)
    assert sorted(r.path.name.split("_")[0] for r in reports) == ["hf-smoke", "hf-smoke-hf"]


def test_find_this_machine_else_a_reference_of_the_same_setup(tmp_path):
    add_runs([run(1)], directory=tmp_path)
    add_runs([run(2, e=syn.env(host="elsewhere"))], directory=tmp_path)
    baselines = load_all(tmp_path)
    exact, ref = find(parts_of(run(3))[0], baselines)
    assert exact.fingerprint.host == "host-a#boot-0001" and ref is None
    exact, ref = find(parts_of(run(3, e=syn.env(host="third")))[0], baselines)
    assert exact is None and ref is not None
    exact, ref = find(parts_of(run(3, cells=[syn.cell("lora", dtype="float16")]))[0], baselines)
    assert exact is None and ref is None  # another dtype is another setup: not even a reference


def test_a_results_file_serves_as_a_single_run_reference(tmp_path):
    path = syn.write(tmp_path / "other.json", [syn.record(c, seed=k) for k, c in enumerate(CELLS)])
    (b,) = load_reference(path)
    assert len(b.runs) == 1 and b.cell_ids() == sorted(c.id for c in CELLS) and b.name == str(path)


def test_v1_and_v2_files_migrate_and_never_gate():
    v1 = load_baseline(FIXTURES / "v1_smoke_cpu.json")
    raw = json.loads((FIXTURES / "v1_smoke_cpu.json").read_text())
    assert v1.profile == "smoke" and len(v1.runs) == 1
    assert sorted(v1.cell_ids()) == sorted(c["cell_id"] for c in raw["cells"])
    entry = raw["cells"][0]
    rec = v1.runs[0].cells[entry["cell_id"]]
    assert list(rec.samples_ms) == entry["samples_ms"] and list(rec.ref_samples_ms) == entry["base_samples_ms"]
    assert v1.fingerprint.host is None and v1.fingerprint.cpu == "cpu: AMD EPYC" and v1.fingerprint.dtype == "float32"
    v2_doc = json.loads((FIXTURES / "corrupt_cell.json").read_text())
    v2_doc["cells"]["latency[lora-r8-b1-s32]"]["cell"]["rank"] = 8  # repair the planted fault: a valid v2 file
    doc = BASELINE_FORMAT.upgrade(v2_doc, "v2")
    assert doc["perfsuite_baseline"] == 4 and doc["fingerprint"]["threads"] == v2_doc["source"]["threads"]
    assert "ref_samples_ms" in doc["runs"][0]["cells"]["latency[lora-r8-b1-s32]"]
    live = parts_of(run(1, e=syn.env(host=None, cpu="cpu: AMD EPYC", torch="2.13.0+cpu")))[0]
    assert live.fingerprint != v1.fingerprint  # a migrated file lacks the machine fields a live run has


@pytest.mark.parametrize("fixture, message", [
    ("corrupt_truncated.json", "not valid JSON"),
    ("corrupt_samples.json", "run 0: cell latency[lora-r8-b1-s32]: samples_ms: samples must be a list of positive"),
    ("corrupt_cell.json", "run 0: cell latency[lora-r8-b1-s32]: the record describes latency[lora-r16-b1-s32]"),
    ("future_v99.json", "baseline format 99 is newer than this perfsuite reads (4); upgrade perfsuite"),
    ("not_a_baseline.json", "not a perfsuite baseline (no 'perfsuite_baseline' format version)"),
])
def test_bad_baselines_give_one_clear_line_and_stay_untouched(tmp_path, capsys, fixture, message):
    target = tmp_path / fixture
    shutil.copy(FIXTURES / fixture, target)
    before = target.read_bytes()
    with pytest.raises(BaselineError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        load_baseline(target)
    assert main(["baseline", "show", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perfsuite baseline: error: ")
    assert target.read_bytes() == before


def test_an_unreadable_file_in_the_directory_is_an_error_not_a_skip(tmp_path):
    add_runs([run(1)], directory=tmp_path)
    shutil.copy(FIXTURES / "corrupt_truncated.json", tmp_path / "broken.json")
    with pytest.raises(BaselineError, match="broken.json: not valid JSON"):
        load_all(tmp_path)


def test_nothing_to_store_from_a_run_where_no_cell_ran(tmp_path):
    with pytest.raises(BaselineError, match="no cell ran"):
        add_runs([syn.results([syn.skipped(CELLS[0])])], directory=tmp_path)
    assert not list(tmp_path.iterdir())


def test_default_name_is_part_device_setup_and_fingerprint_hash():
    part = parts_of(run(1))[0]
    name = default_name(part)
    assert name.startswith("smoke_cpu-test-cpu_float32_tiny_") and name.endswith(part.fingerprint.short_id())
    other = parts_of(run(1, e=syn.env(host="elsewhere")))[0]
    assert default_name(other) != name  # two machines of one setup get two files


def test_cli_update_show_find(tmp_path, capsys):
    res = syn.write(tmp_path / "r1.json", [syn.record(c, seed=k, run_sd=0.03) for k, c in enumerate(CELLS)])
    assert main(["baseline", "update", str(res), "--dir", str(tmp_path / "b"), "--note", "two runs"]) == 0
    assert main(["baseline", "update", str(res), "--dir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "created " in out and "updated " in out and "2 run(s) kept (1 added, 0 dropped), 3 cells" in out
    (path,) = (tmp_path / "b").glob("*.json")
    assert main(["baseline", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "part smoke, 2 run(s) (keeps 5)" in shown and "note: two runs" in shown
    assert "latency[lora-r8-b1-s32]" in shown and "[2 runs]" in shown
    assert main(["baseline", "find", str(res), "--dir", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == f"smoke: {path}"
    elsewhere = syn.write(tmp_path / "r2.json", [syn.record(CELLS[0], seed=1, e=syn.env(host="b"))])
    assert main(["baseline", "find", str(elsewhere), "--dir", str(tmp_path / "b")]) == 1
    assert f"another machine's, for reference: {path}" in capsys.readouterr().out


def test_the_committed_baselines_read():
    """Every baseline committed under baselines/ reads (migrations included) and has at least one run."""
    for b in load_all(ROOT / "baselines"):
        assert b.runs and b.cell_ids() and isinstance(b.fingerprint, Fingerprint)


def test_record_runs_each_run_in_a_fresh_process_and_keeps_them_all(monkeypatch, tmp_path, capsys):
    """``baseline record --runs 3``: three fresh runs (planted here; tests/plugin/test_run.py records a real one),
    each with the command's cell options, all kept in one baseline."""
    import perfsuite.processes as processes

    asked = []

    def planted_run(checkout, out_json, options, **kw):
        asked.append((Path(out_json).name, options["cells"], options["rounds"]))
        return syn.write(Path(out_json), [syn.record(c, seed=10 * len(asked) + k, run_sd=0.03)
                                          for k, c in enumerate(CELLS)])

    monkeypatch.setattr(processes, "run_benchmarks", planted_run)
    assert main(["baseline", "record", "--runs", "3", "--rounds", "7", "--cells", "batch == 1", "--dir",
                 str(tmp_path / "b"), "--out", str(tmp_path / "rec")]) == 0
    assert asked == [(f"run-{i}.json", "batch == 1", 7) for i in (1, 2, 3)]
    out = capsys.readouterr()
    assert [line.split("]")[0] for line in out.err.splitlines()] == [f"[baseline record {i}/3" for i in (1, 2, 3)]
    assert "3 run(s) kept (3 added, 0 dropped)" in out.out
    (path,) = (tmp_path / "b").glob("*.json")
    assert len(load_baseline(path).runs) == 3
