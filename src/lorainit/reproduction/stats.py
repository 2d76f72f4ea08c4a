"""Small-sample statistics of the verdicts: a mean with its two-sided 95% Student-t interval, paired differences over
seeds, and the least-squares slope of log y on log x (the paper's exponents are such slopes)."""

from __future__ import annotations

import math

import numpy as np

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond 30 the normal 1.96 is within 2%.
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_ci(values) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t interval (None with fewer than two values)."""
    a = np.asarray(list(values), dtype=float)
    if len(a) < 2:
        return float(a.mean()), None
    sd = 0.0 if np.ptp(a) == 0 else float(a.std(ddof=1))  # equal values: exactly 0, not the mean's rounding
    return float(a.mean()), t975(len(a) - 1) * sd / math.sqrt(len(a))


def loglog_slope(x, y) -> float:
    """Slope of the least-squares line through (log x, log y)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def fmt_ci(mean: float, half: float | None, spec: str = ".3g") -> str:
    """'mean ± half' with the half-width to two significant digits (a zero half-width, identical seeds, as 0)."""
    if half is None:
        return f"{mean:{spec}}"
    return f"{mean:{spec}} ± {half:.2g}" if abs(half) > 1e-12 * max(abs(mean), 1e-300) else f"{mean:{spec}} ± 0"


def spearman(x, y) -> float:
    """Spearman rank correlation (no ties expected: preheat ranks are distinct)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 1 and np.std(ry) > 0 else 0.0
