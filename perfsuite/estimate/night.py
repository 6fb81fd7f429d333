"""The night's ledger: seconds per step at the floor and the ceiling of rounds, and the pricing every workload
shares — a pass on the device, a ragged decoder pass, a model built once per process, spectral-r's SVDs once per
base weight, the FLOPs counted once per model and shape."""

from __future__ import annotations

from collections import defaultdict

from perfsuite.estimate.counts import config_of, forward_ops, pass_cost, ragged_ops
from perfsuite.estimate.rates import HostCosts


class Night:
    """Seconds per step, at the floor and at the ceiling of rounds (one process: one shard of the night)."""

    def __init__(self, timer, host: HostCosts):
        self.timer, self.host = timer, host
        self.steps: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.forwards = [0, 0]
        self._built: set = set()
        self._decomposed: set = set()
        self._flops_counted: set = set()

    @property
    def modelled(self) -> bool:
        """Whether the device is modelled (a GPU this machine does not have) rather than probed here."""
        return bool(getattr(self.timer, "modelled", False))

    def add(self, step: str, low_s: float, high_s: float | None = None) -> None:
        self.steps[step][0] += low_s
        self.steps[step][1] += low_s if high_s is None else high_s

    def pass_s(self, cell, adapter: str, rank: int, rows: int, tokens: int, ctx: int, counted: bool = False) -> float:
        """A model forward of ``rows × tokens`` tokens attending to ``ctx`` slots (``counted``: under a dispatch
        mode, each op paying the host's mode overhead too)."""
        (kernels, ops), flops = pass_cost(cell, adapter, rank, rows, tokens, ctx)
        return self.timer(cell).seconds(kernels, ops, flops) + (ops * self.host.dispatch_op_s if counted else 0.0)

    def ragged_s(self, cell, rows: int, tokens: int, ctx: int, extra: tuple[int, int], counted: bool = False) -> float:
        """A ragged decoder pass and what its decoder adds around it (perfsuite.estimate.recompute's *_EXTRA)."""
        _, flops = pass_cost(cell, cell.adapter, cell.rank, rows, tokens, ctx)
        kernels, ops = ragged_ops(config_of(cell), cell.adapter, cell.rank)
        kernels, ops = kernels + extra[0], ops + extra[1]
        rates = self.timer(cell)
        per_op = rates.s_per_decode_op if rates.s_per_decode_op is not None else rates.s_per_kernel
        device_s = per_op * kernels + rates.s_per_view * (ops - kernels) + flops * rates.s_per_flop
        return device_s + (ops * self.host.dispatch_op_s if counted else 0.0)

    def base_model(self, cell) -> None:
        """The plain model, drawn on the host once per (model, dtype, device) and process."""
        key = (cell.model, cell.dtype, cell.device)
        if key not in self._built:
            self._built.add(key)
            cfg = config_of(cell)
            params = 12 * cfg.n_layer * cfg.n_embd ** 2 + (cfg.vocab_size + cfg.n_positions) * cfg.n_embd
            self.add("model builds", params * self.host.init_param_s)

    def adapted_model(self, cell, adapter: str, rank: int) -> None:
        if adapter == "none" or rank == 0:
            return
        cfg = config_of(cell)
        self.add("model builds", cfg.n_layer * self.host.adapted_build_layer_s)
        key = (cell.model, cell.dtype, cell.device)
        if adapter == "spectral-r" and key not in self._decomposed:
            self._decomposed.add(key)
            self.add("spectral-r SVDs", 2 * cfg.n_layer * self.host.svd_1024_s * (cfg.n_embd / 1024) ** 3)

    def flop_count(self, cell, adapter: str, rank: int, seq_len: int) -> None:
        """The latency workload's FLOP count: a meta model per (model, adapter, rank), then one blockwise count
        per length (the shell and each kind of block: perfsuite.workloads.counting)."""
        if (cell.model, cell.dtype, adapter, rank) not in self._flops_counted:  # its meta model, built once
            self._flops_counted.add((cell.model, cell.dtype, adapter, rank))
            self.add("FLOP counting", config_of(cell).n_layer * self.host.meta_build_layer_s)
        key = (cell.model, cell.dtype, adapter, rank, seq_len)
        if key not in self._flops_counted:
            self._flops_counted.add(key)
            kinds = 2 if adapter == "adapterdrop" else 1
            blocks = max(1, config_of(cell).n_layer)
            ops = forward_ops(config_of(cell), adapter, rank, cell.dtype)[1]
            self.add("FLOP counting", ops * (1 + kinds) / (1 + blocks) * self.host.meta_op_s)  # shell + kinds

    def once(self, what: str) -> bool:
        """Whether ``what`` (a process-wide first use) was already paid for in this night; marks it paid."""
        seen = what in self._built
        self._built.add(what)
        return seen

    def timed(self, forwards_low: int, forwards_high: int) -> None:
        self.forwards[0] += forwards_low
        self.forwards[1] += forwards_high
