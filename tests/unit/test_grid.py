import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfsuite.cells.grid import ADAPTER_NAMES, PROFILES, Cell, SelectionError, compile_selection, get_profile, select


def test_cell_id_is_readable_and_round_trips():
    cell = Cell("latency", "houlsby", 10, batch=1, seq_len=128, dtype="float16", device="cuda", model="gpt2-medium")
    assert cell.id == "latency[houlsby-r10-b1-s128]"
    assert Cell.from_dict(cell.to_dict()) == cell
    with pytest.raises(ValueError, match="unknown fields: colour"):
        Cell.from_dict({**cell.to_dict(), "colour": "red"})


def test_paper_profile_is_the_lora_papers_figure_5_grid():
    everything = get_profile("paper").cells(device="cuda")
    cells = [c for c in everything if c.phase == "prefill"]  # the decode-step twin: test_decode_cells_...
    assert {c.rank for c in cells} == {0, 10, 100, 250}
    assert {c.batch for c in cells} == {1, 2, 4, 8, 16, 32}
    assert {c.seq_len for c in cells} == {128, 256, 512}
    assert {c.adapter for c in cells} == {"none", *ADAPTER_NAMES}
    assert len(cells) == 18 + len(ADAPTER_NAMES) * 3 * 18  # r = 0 once, shared by every adapter
    assert all(c.model == "gpt2-medium" and c.device == "cuda" for c in cells)


def test_smoke_covers_every_adapter_and_workload():
    cells = get_profile("smoke").cells(device="cpu")
    assert {c.workload for c in cells} == {"latency", "recompute", "subspace"}
    assert {c.adapter for c in cells if c.workload == "latency"} == {"none", *ADAPTER_NAMES}
    assert all(c.model == "tiny" for c in cells)


@pytest.mark.parametrize("name", PROFILES)
def test_cell_ids_are_unique_within_every_profile(name):
    ids = [c.id for c in PROFILES[name].cells(device="cpu")]
    assert len(ids) == len(set(ids))


def test_selection_by_expression():
    cells = get_profile("paper").cells(device="cuda")
    picked = select(cells, "adapter in ('lora', 'houlsby') and batch <= 2 and seq_len == 128 and rank != 250")
    assert {(c.adapter, c.rank, c.batch) for c in picked} == {
        (a, r, b) for a in ("lora", "houlsby") for r in (10, 100) for b in (1, 2)}
    assert select(cells, None) == cells
    # a field a workload leaves empty compares as "not selected", not as an error
    assert select(get_profile("smoke").cells(device="cpu"), "window >= 8 and workload == 'recompute'")


@pytest.mark.parametrize("expr,message", [
    ("__import__('os')", "not allowed"),
    ("batch.__class__", "not allowed"),
    ("colour == 'red'", "unknown field 'colour'"),
    ("batch <=", "cannot parse"),
])
def test_bad_selection_is_refused(expr, message):
    with pytest.raises(SelectionError, match=message):
        compile_selection(expr)


@given(st.sampled_from(["smoke", "paper", "recompute", "full"]), st.integers(1, 64))
def test_selection_returns_a_subsequence(profile, max_batch):
    cells = PROFILES[profile].cells(device="cpu")
    picked = select(cells, f"batch is not None and batch <= {max_batch}")
    assert picked == [c for c in cells if c.batch is not None and c.batch <= max_batch]


def test_full_is_its_parts_each_with_its_own_dtype_and_rounds():
    full = get_profile("full")
    parts = [get_profile(p) for p in ("paper", "recompute", "subspace")]
    cells = full.cells(device="cuda")
    assert cells == [c for p in parts for c in p.cells(device="cuda")]
    for part in parts:
        for cell in part.cells(device="cuda"):
            assert full.timing(cell) == (part.rounds, part.max_rounds or part.rounds, part.warmup)
            assert full.part_of(cell) == part.name
    assert {c.dtype for c in cells if c.workload == "recompute"} == {"bfloat16"}
    assert {c.dtype for c in full.cells(device="cuda", dtype="float32")} == {"float32"}  # --perfsuite-dtype wins


@pytest.mark.parametrize("field,value", [("rank", "8"), ("batch", 1.5), ("adapter", 3), ("rank", None), ("batch", True)])
def test_cells_refuse_fields_of_the_wrong_type(field, value):
    good = Cell("latency", "lora", 8, batch=1, seq_len=32).to_dict()
    with pytest.raises(ValueError, match=f"cell field {field} = "):
        Cell.from_dict({**good, field: value})


def test_the_grid_names_the_same_adapters_as_the_registry():
    from perfsuite.models.adapters import ADAPTERS

    assert ("none", *ADAPTER_NAMES) == tuple(ADAPTERS)


def test_the_plugin_offers_the_dtypes_the_workloads_know():
    from perfsuite.options import DTYPE_NAMES
    from perfsuite.models.caches import DTYPES

    assert DTYPE_NAMES == tuple(DTYPES)


def test_the_profile_option_names_every_profile():
    """--profile's help is written from the profiles themselves: a new profile cannot be left out of it again."""
    import argparse

    from perfsuite.cells.grid import PROFILES
    from perfsuite.options import add_cell_options

    parser = argparse.ArgumentParser()
    add_cell_options(parser.add_argument, prefix="--")
    help_text = parser._option_string_actions["--profile"].help  # unwrapped: any terminal width
    listed = help_text.split(": ", 1)[1].split(" (default")[0].split(", ")
    assert listed == list(PROFILES) and "hf-modern-smoke" in listed
