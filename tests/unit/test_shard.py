import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfsuite.errors import PerfsuiteError
from perfsuite.cells.grid import PROFILES
from perfsuite.cells.shard import parse_shard, shard_cells
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
    """Greedy LPT: no shard exceeds the lightest by more than the costliest cell."""
    loads = [sum(map(estimated_cost, shard_cells(cells, i, n, cost=estimated_cost))) for i in range(1, n + 1)]
    assert max(loads) - min(loads) <= max(map(estimated_cost, cells)) + 1e-9


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "", "a/b"])
def test_bad_shard_specs(text):
    with pytest.raises(PerfsuiteError):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
