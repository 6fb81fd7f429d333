"""The measuring side of the detector's self-test: the measured function, its calibration, and the worker process.

A block is one latency cell timed as a run times it, through the same timing loop
(:func:`perfsuite.measure.timing.round_robin`), with fresh models per block. The slow-downs are real extra work
inside the measured call: ``k`` tiny tensor operations after the adapted forward pass; :meth:`Bench.calibrate`
prices one operation and the forward pass, :meth:`Bench.measure_effect` the effect each ``k`` really has.
Run as ``python -m perfsuite.selftest.bench SPEC OUT``, one process per worker
(:func:`perfsuite.selftest.trials.run_selftest` starts them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from perfsuite.cells.grid import Cell
from perfsuite.selftest.options import SelftestOptions

EXTRA_OP_NUMEL = 64  # elements of the tensors the extra work adds: small, so it never wakes torch's thread pool
CALIBRATION_OPS = 50  # extra operations timed together when calibrating the cost of one


class ExtraWork:
    """``k`` tiny tensor additions on the device: real work of a tunable cost, appended to the measured function."""

    def __init__(self, device: str):
        import torch

        self.src = torch.ones(EXTRA_OP_NUMEL, device=device)
        self.out = torch.empty_like(self.src)

    def __call__(self, k: int) -> None:
        import torch

        for _ in range(k):
            torch.add(self.src, 1.0, out=self.out)


class Bench:
    """The measured function (a forward pass of the adapted model, plus ``k`` extra operations) and its r = 0 twin."""

    def __init__(self, options: SelftestOptions, device: str):
        import torch

        from perfsuite.workloads.context import ModelCache

        self.o, self.device = options, device
        self.extra = ExtraWork(device)
        self.models = ModelCache(seed=options.seed)
        vocab = self.models.base(options.model, options.dtype, device).config.vocab_size
        gen = torch.Generator().manual_seed(options.seed)
        self.tokens = torch.randint(0, vocab, (options.batch, options.seq_len), generator=gen).to(device)

    def functions(self, k: int) -> tuple[Callable[[], object], Callable[[], object]]:
        base = self.models.base(self.o.model, self.o.dtype, self.device)
        adapted = self.models.adapted(self.o.model, self.o.dtype, self.device, self.o.adapter, self.o.rank)
        tokens, extra = self.tokens, self.extra

        def measured():
            adapted(tokens)
            extra(k)

        return measured, (lambda: base(tokens))

    def block(self, k: int) -> dict:
        """One cell's worth of measurement, with fresh models (as a run builds them), through the loop cells use:
        the plain model and the adapted one in one round-robin loop of exactly ``rounds`` rounds."""
        import torch

        from perfsuite.measure.timing import RoundPolicy, round_robin

        self.models.clear()
        from perfsuite.measure.probe import ProbeShape, make_probe
        from perfsuite.workloads.context import torch_dtype

        fn, base_fn = self.functions(k)
        config = self.models.base(self.o.model, self.o.dtype, self.device).config
        probe = make_probe(ProbeShape.of_forward(config, self.o.batch, self.o.seq_len), dtype=torch_dtype(self.o.dtype),
                           device=self.device)
        with torch.inference_mode():
            samples = round_robin({"base": base_fn, "adapted": fn, "probe": probe}, device=self.device,
                                  policy=RoundPolicy.fixed(self.o.rounds, self.o.warmup))
        return {"samples_ms": samples["adapted"], "ref_samples_ms": samples["base"],
                "probe_samples_ms": samples["probe"], "cycle": 3}

    def loop_cells(self) -> list[Cell]:
        """The profile's latency cells of the measured cell's shape: the production loop (the measured cell in it)."""
        from perfsuite.cells.grid import get_profile

        me = self.o.cell
        cells = [c for c in get_profile(self.o.loop).cells(device=me.device) if c.workload == "latency"
                 and (c.batch, c.seq_len, c.model, c.dtype) == (me.batch, me.seq_len, me.model, me.dtype)]
        return cells if me.id in {c.id for c in cells} else [*cells, me]

    def loop_block(self, k: int) -> dict:
        """The whole loop timed as a run times it (every cell's model, the plain one, the probe), the measured cell
        with ``k`` extra operations; per cell id its samples as a record keeps them."""
        import torch

        from perfsuite.measure.probe import ProbeShape, make_probe
        from perfsuite.measure.timing import RoundPolicy, round_robin
        from perfsuite.workloads.context import torch_dtype

        self.models.clear()
        base = self.models.base(self.o.model, self.o.dtype, self.device)
        me, tokens, extra = self.o.cell.id, self.tokens, self.extra
        fns = {"base": lambda: base(tokens)}
        for c in self.loop_cells():
            if c.adapter == "none" or c.rank == 0:
                continue
            model = self.models.build_adapted(c.model, c.dtype, self.device, c.adapter, c.rank)
            fns[c.id] = (lambda m=model: (m(tokens), extra(k))) if c.id == me else (lambda m=model: m(tokens))
        fns["probe"] = make_probe(ProbeShape.of_forward(base.config, self.o.batch, self.o.seq_len),
                                  dtype=torch_dtype(self.o.dtype), device=self.device)
        with torch.inference_mode():
            samples = round_robin(fns, device=self.device, policy=RoundPolicy.fixed(self.o.rounds, self.o.warmup))
        out = {}
        for c in self.loop_cells():
            plain = c.adapter == "none" or c.rank == 0
            out[c.id] = {"samples_ms": samples["base" if plain else c.id], "probe_samples_ms": samples["probe"],
                         "cycle": len(fns), **({} if plain else {"ref_samples_ms": samples["base"]})}
        return out

    def calibrate(self) -> tuple[float, float]:
        """(median forward ms, median µs of one extra operation), measured interleaved."""
        import torch

        from perfsuite.measure.timing import timed_call

        fn, _ = self.functions(0)
        fwd, op = [], []
        with torch.inference_mode():
            for _ in range(self.o.calibration_rounds):
                fwd.append(timed_call(fn, self.device))
                op.append(timed_call(lambda: self.extra(CALIBRATION_OPS), self.device) / CALIBRATION_OPS)
        return 1e3 * float(np.median(fwd)), 1e6 * float(np.median(op))

    def measure_effect(self, k: int) -> float:
        """The slow-down ``k`` extra operations really cause: median of paired ratios, interleaved rounds."""
        import torch

        from perfsuite.measure.timing import timed_call

        fn, _ = self.functions(0)
        slow, _ = self.functions(k)
        ratios = []
        with torch.inference_mode():
            for _ in range(self.o.calibration_rounds):
                t0 = timed_call(fn, self.device)
                t1 = timed_call(slow, self.device)
                ratios.append(t1 / t0)
        return 100.0 * (float(np.median(ratios)) - 1.0)


def _with_threads(options: SelftestOptions, fn):
    from perfsuite.measure.device import cpu_threads

    with cpu_threads(options.threads or None):
        return fn()


def worker(spec_path: str, out_path: str) -> None:
    """One worker process: a block per level, in the order given, written as JSON {level index: samples}."""
    spec = json.loads(Path(spec_path).read_text())
    options = SelftestOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["options"].items()})
    bench = Bench(options, spec["device"])
    block = bench.loop_block if options.loop else bench.block
    blocks = _with_threads(options, lambda: {i: block(spec["extra_ops"][i]) for i in spec["order"]})
    Path(out_path).write_text(json.dumps(blocks))



if __name__ == "__main__":
    worker(*sys.argv[1:3])
