"""The statistics of paired timings, without torch: the per-round record of a cell and its reference
(:class:`PairedTiming`), the interquartile range and the order-statistic interval of a median.

:mod:`perfsuite.measure.timing` measures (through :mod:`perfsuite.measure.device`, which imports torch); comparisons, tables and the
history only read what it measured, so they import this module and load no torch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

NOISY_IQR_PCT = 10.0  # warn when IQR / median of a cell exceeds this (torch.utils.benchmark's threshold)
MEDIAN_CI_Z = 1.96  # the 95 % interval of a median from order statistics (normal approximation of the binomial)
MIN_SAMPLES_FOR_CI_PCT = 6  # fewer rounds give no usable interval for the loop's stopping rule


def median_interval_ranks(n: int) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the sorted samples bounding the distribution-free 95 % interval of their
    median: the k-th smallest and the k-th largest, k = ⌊n/2 − z·√n/2⌋ (clamped to the samples)."""
    k = max(0, int(math.floor(n / 2.0 - MEDIAN_CI_Z * math.sqrt(n) / 2.0)))
    return k, max(k, n - 1 - k)


def median_ci_pct(xs) -> float:
    """Half-width of the distribution-free 95 % interval of the median (order statistics), as % of the median."""
    n = len(xs)
    if n < MIN_SAMPLES_FOR_CI_PCT:
        return math.inf
    v = sorted(xs)
    lo, hi = median_interval_ranks(n)
    med = statistics.median(v)
    return 100.0 * (v[hi] - v[lo]) / (2 * med) if med > 0 else math.inf


def finite(v) -> float | None:
    """``v`` as a float when it is a finite number (bools excluded), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class PairedTiming:
    """Raw per-round times (ms) of a cell and of its paired reference, the same rounds of one loop."""

    adapter_ms: tuple[float, ...]
    ref_ms: tuple[float, ...]  # the paired reference: the r = 0 model, or plain decoding
    cycle: int = 2  # rounds per rotation of the loop they came from (positions every function took once)
    ratios: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(a / b for a, b in zip(self.adapter_ms, self.ref_ms) if b > 0))

    @property
    def time_ms(self) -> float:
        return statistics.median(self.adapter_ms)

    @property
    def ref_time_ms(self) -> float:
        return statistics.median(self.ref_ms)

    @property
    def pair_ratios(self) -> tuple[float, ...]:
        """Geometric means of the ratios of each cycle (every position once: the order bias cancels); a last
        partial cycle is one more, shorter mean."""
        r, c = self.ratios, max(1, self.cycle)
        return tuple(math.exp(statistics.fmean(math.log(x) for x in r[i:i + c])) for i in range(0, len(r), c))

    @property
    def slowdown_pct(self) -> float:
        """100·(t_adapter − t_base)/t_base, from the median of cycle ratios (robust to drift and order)."""
        return 100.0 * (statistics.median(self.pair_ratios) - 1.0)

    @property
    def iqr_pct(self) -> float:
        """Interquartile range of the adapted times, as % of their median."""
        return 100.0 * iqr(self.adapter_ms) / self.time_ms


def iqr(xs) -> float:
    if len(xs) < 2:
        return 0.0
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[2] - q[0]
