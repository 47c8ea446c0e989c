"""Rank statistics of the fidelity study (pure: numpy; no torch).

The correlations and the bootstrap are search_space.stats' (the one definition every package
uses); this module adds what only the study reports:

* :func:`rank_report` -- tau / rho with intervals, per-seed tau, the significance verdict;
* :func:`extrapolate_top1` -- learning-curve extrapolation (err = a * t^b).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from search_space.stats import bootstrap_over_seeds, kendall_tau, spearman_rho

__all__ = ["rank_report", "extrapolate_top1"]


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
