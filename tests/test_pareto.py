"""results.pareto: the one front, hypervolume and staircase, checked against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from results.pareto import (Objective, dominates, dominating, hypervolume, hypervolume_steps,
                            pareto_mask, reference_point)

MAXMIN = [Objective("top1", "max"), Objective("latency_ms", "min")]


def _brute_front(vals: np.ndarray, objs) -> np.ndarray:
    return np.array([not any(dominates(q, p, objs) for q in vals) for p in vals])


def _grid_hv(vals: np.ndarray, ref) -> float:
    """Hypervolume of integer (top1 max, latency min) points by counting unit cells."""
    total = 0
    for t, l in itertools.product(range(int(ref[0]), 10), range(0, int(ref[1]))):
        cell = (t + 0.5, l + 0.5)  # a cell is covered if some point dominates its centre
        if any(v[0] >= cell[0] and v[1] <= cell[1] and v[0] > ref[0] and v[1] < ref[1]
               for v in vals):
            total += 1
    return float(total)


def test_front_and_hypervolume_match_brute_force():
    rng = np.random.default_rng(0)
    vals = np.column_stack([rng.integers(0, 8, 40), rng.integers(1, 8, 40)]).astype(float)
    np.testing.assert_array_equal(pareto_mask(vals, MAXMIN), _brute_front(vals, MAXMIN))
    ref = [-1.0, 9.0]
    assert hypervolume(vals, MAXMIN, ref) == pytest.approx(_grid_hv(vals, ref))


def test_reference_point_rule():
    vals = np.array([[40.0, 1.0], [50.0, 3.0]])
    # worst top-1 40 minus 10% of the 10-point range; worst latency 3 plus 10% of 2 ms
    assert reference_point(vals, MAXMIN) == pytest.approx([39.0, 3.2])
    # zero range: one unit further out
    assert reference_point(np.array([[40.0, 1.0]]), MAXMIN) == pytest.approx([39.0, 2.0])


def test_hypervolume_steps_brute_force():
    """The staircase gives the hypervolume of every prefix (random data with ties)."""
    rng = np.random.default_rng(3)
    vals = np.column_stack([rng.integers(0, 8, 60), rng.integers(1, 8, 60)]).astype(float)
    ref = [-1.0, 9.0]
    steps = dict(hypervolume_steps(vals, MAXMIN, ref))
    prev = 0.0
    assert steps, "a random study has front changes"
    for i in range(len(vals)):
        want = hypervolume(vals[:i + 1], MAXMIN, ref)
        if i in steps:
            assert steps[i] == pytest.approx(want)
            assert want > prev  # a listed step is a real change
        else:
            assert want == pytest.approx(prev)  # no step listed: the front did not change
        prev = want


def test_dominating_a_baseline():
    vals = np.array([[50.0, 1.0], [50.0, 2.0], [49.0, 1.0], [51.0, 2.5]])
    base = [50.0, 2.0]
    # [50, 2] equals the baseline (not strictly better); [49, 1] is worse in top-1
    assert dominating(vals, base, MAXMIN).tolist() == [0]
    assert dominates([50.0, 1.0], base, MAXMIN) and not dominates(base, base, MAXMIN)
