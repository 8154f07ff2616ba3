"""The spread of repeated runs and verdicts between configurations: pure functions over per-seed values.

The method (README "Repeats, confidence intervals and verdicts"):
- a mean's 95% confidence interval is Student's t interval (``scipy.stats.t``);
- "is A better than B" is a paired t-test over the seeds both ran (``scipy.stats.ttest_rel``) with its 95%
  interval of the mean difference; the best configuration is compared with every other one and the p-values
  are Holm-corrected (the verdict is "beats" only when the corrected p is below 0.05).

Why not a bootstrap or Wilcoxon at the seed counts sweeps afford (3-10): the bootstrap interval is too
narrow at small N (at 3 seeds it is about the range of the differences: one false win in eight), and the
Wilcoxon signed-rank test cannot reach p < 0.05 below 6 pairs (its smallest two-sided p at 5 is 0.0625).
The t-test assumes roughly normal differences; at 2 seeds it detects only very large ones, at 1 nothing.
Holm's step-down is a few lines here: scipy has only Benjamini-Hochberg (``false_discovery_control``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
METHOD = "paired t-test over the shared seeds (scipy.stats.ttest_rel), Holm-corrected, 95%"


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and the 95% t interval of the mean (NaN where N is too small)."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def spread(values: Sequence[float]) -> Spread:
    """The spread of finite ``values`` (NaN ones are left out)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Spread(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    from scipy import stats  # (0.5 s: imported where two or more seeds need it, not at every start)

    half = float(stats.t.ppf((1 + LEVEL) / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """A against B over their ``n`` shared seeds: ``diff`` is the mean advantage of A (in the metric's units,
    positive when A is better whatever the direction), ``low``-``high`` its 95% interval, ``p`` the
    two-sided p-value and ``p_holm`` the corrected one (set by ``verdicts``)."""

    a: str
    b: str
    n: int
    diff: float
    low: float
    high: float
    p: float
    p_holm: float = math.nan
    alpha: float = 1 - LEVEL

    @property
    def better(self) -> bool:
        """A beats B: the corrected p is below alpha, and A is ahead."""
        p = self.p if math.isnan(self.p_holm) else self.p_holm
        return p < self.alpha and self.diff > 0

    def text(self, metric: str) -> str:
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        ci = f"95% CI {_num(self.low)} to {_num(self.high)}"
        if self.better:
            return f"{self.a} beats {self.b} by {_num(self.diff)} {metric} ({ci}, {seeds}, {self._p()})"
        if self.n < 2:
            return f"{self.a} is not distinguishable from {self.b} at {seeds} (a comparison needs 2 or more)"
        return (
            f"{self.a} is not distinguishable from {self.b} at {seeds} "
            f"(difference {_num(self.diff)} {metric}, {ci}, {self._p()})"
        )

    def _p(self) -> str:
        held = "Holm-corrected p" if not math.isnan(self.p_holm) else "p"
        value = self.p if math.isnan(self.p_holm) else self.p_holm
        return f"{held}={value:.2g}" if math.isfinite(value) else f"{held} undefined"


def _num(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "nan"


def paired(
    a: Mapping[str, float], b: Mapping[str, float], mode: str, names: tuple[str, str] = ("A", "B")
) -> Comparison:
    """Paired t-test of A against B over the seeds (keys) both have finite values for."""
    shared = [k for k in a if k in b and math.isfinite(a[k]) and math.isfinite(b[k])]
    sign = 1.0 if mode == "max" else -1.0
    d = np.asarray([sign * (a[k] - b[k]) for k in shared], dtype=float)
    n = len(d)
    if n < 2:
        diff = float(d.mean()) if n else math.nan
        return Comparison(*names, n, diff, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if float(d.std()) == 0.0:  # every seed differs by the same amount (0: the same runs)
        return Comparison(*names, n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "precision loss" on nearly equal samples
        result = stats.ttest_1samp(d, 0.0)
        ci = result.confidence_interval(LEVEL)
    return Comparison(*names, n, mean, float(ci.low), float(ci.high), float(result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down correction: the adjusted p-values, in the order given (NaN stays NaN)."""
    finite = [(p, i) for i, p in enumerate(pvalues) if math.isfinite(p)]
    m = len(finite)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for step, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - step) * p))
        adjusted[i] = running
    return adjusted


def verdicts(
    configs: Sequence[tuple[str, Mapping[str, float]]], mode: str, alpha: float = 1 - LEVEL
) -> list[Comparison]:
    """The first configuration (the best) against each of the others, Holm-corrected together."""
    if len(configs) < 2:
        return []
    best_name, best = configs[0]
    raw = [paired(best, samples, mode, (best_name, name)) for name, samples in configs[1:]]
    adjusted = holm([c.p for c in raw])
    return [
        Comparison(c.a, c.b, c.n, c.diff, c.low, c.high, c.p, p_holm, alpha)
        for c, p_holm in zip(raw, adjusted, strict=True)
    ]


def ranks(comparisons: Sequence[Comparison]) -> list[int]:
    """Competition ranks of the best and of each configuration compared with it (in that order): those it
    does not beat over 2 or more shared seeds share rank 1; the others keep their place."""
    return [1] + [1 if c.n >= 2 and not c.better else i + 2 for i, c in enumerate(comparisons)]
