"""The rollback model the cost model and the shards price recompute cells with: its lockstep bookkeeping is the
decoder's, its expectation the decoder's on average, and a longer window costs more steps."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsuite.models.decoding import Schedule, decode_verified
from perfsuite.models.model import build_model
from perfsuite.workloads.rollbacks import expected_decode, lockstep, single_request

GEN = 24
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fp32():
    """Tied random embeddings: no natural mismatch, so only the injected ones roll back (tests/unit/test_recompute)."""
    return build_model("tiny")


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 3, 8]), st.lists(st.tuples(st.integers(0, 2), st.integers(1, GEN - 1)), max_size=8))
def test_the_lockstep_bookkeeping_is_the_decoders(fp32, window, injected):
    prompts = [torch.randint(0, 512, (8,), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    result = decode_verified(fp32, prompts, GEN, Schedule(window=window, context=8 + GEN, token_budget=64),
                             inject=injected)
    mismatches = [{p for b, p in injected if b == r} for r in range(3)]
    assert lockstep(window, GEN, mismatches) == (result.windows, result.steps)


@pytest.mark.parametrize("window, p", [(4, 0.1), (16, 0.05), (64, 0.02)])
def test_the_single_request_expectation_is_the_mean_of_random_decodes(window, p):
    rng = random.Random(0)
    draws = [lockstep(window, 120, [{pos for pos in range(1, 120) if rng.random() < p}]) for _ in range(1500)]
    exact = single_request(window, 120, p)
    assert exact.windows == pytest.approx(sum(d[0] for d in draws) / len(draws), rel=0.03)
    assert exact.steps == pytest.approx(sum(d[1] for d in draws) / len(draws), rel=0.03)
    assert expected_decode(window, 120, 1, p) == exact


def test_without_mismatches_a_decode_is_its_windows():
    assert single_request(16, 513, 0.0) == expected_decode(16, 513, 4, 0.0)
    assert (single_request(16, 513, 0.0).windows, single_request(16, 513, 0.0).steps) == (32, 512)


def test_rollbacks_make_a_long_window_dear_and_a_batch_slower_than_its_one_request():
    """At 5 % near-ties a 512-token window accepts ~20 tokens per 512 steps: b1-W512 costs far more steps than
    b1-W16 (the shard cost model priced it cheaper); lockstep makes a batch wait for its slowest request."""
    assert single_request(512, 512, 0.05).steps > 5 * single_request(16, 512, 0.05).steps
    assert expected_decode(16, 512, 32, 0.05).windows > single_request(16, 512, 0.05).windows
    assert expected_decode(64, 512, 8, 0.05).steps > single_request(64, 512, 0.05).steps
