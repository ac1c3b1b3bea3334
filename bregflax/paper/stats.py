"""Paired-seed statistics for a claim that arm A beats arm B.

Both arms are run with the same seeds (one seed fixes the initialization and the data
order), so each seed gives one difference A - B. ``paired`` reports the mean ± sd of each
arm, the mean difference with its two-sided 95% t interval over the seeds
(mean ± t_{0.975, n-1} * sd / sqrt(n)), the number of pairs and a verdict: ``held`` when
the interval lies on the claimed side of 0, ``not held`` when it lies on the other side,
``inconclusive`` when it contains 0 or there are fewer than two pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

# t_{0.975, df}, the two-sided 95% quantile of Student's t, for df = 1..30.
T975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836,
    2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
    2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546,
    2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
    2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553,
    2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # fmt: skip
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


def t975(df: int) -> float:
    """t_{0.975, df}: from the table up to 30, then the Cornish-Fisher series in 1/df."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4)
    )


@dataclasses.dataclass(frozen=True)
class Paired:
    """A paired comparison of arm A against arm B over seeds (``low``/``high``: None if n < 2)."""

    n: int
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    diff: float  # mean of A - B over the paired seeds
    diff_sd: float
    low: float | None
    high: float | None
    verdict: str
    seeds: tuple[int, ...]


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value, NaN for none)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    sd = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), sd


def paired(a: Mapping[int, float], b: Mapping[int, float], higher_is_better: bool = True) -> Paired:
    """Compares ``a`` and ``b`` (seed -> value) over the seeds they share.

    ``higher_is_better=False`` (an error, seconds per epoch) claims A - B < 0 instead.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    va = np.array([a[s] for s in seeds], dtype=np.float64)
    vb = np.array([b[s] for s in seeds], dtype=np.float64)
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(va), mean_sd(vb)
    diff, diff_sd = mean_sd(va - vb)
    n = len(seeds)
    low = high = None
    verdict = INCONCLUSIVE
    if n >= 2:
        half = t975(n - 1) * diff_sd / math.sqrt(n)
        low, high = diff - half, diff + half
        better, worse = (low > 0, high < 0) if higher_is_better else (high < 0, low > 0)
        verdict = HELD if better else NOT_HELD if worse else INCONCLUSIVE
    return Paired(n, mean_a, sd_a, mean_b, sd_b, diff, diff_sd, low, high, verdict, seeds)


def mean_interval(vals: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and its two-sided 95% t interval (None below two values)."""
    vals = np.asarray(list(vals), dtype=np.float64)
    if vals.size == 0:
        return math.nan, None, None
    mean = float(vals.mean())
    if vals.size < 2:
        return mean, None, None
    half = t975(vals.size - 1) * float(vals.std(ddof=1)) / math.sqrt(vals.size)
    return mean, mean - half, mean + half
