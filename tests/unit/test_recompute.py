"""Decode–verify–rollback (LLM-42): determinism, the fixed-schedule reference, mismatch injection, budget."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsuite.models.adapters import ADAPTERS, attach
from perfsuite.cells.grid import Cell
from perfsuite.models.model import build_model
from perfsuite.formats.record import STATUS_OK, STATUS_OUTSIDE_BUDGET
from perfsuite.workloads.context import CellContext
from perfsuite.cells.grid import DEFAULT_TOKEN_BUDGET, budget_violation
from perfsuite.models.decoding import KVBuffer, Schedule, decode_fixed, decode_plain, decode_verified, ragged_forward
from perfsuite.measure.syncs import count_host_syncs
from perfsuite.measure.device import count_flops
from perfsuite.workloads.recompute import (decode_flops, mismatch_rate, run_recompute_cell, syncs_per_window,
                                           untied_head)

GEN = 32  # output tokens per request
SCHEDULE = Schedule(window=8, context=100 + GEN, token_budget=64)  # 8 rows; prompts up to 100 tokens
pytestmark = pytest.mark.usefixtures("one_thread")


def prompt(seed: int, n: int) -> torch.Tensor:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def bf16():
    """The tiny model in bf16, decoding with an untied head: the setting where the fast path diverges."""
    model = build_model("tiny", dtype=torch.bfloat16)
    return model, untied_head(model)


@pytest.fixture(scope="module")
def fp32():
    """A clean slate for injected mismatches, by construction: with the tied random embeddings greedy decoding
    repeats its input token by a wide margin, so no rounding difference between the fast path and the
    fixed-shape pass can flip a token on any CPU (head None: the tied output embedding)."""
    return build_model("tiny"), None


# --- the ragged forward pass is the model's forward pass --------------------------------------

@pytest.mark.parametrize("name", ADAPTERS)
@torch.inference_mode()
def test_ragged_forward_equals_the_model_for_every_adapter(name):
    model = attach(build_model("tiny", seed=1, dtype=torch.float64), name, 4, seed=2)
    lengths = [5, 9, 12]
    prompts = [prompt(i, n) for i, n in enumerate(lengths)]
    cache = KVBuffer(model, 3, 16)
    idx = torch.zeros(3, 12, dtype=torch.long)
    for b, p in enumerate(prompts):
        idx[b, : len(p)] = p
    logits = ragged_forward(model, cache, idx[:, :4], torch.zeros(3, dtype=torch.long), 4)  # a chunk ...
    nxt = ragged_forward(model, cache, idx[:, 4:], torch.full((3,), 4), 12)  # ... then the rest after the cache
    for b, p in enumerate(prompts):
        ref, _ = model(p[None])
        torch.testing.assert_close(torch.cat([logits, nxt], 1)[b, : len(p)], ref[0])


@torch.inference_mode()
def test_plain_decoding_is_the_models_greedy_kv_cache_decode():
    model = build_model("tiny", seed=1, dtype=torch.float64)
    prompts = torch.stack([prompt(i, 6) for i in range(3)])
    logits, past = model(prompts)
    tokens = [logits[:, -1].argmax(-1)]
    for _ in range(9):
        logits, past = model(tokens[-1][:, None], past)
        tokens.append(logits[:, -1].argmax(-1))
    assert torch.equal(decode_plain(model, prompts, 10), torch.stack(tokens, 1))


# --- determinism ------------------------------------------------------------------------------

TARGET = prompt(2, 16)
NEIGHBOURS = [prompt(1020 + i, n) for i, n in enumerate((40, 70, 100))]


def test_verification_undoes_a_fast_path_that_depends_on_its_neighbours(bf16):
    """The same request alone and beside longer ones whose fast path went astray (planted: the injector flips
    the target's fast-path tokens only in the batch; any natural bf16 divergence of this CPU adds to it):
    the verified tokens are the same, and the fixed-schedule decode's."""
    model, head = bf16
    verified_alone = decode_verified(model, [TARGET], GEN, SCHEDULE, head=head)
    verified_batched = decode_verified(model, [*NEIGHBOURS[:2], TARGET, NEIGHBOURS[2]], GEN, SCHEDULE, head=head,
                                       inject=[(2, 3), (2, 11), (2, 30)])
    assert {(2, 3), (2, 11)} <= set(verified_batched.mismatch_positions)
    assert torch.equal(verified_alone.tokens[0], verified_batched.tokens[2])
    assert torch.equal(verified_alone.tokens[0], decode_fixed(model, [TARGET], GEN, SCHEDULE, head=head)[0])


@pytest.fixture(scope="module")
def bf16_twins(bf16):
    """bf16 with output rows in near-equal pairs: every step is a near-tie, so argmax turns any difference
    in the last bits of the hidden state into a different token. Makes a determinism test sensitive."""
    model, head = bf16
    head = head.float()
    noise = torch.randn(head[0::2].shape, generator=torch.Generator().manual_seed(5))
    head[1::2] = head[0::2] * (1 + 1e-2 * noise)
    return model, head.to(torch.bfloat16)


@settings(max_examples=50, deadline=None)
@given(target=st.integers(0, 5), neighbours=st.lists(st.tuples(st.integers(100, 10**6), st.integers(1, 100)),
                                                      max_size=4),
       position=st.integers(0, 4))
def test_verified_tokens_do_not_depend_on_neighbours_or_arrival_order(bf16_twins, target, neighbours, position):
    model, head = bf16_twins
    mine = prompt(target, 16)
    batch = [prompt(seed, n) for seed, n in neighbours]
    position = min(position, len(batch))
    batch.insert(position, mine)
    got = decode_verified(model, batch, GEN, SCHEDULE, head=head).tokens[position]
    assert torch.equal(got, _fixed_alone(model, head, target))


_ALONE: dict[int, torch.Tensor] = {}


def _fixed_alone(model, head, target: int) -> torch.Tensor:
    """The reference: the request alone, every token from the fixed-shape pass."""
    if target not in _ALONE:
        _ALONE[target] = decode_fixed(model, [prompt(target, 16)], GEN, SCHEDULE, head=head)[0]
    return _ALONE[target]


def test_verified_equals_the_fixed_schedule_decode_whatever_rolls_back(bf16):
    """Planted rollbacks (and whatever natural bf16 mismatches this CPU adds) never change the verified output:
    it is the fixed-schedule decode's, and every discarded token is counted as decoded again."""
    model, head = bf16
    prompts = [prompt(s, 16) for s in range(4)]
    result = decode_verified(model, prompts, GEN, SCHEDULE, head=head, inject=[(2, 15), (0, 4)])
    assert {(2, 15), (0, 4)} <= set(result.mismatch_positions)
    assert torch.equal(result.tokens, decode_fixed(model, prompts, GEN, SCHEDULE, head=head))
    assert result.recomputed_tokens >= 1 + 4  # 16 after 15 in the window 9..16; 5..8 after 4 in 1..8
    assert result.fast_tokens == len(prompts) * (GEN - 1) + result.recomputed_tokens


@pytest.mark.parametrize("name", ADAPTERS)
def test_every_adapter_verifies_to_the_fixed_schedule(name):
    model = attach(build_model("tiny", dtype=torch.bfloat16), name, 4, seed=3)
    head = untied_head(model)
    prompts = [prompt(s, n) for s, n in ((0, 16), (1, 9), (2, 23))]
    result = decode_verified(model, prompts, 24, SCHEDULE, head=head, inject=[(1, 5)])
    assert (1, 5) in result.mismatch_positions
    assert torch.equal(result.tokens, decode_fixed(model, prompts, 24, SCHEDULE, head=head))


# --- mismatch injection ------------------------------------------------------------------------

def expected_rollbacks(injected: set[int], window: int, gen_len: int) -> list[tuple[int, int]]:
    """(position, tokens recomputed) for one request, when only injected tokens mismatch."""
    out, pos = [], 1  # position 0 comes from the verified prefill
    while pos < gen_len:
        end = min(pos + window, gen_len) - 1  # the window is pos..end
        hit = min((p for p in injected if pos <= p <= end), default=None)
        if hit is None:
            pos = end + 1
        else:
            out.append((hit, end - hit))
            pos = hit + 1
    return out


def test_an_injected_mismatch_rolls_back_the_rest_of_its_window(fp32):
    model, head = fp32
    prompts = [prompt(s, 16) for s in range(3)]
    clean = decode_verified(model, prompts, GEN, SCHEDULE, head=head)
    assert clean.mismatch_positions == () and clean.recomputed_tokens == 0
    hit = decode_verified(model, prompts, GEN, SCHEDULE, head=head, inject=[(1, 20)])
    assert hit.mismatch_positions == ((1, 20),)
    assert hit.recomputed_tokens == 4  # window 17..24: tokens 21-24 are decoded again
    assert hit.recompute_pct == pytest.approx(100 * 4 / (3 * GEN))
    assert torch.equal(hit.tokens, clean.tokens)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, GEN - 1)), max_size=6), st.sampled_from([1, 3, 8]))
