"""A subspace cell priced as :mod:`perfsuite.workloads.subspace` runs it: four students trained (probed: a few
real Adam steps on the device; modelled: four forwards per step, in fp32 — no TF32) and the analysis rounds
(probed on this CPU, where it runs)."""

from __future__ import annotations

import functools
import statistics

from perfsuite.cells.grid import Cell
from perfsuite.estimate.counts import config_of
from perfsuite.estimate.night import Night
from perfsuite.estimate.rates import seconds

SUBSPACE_STUDENTS = 4  # ranks r_a and r_b, seeds 0 and 1
TRAIN_FORWARDS_PER_STEP = 4.0  # an Adam step: the teacher's forward, the student's forward and backward (≈ 2)


def price_cell(night: Night, c: Cell, low: int, high: int, warmup: int) -> None:
    from perfsuite.workloads.subspace import train_config

    cfg = train_config(c.model)
    night.base_model(c)
    if getattr(night.timer, "device", None):  # the device is here: a few real training steps, timed
        step = probe_train_step(c, night.timer.device)
    else:
        train = Cell("latency", "lora", max(c.rank, c.rank_b or c.rank), batch=cfg.batch, seq_len=cfg.seq_len,
                     dtype="float32", device=c.device, model=c.model)
        step = TRAIN_FORWARDS_PER_STEP * night.pass_s(train, "lora", train.rank, cfg.batch, cfg.seq_len, cfg.seq_len)
    night.add("subspace training", SUBSPACE_STUDENTS * cfg.steps * step)
    analysis = probe_analysis(c)
    night.add("subspace analysis (timed rounds)", (low + warmup + 1) * analysis, (high + warmup + 1) * analysis)


@functools.lru_cache(maxsize=16)
def probe_train_step(cell: Cell, device: str, steps: int = 5) -> float:
    """Seconds of one Adam step of a subspace cell's student on ``device``: a few real steps, timed."""
    import dataclasses

    from perfsuite.models.model import build_model
    from perfsuite.workloads.subspace import PlantedTask, train_config, train_lora

    cfg = dataclasses.replace(train_config(cell.model), steps=steps)
    task = PlantedTask(build_model(cell.model, device=device), cfg)
    train_lora(task, cell.rank, 0, float(cell.rank))  # warm
    return train_lora(task, cell.rank, 0, float(cell.rank)).train_time_s / steps


@functools.lru_cache(maxsize=16)
def probe_analysis(cell: Cell) -> float:
    """Seconds of one φ analysis of a subspace cell (on the CPU, where it runs), on random factors of its shapes:
    one analysis when it is long, else the mean of three after it."""
    import torch

    from perfsuite.workloads.subspace import SEEDS, TrainedLoRA, analyse

    cfg = config_of(cell)
    gen = torch.Generator().manual_seed(0)
    ranks = (cell.rank, cell.rank_b or cell.rank)
    students = {(r, s): TrainedLoRA(r, s, *(tuple(torch.randn(r, cfg.n_embd, generator=gen)
                                                  for _ in range(cfg.n_layer)) for _ in range(2)), 1.0, 0.1, 0.0)
                for r in dict.fromkeys(ranks) for s in SEEDS}
    once = seconds(lambda: analyse(students, *ranks, cfg.n_layer, cfg.n_embd))
    if once > 1.0:  # a long analysis (gpt2-medium: about a minute on one core) is its own sample
        return once
    return statistics.fmean(seconds(lambda: analyse(students, *ranks, cfg.n_layer, cfg.n_embd)) for _ in range(3))
