import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import PROFILES
from perfsuite.cells.shard import parse_shard, shard_cells
from perfsuite.cells.shard import shard_group
from perfsuite.workloads import estimated_cost

ALL = PROFILES["full"].cells(device="cuda") + PROFILES["smoke"].cells(device="cpu")


@given(st.lists(st.sampled_from(ALL), unique_by=lambda c: c.id, max_size=80), st.integers(1, 9))
def test_shards_are_disjoint_cover_everything_and_keep_order(cells, n):
    shards = [shard_cells(cells, i, n, cost=estimated_cost) for i in range(1, n + 1)]
    ids = [c.id for s in shards for c in s]
    assert sorted(ids) == sorted(c.id for c in cells) and len(ids) == len(set(ids))
    for s in shards:
        assert s == [c for c in cells if c in s]  # the grid's order is kept inside a shard
    assert shards == [shard_cells(cells, i, n, cost=estimated_cost) for i in range(1, n + 1)]  # deterministic


@given(st.lists(st.sampled_from(ALL), unique_by=lambda c: c.id, min_size=1, max_size=80), st.integers(1, 9))
def test_shards_are_balanced(cells, n):
    """Greedy LPT over shape groups: no shard exceeds the lightest by more than the costliest group."""
    loads = [sum(map(estimated_cost, shard_cells(cells, i, n, cost=estimated_cost))) for i in range(1, n + 1)]
    group_costs = {}
    for c in cells:
        group_costs[shard_group(c)] = group_costs.get(shard_group(c), 0.0) + estimated_cost(c)
    assert max(loads) - min(loads) <= max(group_costs.values()) + 1e-9


def test_a_shape_group_never_spans_shards():
    """The paper grid on 4 runners: each latency shape group (plain model + every adapter) on exactly one shard."""
    cells = PROFILES["paper"].cells(device="cuda")
    shards = [shard_cells(cells, i, 4, cost=estimated_cost) for i in range(1, 5)]
    where = {}
    for i, shard in enumerate(shards):
        for c in shard:
            where.setdefault(shard_group(c), set()).add(i)
    assert all(len(s) == 1 for s in where.values())
    assert len({shard_group(c) for c in cells if c.workload == "latency"}) == 18 + 9  # prefill; decode: 3 b × 3 L
    assert all(shards)  # 18 groups over 4 runners: none idle


def test_the_shard_group_is_the_latency_loops_group():
    from perfsuite.workloads.latency import group_key

    cells = [c for c in ALL if c.workload == "latency"]
    for a in cells[:60]:
        for b in cells[:60]:
            assert (shard_group(a) == shard_group(b)) == (group_key(a) == group_key(b))


def test_each_execution_mode_is_a_loop_of_its_own_and_so_a_group_of_its_own():
    from perfsuite.cells.grid import get_profile
    from perfsuite.workloads.latency import group_key

    cells = [c for c in get_profile("smoke").cells(device="cpu", all_modes=True) if c.workload == "latency"]
    assert {c.mode for c in cells} == {"eager", "compile", "graphs"}
    for a in cells:
        for b in cells:
            assert (shard_group(a) == shard_group(b)) == (group_key(a) == group_key(b))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "", "a/b"])
def test_bad_shard_specs(text):
    with pytest.raises(PerfsuiteError):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)


def test_a_long_recompute_window_costs_more_than_a_short_one():
    """With rollbacks priced (perfsuite.workloads.rollbacks), batch 1 at window 512 decodes ~7,000 fast-path steps
    for 512 tokens, at window 16 ~730: the shard cost model once priced it cheaper."""
    from perfsuite.cells.grid import Cell

    def cell(window):
        return Cell("recompute", "none", 0, batch=1, seq_len=128, window=window, gen_len=512, model="gpt2-medium")

    costs = [estimated_cost(cell(w)) for w in (16, 32, 64, 128, 256, 512)]
    assert costs == sorted(costs) and costs[-1] > costs[0]