def test_injected_mismatches_give_exactly_the_expected_rollbacks(fp32, injected, window):
    model, head = fp32
    prompts = [prompt(s, 16) for s in range(3)]
    schedule = Schedule(window=window, context=16 + GEN, token_budget=64)
    result = decode_verified(model, prompts, GEN, schedule, head=head, inject=injected)
    expected = {b: expected_rollbacks({p for r, p in injected if r == b}, window, GEN) for b in range(3)}
    assert sorted(result.mismatch_positions) == sorted((b, p) for b in expected for p, _ in expected[b])
    assert result.recomputed_tokens == sum(n for rows in expected.values() for _, n in rows)
    if window not in _FIXED:  # the reference depends on the window only: decoded once per window
        _FIXED[window] = decode_fixed(model, prompts, GEN, schedule, head=head)
    assert torch.equal(result.tokens, _FIXED[window])


_FIXED: dict[int, torch.Tensor] = {}


@pytest.mark.parametrize("where", [(0, 0), (3, 5), (0, GEN)])
def test_injecting_outside_the_fast_path_is_refused(fp32, where):
    model, head = fp32
    with pytest.raises(ValueError, match="cannot inject"):
        decode_verified(model, [prompt(s, 8) for s in range(3)], GEN, SCHEDULE, head=head, inject=[where])


