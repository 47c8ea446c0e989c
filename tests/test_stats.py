"""search_space.stats: the one rank-correlation module, against hand-computed values, scipy and
an enumerated bootstrap; and every caller of a Kendall tau uses it (no private copy)."""
from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from search_space.stats import bootstrap_over_seeds, kendall_tau, spearman_rho, zero_if_no_ranking

ROOT = Path(__file__).resolve().parents[1]


def test_tau_rho_hand_computed():
    # 6 pairs, one discordant (2,3): tau = (5 - 1) / 6; ranks differ by 0,1,1,0 -> rho = 1 - 6*2/60
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau([4, 3, 2, 1], [75.7, 78.5, 80.9, 83.0]) == pytest.approx(-1.0)
    # tau-b with a tie in x: 5 concordant, 0 discordant, 6 pairs, 1 tied in x -> 5/sqrt(5*6)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall_tau([1, 1, 1, 1], [1, 2, 3, 4]))


def test_tau_rho_match_scipy_on_fixed_arrays():
    rng = np.random.default_rng(3)
    for _ in range(5):
        x, y = rng.normal(size=7), rng.normal(size=7)
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
        assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    with pytest.raises(ValueError, match="equal-length sequences of >= 2, got 2, 3"):
        kendall_tau([1, 2], [1, 2, 3])


def test_bootstrap_two_seeds_matches_enumeration():
    target = [75.7, 78.5, 80.9, 83.0]
    a = np.array([50.0, 51.0, 52.0, 53.0])  # perfect order
    b = np.array([53.5, 52.5, 51.5, 49.0])  # reversed, with a larger spread
    s = np.stack([a, b])
    # Resamples: {a,a} p=1/4, {b,b} p=1/4, {a,b} p=1/2 -> the 2.5% / 97.5% quantiles are tau(b), tau(a).
    point, lo, hi = bootstrap_over_seeds(s, target, kendall_tau, n_boot=1000, rng=1)
    assert point == pytest.approx(kendall_tau((a + b) / 2, target))
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(1.0)
    # identical seeds: no spread
    p2, lo2, hi2 = bootstrap_over_seeds(np.stack([a, a, a]), target, kendall_tau, n_boot=200)
    assert p2 == lo2 == hi2 == pytest.approx(1.0)


def test_bootstrap_median_is_close_to_brute_force_distribution():
    # 3 seeds: enumerate all 27 resamples exactly and compare the bootstrap mean.
    rng = np.random.default_rng(0)
    s = rng.normal(50, 2, size=(3, 4))
    target = [1, 2, 3, 4]
    exact = np.mean([kendall_tau(s[list(c)].mean(0), target)
                     for c in itertools.product(range(3), repeat=3)])
    gen = np.random.default_rng(5)
    idx = gen.integers(0, 3, size=(3000, 3))
    approx = np.mean([kendall_tau(s[i].mean(0), target) for i in idx])
    assert approx == pytest.approx(exact, abs=0.05)
    _, lo, hi = bootstrap_over_seeds(s, target, kendall_tau, n_boot=2000)
    assert lo <= exact <= hi


def test_constant_mean_counts_as_zero_in_the_bootstrap():
    target = [75.7, 78.5, 80.9, 83.0]
    flat = np.full((3, 4), 10.0)  # every model at chance: no ranking information
    assert math.isnan(kendall_tau(flat[0], target))
    assert bootstrap_over_seeds(flat, target, kendall_tau, n_boot=50) == (0.0, 0.0, 0.0)
    assert zero_if_no_ranking(float("nan")) == 0.0 and zero_if_no_ranking(-0.5) == -0.5


def _scipy_rank_calls(path: Path) -> list[str]:
    """Names of scipy.stats rank correlations a file calls (attribute or imported name)."""
    names = {"kendalltau", "spearmanr"}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "scipy.stats":
            found += [a.name for a in node.names if a.name in names]
    return found


def test_no_package_computes_a_rank_correlation_outside_search_space_stats():
    """One rank-correlation module: scoring.py once had a private _tau, bench/supernet_common.py
    another; a new copy in any package (or in bench/, where p-values are not needed) fails here.
    bench_zero_cost.py prints scipy's p-values, which kendall_tau does not return."""
    allowed = {ROOT / "search_space" / "stats.py", ROOT / "bench" / "bench_zero_cost.py"}
    offenders = {}
    for pkg in ("search", "results", "latency_models", "search_space", "bench"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path not in allowed and _scipy_rank_calls(path):
                offenders[str(path.relative_to(ROOT))] = _scipy_rank_calls(path)
    assert offenders == {}
