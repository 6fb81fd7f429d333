"""A selection or a shard is compared with the baseline's matching cells only: what it left out is not missing."""

import synthetic as syn

from perfsuite.cells.grid import get_profile
from perfsuite.compare.baselines import baseline_of, parts_of
from perfsuite.compare.scope import run_scope
from perfsuite.compare.verdicts import compare_results
from perfsuite.formats.results import results_from_document

PLAIN, LORA, LORA4 = syn.cell("none"), syn.cell("lora"), syn.cell("lora", batch=4)


def run_of(cells, seed=0, **settings):
    records = [syn.record(c, seed=seed + k, ratio=1.0 if c.adapter == "none" else 1.2) for k, c in enumerate(cells)]
    return results_from_document(syn.document(records, **settings), f"run{seed}.json")


def base():
    return baseline_of([parts_of(run_of((PLAIN, LORA, LORA4), seed=100 * i))[0] for i in range(3)], name="base")


def verdicts(doc):
    return {c["cell_id"]: c["verdict"] for c in doc["cells"]}


def test_cells_outside_the_selection_are_not_missing():
    doc = compare_results(run_of((LORA,), selection="adapter == 'lora' and batch == 1"), [base()]).to_dict()
    assert set(verdicts(doc)) == {LORA.id}
    assert doc["summary"]["missing"] == 0


def test_a_selected_cell_the_run_lacks_is_still_missing():
    doc = compare_results(run_of((LORA,), selection="adapter == 'lora'"), [base()]).to_dict()
    assert verdicts(doc)[LORA4.id] == "missing" and PLAIN.id not in verdicts(doc)


def test_a_whole_profile_run_misses_every_absent_cell():
    doc = compare_results(run_of((LORA,)), [base()]).to_dict()
    assert verdicts(doc)[LORA4.id] == verdicts(doc)[PLAIN.id] == "missing"


def test_a_shard_scopes_its_own_cells_and_the_shards_together_the_whole_grid():
    settings = {"profile": "smoke", "device": "cpu", "dtype": "float32"}
    cells = get_profile("smoke").cells(device="cpu")
    first, second = run_scope([settings | {"shard": "1/2"}]), run_scope([settings | {"shard": "2/2"}])
    mine = [c for c in cells if first(c)]
    assert 0 < len(mine) < len(cells) and not any(second(c) for c in mine)
    both = run_scope([settings | {"shard": "1/2"}, settings | {"shard": "2/2"}])
    assert all(both(c) for c in cells)
    assert run_scope([settings, settings | {"selection": None}]) is None  # whole-profile runs: no scope
