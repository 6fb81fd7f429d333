"""What a detector self-test is asked to do (:class:`SelftestOptions`) and what each effect size found
(:class:`Level`): shared by the worker processes that measure and the trials that judge."""

from __future__ import annotations

from dataclasses import dataclass, field

from perfsuite.cells.grid import Cell
from perfsuite.compare.stats import ALPHA, MIN_EFFECT_PCT
from perfsuite.compare.verdicts import REMEASURE

THREADS_NOTE = ("one thread: the tiny smoke cell gains nothing from more, and on a shared 2-core runner two OpenMP "
                "threads stall for whole scheduler slices (measured under load: median 0.3 ms, but 10-40 % of calls "
                "200-700 ms); run the suite the same way, OMP_NUM_THREADS=1")
MODES = ("ab", "baseline")
METRICS = ("slowdown", "norm_time", "time")


def family_of(profile: str) -> int:
    """How many tests one part of a run of ``profile`` makes, as the gate counts them (the Holm family of
    :func:`perfsuite.compare.sequential.control`): every timed cell's time and peak memory, the slow-down of the
    adapter and recompute cells, the subspace cell's time, and the method-wide groups (a method of two or more
    latency cells; every adapter's where there are several). Cells over the token budget are blank by design."""
    from perfsuite.cells.grid import budget_violation, get_profile, token_budget
    from perfsuite.compare.family import method_groups

    tests, methods = 0, {}
    for c in get_profile(profile).cells(device="cpu"):
        if c.workload == "subspace":
            tests += 1
        elif c.workload == "recompute" and not budget_violation(c.batch, c.window, token_budget(c)):
            tests += 3
        elif c.workload == "latency":
            adapter = c.adapter != "none" and c.rank > 0
            tests += 3 if adapter else 2
            if adapter:
                methods[c.adapter] = methods.get(c.adapter, 0) + 1
    return tests + method_groups(methods)


@dataclass(frozen=True)
class SelftestOptions:
    processes: int = 40  # worker processes: the pool the comparisons are drawn from
    trials: int = 300  # comparisons per mode and level, drawn from the pool
    runs: int = 5  # runs per side in A/B mode; baseline runs in baseline mode
    rounds: int = 100  # timed rounds per block: the smoke profile's rounds per latency cell
    warmup: int = 3
    effects_pct: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)
    modes: tuple[str, ...] = MODES
    metrics: tuple[str, ...] = METRICS
    device: str = "auto"
    model: str = "tiny"
    adapter: str = "lora"
    rank: int = 8
    batch: int = 1
    seq_len: int = 32
    dtype: str = "float32"
    alpha: float = ALPHA
    min_effect_pct: float = MIN_EFFECT_PCT
    remeasure: int = REMEASURE
    calibration_rounds: int = 300
    threads: int = 1  # torch CPU threads while measuring; 0 leaves torch's setting (see THREADS_NOTE)
    seed: int = 0
    family: int = 1  # judge at α / family: what a lone moved cell must pass in a run of that many tests (Holm)
    loop: str | None = None  # a profile: time its whole loop of the cell's shape and count per-run verdicts

    def __post_init__(self) -> None:
        if self.family < 1:
            raise ValueError("need family >= 1 (tests in a run)")
        if self.trials < 1 or self.rounds < 2 or self.warmup < 0 or self.calibration_rounds < 10 or self.threads < 0:
            raise ValueError("need trials >= 1, rounds >= 2, warmup >= 0, calibration_rounds >= 10, threads >= 0")
        if self.runs < 2:
            raise ValueError("need runs >= 2: a between-run spread needs two runs a side")
        need = max(2 * self.runs + bool(self.loop) if "ab" in self.modes else 0,
                   self.runs + 1 + self.remeasure if "baseline" in self.modes else 0)
        if self.processes < need:
            raise ValueError(f"need at least {need} processes for {self.runs} runs a side")
        if any(e <= 0 for e in self.effects_pct):
            raise ValueError("effect sizes must be positive (%)")
        if not self.modes or set(self.modes) - set(MODES) or not self.metrics or set(self.metrics) - set(METRICS):
            raise ValueError(f"modes must be among {MODES}, metrics among {METRICS}")

    @property
    def cell(self) -> Cell:
        device = "cuda" if self.device == "cuda" else "cpu"
        return Cell("latency", self.adapter, self.rank, batch=self.batch, seq_len=self.seq_len, dtype=self.dtype,
                    device=device, model=self.model)


@dataclass
class Level:
    """One effect size: the extra work that makes it, and what the trials decided, per mode and metric."""

    nominal_pct: float
    extra_ops: int
    measured_pct: float | None = None  # the slow-down the extra work really causes, measured on its own
    realized_pct: dict[str, float] = field(default_factory=dict)  # metric -> the effect in the trials' own blocks
    verdicts: dict[str, list[str]] = field(default_factory=dict)  # "mode/metric" -> one verdict per trial

    def count(self, key: str, verdict: str) -> int:
        return sum(v == verdict for v in self.verdicts.get(key, []))

