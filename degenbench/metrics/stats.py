"""Intervals for rates."""
from __future__ import annotations

from statsmodels.stats.proportion import proportion_confint


def wilson(count: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval (95% by default) for count / n; (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(count, n, alpha=alpha, method="wilson")
    p = count / n  # the closed form rounds: 0 of 288 gives lo 8.7e-19 > p, a negative error bar
    return min(float(lo), p), max(float(hi), p)
