"""Rank statistics shared by every package (pure: numpy, scipy.stats; no torch).

The one place for "how well does one ranking agree with another": the fidelity study
(search/fidelity), the supernet's XS/S/L1/L3 check (search/proxy/supernet/scoring.py,
search/nas/supernet_search.py), the latency predictor's evaluation (latency_models/cli.py) and
the bench scripts all call these. It lives in the bottom layer because search.proxy cannot
import search.fidelity (fidelity imports proxy) and latency_models cannot import search.

* :func:`kendall_tau`, :func:`spearman_rho` -- scipy.stats' tau-b and rho, NaN for a constant
  side (no ranking information) instead of scipy's warning;
* :func:`zero_if_no_ranking` -- the rule that counts such a NaN as 0 where a number is needed
  (a bootstrap resample, a mean over seeds);
* :func:`bootstrap_over_seeds` -- percentile bootstrap over whole seeds.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .lazy import lazy_import

scipy_stats = lazy_import("scipy.stats")

__all__ = ["kendall_tau", "spearman_rho", "zero_if_no_ranking", "bootstrap_over_seeds"]


def _rank_correlation(name: str, fn, x: Sequence[float], y: Sequence[float]) -> float:
    """``fn(x, y).statistic`` after the checks both correlations share: two equal-length
    sequences of >= 2 (ValueError naming ``name``); NaN if either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{name}: need two equal-length sequences of >= 2, got {len(x)}, "
                         f"{len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(fn(x, y).statistic)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b (ties handled as scipy does). NaN if either side is constant."""
    return _rank_correlation("kendall_tau", scipy_stats.kendalltau, x, y)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties). NaN if either side is constant."""
    return _rank_correlation("spearman_rho", scipy_stats.spearmanr, x, y)


def zero_if_no_ranking(value: float) -> float:
    """A correlation that is NaN (a constant side, e.g. every model at chance: no ranking
    information) counted as 0; any finite value unchanged."""
    return value if math.isfinite(value) else 0.0


def bootstrap_over_seeds(scores: np.ndarray, target: Sequence[float],
                         stat: Callable[[Sequence[float], Sequence[float]], float],
                         n_boot: int = 2000, level: float = 0.95,
                         rng: int | np.random.Generator = 0) -> tuple[float, float, float]:
    """(point, low, high) of ``stat(mean over seeds of scores, target)``.

    ``scores`` is [seeds, architectures] (NaN = missing run, ignored in the mean). The interval
    is the percentile bootstrap over seeds: resample whole seeds with replacement (an
    architecture's runs under one seed stay together), average, apply ``stat``. With one seed
    the interval is the point (no spread can be estimated; search.fidelity.stats.rank_report
    flags that). A mean (or resample mean) that is constant (stat NaN) counts as 0
    (:func:`zero_if_no_ranking`).
    """
    s = np.atleast_2d(np.asarray(scores, float))
    target = list(target)
    if s.shape[1] != len(target):
        raise ValueError(f"bootstrap_over_seeds: scores have {s.shape[1]} columns, target "
                         f"{len(target)}")
    with np.errstate(all="ignore"):
        point = zero_if_no_ranking(stat(np.nanmean(s, axis=0), target))
    k = s.shape[0]
    if k < 2:
        return point, point, point
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, k, size=(n_boot, k))
    vals = np.empty(n_boot)
    with np.errstate(all="ignore"):
        for b in range(n_boot):
            m = np.nanmean(s[idx[b]], axis=0)
            vals[b] = zero_if_no_ranking(stat(m, target) if np.all(np.isfinite(m))
                                         else float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return point, float(lo), float(hi)
