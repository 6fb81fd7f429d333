"""A recompute cell priced as :func:`perfsuite.workloads.recompute.run_recompute_cell` runs it, rollbacks included.

Per cell: the adapted model; one verified decode (its peak memory), one cut to two windows under the sync counter,
one pass of each shape under the work counter (the FLOPs); the fixed-schedule reference (a ``rows × window`` pass
per output token); one plain decode; the warm-up and the timed rounds of verified decoding, plain decoding and the
probe. A verified decode costs its prompt's fixed-shape passes, a verify pass per window and a fast-path step of
the batch per step, windows and steps expected from the cell's mismatch rate (:mod:`perfsuite.workloads.rollbacks`:
the batch steps as far as its longest window, and a disagreement at token j of a window throws the rest of it
away). Decoder passes are priced from the ops of one ragged pass (counted on a narrow twin) plus what each decoder
adds around it (counted once with count_ops on perfsuite.models.decoding at two output lengths and windows: independent
of the model's size), every pass over the same key slots (the decoder's fixed key length).
"""

from __future__ import annotations

import math

from perfsuite.cells.grid import Cell, token_budget
from perfsuite.estimate.counts import config_of, ragged_ops
from perfsuite.estimate.latency import probe_s
from perfsuite.estimate.night import Night
from perfsuite.workloads.rollbacks import DecodeCost, expected_decode

# (kernels, ops) the decoders add around each ragged pass
PLAIN_STEP_EXTRA = (2, 9)
FIXED_STEP_EXTRA = (4, 12)
VERIFIED_STEP_EXTRA = (8, 23)
WINDOW_EXTRA = (39, 53)  # per verified window: the verify pass's inputs, the rollback, the one read-back


def verified_s(night: Night, c: Cell, decode: DecodeCost, counted: bool = False) -> float:
    """One verified decode of ``decode``'s windows and steps (``counted``: under the sync counter)."""
    rows, ctx = token_budget(c) // c.window, c.seq_len + c.gen_len
    prefill = math.ceil(c.seq_len / c.window) * night.ragged_s(c, rows, c.window, ctx, (0, 0), counted)
    return (prefill + decode.windows * night.ragged_s(c, rows, c.window, ctx, WINDOW_EXTRA, counted)
            + decode.steps * night.ragged_s(c, c.batch, 1, ctx, VERIFIED_STEP_EXTRA, counted))


def plain_s(night: Night, c: Cell) -> float:
    ctx = c.seq_len + c.gen_len
    return (night.ragged_s(c, c.batch, c.seq_len, c.seq_len, (0, 0))
            + (c.gen_len - 1) * night.ragged_s(c, c.batch, 1, ctx, PLAIN_STEP_EXTRA))


def fixed_s(night: Night, c: Cell) -> float:
    rows, ctx = token_budget(c) // c.window, c.seq_len + c.gen_len
    prefill = math.ceil(c.seq_len / c.window) * night.ragged_s(c, rows, c.window, ctx, (0, 0))
    return prefill + (c.gen_len - 1) * night.ragged_s(c, rows, c.window, ctx, FIXED_STEP_EXTRA)


def price_cell(night: Night, c: Cell, low: int, high: int, warmup: int, mismatch_rate: float) -> None:
    """One recompute cell (see the module docstring), its decodes expected at ``mismatch_rate``."""
    from perfsuite.workloads.recompute import OBSERVED_WINDOWS

    night.base_model(c)
    night.adapted_model(c, c.adapter, c.rank)
    decode = expected_decode(c.window, c.gen_len, c.batch, mismatch_rate)
    verified, plain = verified_s(night, c, decode), plain_s(night, c)
    seen = min(OBSERVED_WINDOWS, decode.windows)  # the sync count's decode stops after two windows
    cut = DecodeCost(seen, seen * min(c.window, c.gen_len - 1))
    rows, ctx = token_budget(c) // c.window, c.seq_len + c.gen_len
    ops = ragged_ops(config_of(c), c.adapter, c.rank)[1]
    flop_passes = (night.ragged_s(c, rows, c.window, ctx, (0, 0)) + night.ragged_s(c, c.batch, 1, ctx, (0, 0))
                   + 2 * ops * night.host.dispatch_op_s)
    night.add("untimed decodes (memory, syncs on two windows, FLOPs, plain)",
              verified + verified_s(night, c, cut, counted=True) + flop_passes + plain)
    night.add("fixed-schedule reference decodes", fixed_s(night, c))
    per_round = verified + plain + probe_s(night, c, c.batch, repeats=c.gen_len)
    night.add("warm-up", warmup * per_round)
    night.add("timed rounds (models and the probe)", low * per_round, high * per_round)
    passes = math.ceil(c.seq_len / c.window) + decode.windows + decode.steps + c.gen_len
    night.timed(round(passes * low), round(passes * high))