# --- token budget and the benchmark cell --------------------------------------------------------

def test_token_budget():
    assert DEFAULT_TOKEN_BUDGET == 512
    assert budget_violation(32, 16) is None and budget_violation(1, 512) is None
    assert "2 × 512 = 1024 tokens exceeds the verification token budget of 512" in budget_violation(2, 512)
    assert Schedule(window=16, context=64).rows == 32
    with pytest.raises(ValueError, match="exceeds the token budget"):
        Schedule(window=1024, context=64)


def test_a_batch_over_the_budget_is_refused(fp32):
    model, head = fp32
    with pytest.raises(ValueError, match="exceeds the verification token budget of 64"):
        decode_verified(model, [prompt(s, 8) for s in range(9)], GEN, SCHEDULE, head=head)


def test_a_cell_over_the_budget_is_recorded_not_run():
    cell = Cell("recompute", "none", 0, batch=32, seq_len=128, window=32, gen_len=512, model="gpt2-medium")
    record = run_recompute_cell(None, cell, CellContext()).to_dict()  # builds nothing
    assert record["status"] == STATUS_OUTSIDE_BUDGET and record["token_budget"] == 512
    assert "32 × 32 = 1024" in record["reason"]


class DisabledBenchmark:
    """pytest-benchmark under --benchmark-disable: runs the function once, untimed."""

    disabled, stats = True, None

    def pedantic(self, fn, **_):
        fn()


