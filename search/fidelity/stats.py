"""Rank statistics of the fidelity study (pure: numpy, scipy.stats; no torch).

* :func:`kendall_tau`, :func:`spearman_rho` -- scipy.stats' tau-b and rho, NaN for a constant
  side (no ranking information) instead of scipy's warning;
* :func:`bootstrap_over_seeds` -- percentile bootstrap over whole seeds;
* :func:`rank_report` -- tau / rho with intervals, per-seed tau, the significance verdict;
* :func:`extrapolate_top1` -- learning-curve extrapolation (err = a * t^b).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from search_space.lazy import lazy_import

scipy_stats = lazy_import("scipy.stats")

__all__ = ["kendall_tau", "spearman_rho", "bootstrap_over_seeds", "rank_report",
           "extrapolate_top1"]


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


def bootstrap_over_seeds(scores: np.ndarray, target: Sequence[float],
                         stat: Callable[[Sequence[float], Sequence[float]], float],
                         n_boot: int = 2000, level: float = 0.95,
                         rng: int | np.random.Generator = 0) -> tuple[float, float, float]:
    """(point, low, high) of ``stat(mean over seeds of scores, target)``.

    ``scores`` is [seeds, architectures] (NaN = missing run, ignored in the mean). The interval
    is the percentile bootstrap over seeds: resample whole seeds with replacement (an
    architecture's runs under one seed stay together), average, apply ``stat``. With one seed
    the interval is the point (no spread can be estimated) -- :func:`rank_report` flags that.
    A mean (or resample mean) that is constant (stat NaN) counts as 0: no ranking information.
    """
    s = np.atleast_2d(np.asarray(scores, float))
    target = list(target)
    if s.shape[1] != len(target):
        raise ValueError(f"bootstrap_over_seeds: scores have {s.shape[1]} columns, target "
                         f"{len(target)}")
    with np.errstate(all="ignore"):
        point = stat(np.nanmean(s, axis=0), target)
    if not math.isfinite(point):
        point = 0.0  # constant scores (e.g. every model at chance): no ranking information
    k = s.shape[0]
    if k < 2:
        return point, point, point
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, k, size=(n_boot, k))
    vals = np.empty(n_boot)
    with np.errstate(all="ignore"):
        for b in range(n_boot):
            m = np.nanmean(s[idx[b]], axis=0)
            v = stat(m, target) if np.all(np.isfinite(m)) else float("nan")
            vals[b] = 0.0 if not math.isfinite(v) else v
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return point, float(lo), float(hi)


def rank_report(scores: np.ndarray, target: Sequence[float], n_boot: int = 2000,
                rng: int = 0) -> dict[str, Any]:
    """Tau and rho of mean scores vs target, bootstrap intervals, per-seed taus, significance.

    ``significant`` is True only when the tau interval excludes zero; with fewer than two
    complete seeds there is no interval and the verdict is "not significant (1 seed)".
    """
    s = np.atleast_2d(np.asarray(scores, float))
    complete = s[np.all(np.isfinite(s), axis=1)]
    tau, tlo, thi = bootstrap_over_seeds(s, target, kendall_tau, n_boot, rng=rng)
    rho, rlo, rhi = bootstrap_over_seeds(s, target, spearman_rho, n_boot, rng=rng)
    per_seed = [kendall_tau(row, target) for row in complete]
    n = len(complete)
    if n < 2:
        verdict, sig = "not significant (fewer than 2 seeds: no interval)", False
    elif tlo > 0 or thi < 0:
        verdict, sig = "significant", True
    else:
        verdict, sig = "not significant (interval spans zero)", False
    return {"tau": tau, "tau_lo": tlo, "tau_hi": thi, "rho": rho, "rho_lo": rlo, "rho_hi": rhi,
            "tau_per_seed": per_seed, "seeds": n,
            "seeds_tau1": int(sum(1 for t in per_seed if t > 1 - 1e-9)),
            "significant": sig, "verdict": verdict,
            "mean": [float(v) for v in np.nanmean(s, axis=0)]}


def extrapolate_top1(epochs: Sequence[float], top1: Sequence[float], to_epoch: float) -> float:
    """Learning-curve extrapolation: fit err(t) = a * t^b (least squares in log-log) to the
    per-epoch top-1 and evaluate at ``to_epoch``. Needs >= 2 epochs; clipped to [0, 100]."""
    t = np.asarray(epochs, float)
    e = np.clip(100.0 - np.asarray(top1, float), 1e-3, None)
    if len(t) < 2:
        raise ValueError("extrapolate_top1: need at least two epochs of history")
    b, loga = np.polyfit(np.log(t), np.log(e), 1)
    return float(np.clip(100.0 - math.exp(loga) * to_epoch ** b, 0.0, 100.0))