@pytest.mark.parametrize("window, batch", [(4, 2), (3, 1)])
def test_the_decodes_flops_are_one_pass_of_each_shape_times_its_passes(window, batch):
    """Counted on two passes and multiplied, the FLOPs equal FlopCounterMode's count of the whole decode (every
    pass of a shape attends to the same key slots), with rollbacks injected so windows end early."""
    model = attach(build_model("tiny"), "lora", 4)
    head = untied_head(model)
    prompts = torch.randint(0, model.config.vocab_size, (batch, 8), generator=torch.Generator().manual_seed(0))
    schedule = Schedule(window=window, context=20, token_budget=64)
    decode = lambda: decode_verified(model, prompts, 12, schedule, head=head, inject=[(0, 5)])  # noqa: E731
    result = decode()
    assert result.steps > result.windows > 0 and (0, 5) in result.mismatch_positions
    assert decode_flops(model, schedule, batch, result, head) == count_flops(decode) > 0


def test_syncs_are_counted_on_a_decode_cut_to_two_windows_whatever_rolls_back():
    model = attach(build_model("tiny"), "lora", 4)
    prompts = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    schedule = Schedule(window=4, context=8 + 40, token_budget=64)
    syncs, windows = syncs_per_window(lambda: decode_verified(model, prompts, 40, schedule, head=untied_head(model),
                                                              max_windows=2, inject=[(0, 2), (1, 3)]))
    assert windows == 2 and sum(syncs.values()) == 2  # one read-back per window
    full = decode_verified(model, prompts, 40, schedule, head=untied_head(model))
    assert sum(count_host_syncs(lambda: decode_verified(model, prompts, 40, schedule,
                                                        head=untied_head(model))).values()) == full.windows > 2


def test_the_mismatch_rate_is_rollbacks_per_checked_decision(fp32):
    model, head = fp32
    prompts = [prompt(s, 16) for s in range(3)]
    hit = decode_verified(model, prompts, GEN, SCHEDULE, head=head, inject=[(1, 20), (2, 3)])
    assert mismatch_rate(hit, 3) == pytest.approx(2 / (3 * GEN - 3))  # the first token of each is the prefill's
    clean = decode_verified(model, prompts, GEN, SCHEDULE, head=head)
    assert mismatch_rate(clean, 3) == 0.0


def test_cell_record_carries_the_metrics():
    from perfsuite.measure.timing import RoundPolicy

    cell = Cell("recompute", "lora", 4, batch=2, seq_len=8, window=4, gen_len=12)
    few_rounds = CellContext(policy=lambda c: RoundPolicy(3, 3, 1))  # the record's fields, not its precision
    record = run_recompute_cell(DisabledBenchmark(), cell, few_rounds).to_dict()
    assert record["rounds"] >= 3 and record["status"] == STATUS_OK and record["cell_id"] == "recompute[lora-r4-b2-s8-w4-g12]"
    assert record["output_tokens"] == 24 and record["token_budget"] == 64 and record["verify_rows"] == 16
    assert record["matches_fixed_schedule"] is True  # on this CPU; recorded, not asserted, by the benchmark
    assert record["verified_repeatable"] is True and record["plain_repeatable"] is True
    assert record["mismatch_rate"] == record["mismatches"] / (24 - 2)
    assert record["sdpa_backend"] in ("flash_attention", "math") and record["sdpa_backend_verify"]
    assert record["recompute_pct"] == 100 * record["recomputed_tokens"] / 24
    assert record["mismatches"] == len(record["mismatch_positions"])
    assert record["flops"] > 0 and "time_ms" not in record
    assert record["host_syncs"] == record["observed_windows"] == 2 and record["host_syncs_per_window"] == 1.0
    assert record["windows"] >= 3 and record["decode_steps"] >= record["windows"]
    assert record["argmax_dtype"] == "float32" and record["logits_dtype"] == "float32"  # the tiny model's dtype
    assert record["decisions"] == 2 * 11  # 11 decisions after the first
    assert record["margin_p1"] <= record["margin_p50"] and record["exact_ties"] >= 0
    assert record["weights_bytes"] > 0 and record["peak_mem_bytes"] > 0  # the CPU allocator's peak (torch.profiler)
    assert record["gpu_state_before"] is None and record["gpu_throttled"] is None
