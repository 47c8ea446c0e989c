"""results.pareto: the one front, hypervolume and staircase, checked against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import results.pareto as pareto_mod
from results.pareto import (Objective, as_loss, baseline_comparison, dominates, dominating,
                            exact_mask, hypervolume, hypervolume_steps, pareto_mask,
                            pareto_mask_loss, reference_from_bounds, reference_point)

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


# -- every path of the exact mask, against a vectorised brute force -----------------------------
def _trade_off(n: int, k: int, seed: int, noise: int = 4) -> np.ndarray:
    """Rows near the plane sum(loss) = const (integer, with ties and copies): a front of many
    rows, most of the rest only just dominated -- what a search's trade-off looks like."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, k - 1))
    last = 60 * (k - 1) - x.sum(axis=1) + rng.integers(0, noise, n)
    loss = np.column_stack([x, last]).astype(float)
    loss[rng.integers(0, n, n // 50)] = loss[rng.integers(0, n, n // 50)]  # copies
    return loss


def _brute_mask_loss(loss: np.ndarray) -> np.ndarray:
    """Row i is dominated iff some row is <= everywhere and < somewhere (all columns losses)."""
    out = np.ones(len(loss), dtype=bool)
    for start in range(0, len(loss), 512):
        blk = loss[start:start + 512]
        le = np.all(loss[None, :, :] <= blk[:, None, :], axis=2)
        lt = np.any(loss[None, :, :] < blk[:, None, :], axis=2)
        out[start:start + 512] = ~np.any(le & lt, axis=1)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_exact_mask_matches_brute_force_any_dimension(k, n):
    rng = np.random.default_rng(100 * k + n)
    loss = rng.integers(0, 6, (n, k)).astype(float)  # many ties and duplicate rows
    loss[rng.random(n) < 0.2] = loss[0]  # exact copies of one row
    np.testing.assert_array_equal(exact_mask(loss), _brute_mask_loss(loss))
    np.testing.assert_array_equal(pareto_mask_loss(loss), _brute_mask_loss(loss))


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("n", [40, 700])
def test_exact_mask_on_trade_off_fronts(k, n):
    loss = _trade_off(n, k, seed=n + k)
    np.testing.assert_array_equal(exact_mask(loss), _brute_mask_loss(loss))


@pytest.mark.parametrize("k, n, used", [(2, 8193, True), (3, 9000, True), (2, 8192, False),
                                        (1, 9000, False), (3, 100, False)])
def test_the_prefilter_runs_only_on_large_inputs(monkeypatch, k, n, used):
    calls = []
    real = pareto_mod._prune_dominated
    monkeypatch.setattr(pareto_mod, "_prune_dominated", lambda x: calls.append(x.shape) or real(x))
    loss = _trade_off(n, k, seed=1) if k > 1 else np.arange(n, dtype=float)[:, None]
    np.testing.assert_array_equal(pareto_mask_loss(loss), exact_mask(loss))
    assert calls == ([(n, k)] if used else [])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_large_inputs_take_the_prefilter_and_stay_exact(k):
    """Above _PREFILTER_MIN_ROWS rows a sample's front prunes first: same mask as brute force,
    on data with ties, duplicates and a few far-out front points outside the sample."""
    n = pareto_mod._PREFILTER_MIN_ROWS + 1500
    loss = _trade_off(n, k, seed=k, noise=30 * k)
    # late winners: three front rows of the others, each improved in one objective
    on = np.flatnonzero(exact_mask(loss[:-3]))[:3]
    loss[-3:] = loss[on] - 0.5 * np.eye(3, k)
    mask = pareto_mask_loss(loss)
    front = loss[mask]
    # The mask is exact iff no front row is dominated by any row, and every other row is
    # dominated by some front row (domination is transitive: a dominated row always is).
    for p in front:
        assert not np.any(np.all(loss <= p, axis=1) & np.any(loss < p, axis=1))
    rest = loss[~mask]
    dom = np.zeros(len(rest), dtype=bool)
    for q in front:
        dom |= np.all(q <= rest, axis=1) & np.any(q < rest, axis=1)
    assert dom.all() and mask[-2] and 50 <= mask.sum() < n // 2  # a long front, not all rows
    kept = pareto_mod._prune_dominated(loss)
    assert set(np.flatnonzero(mask)) <= set(kept.tolist()) and len(kept) < n  # it pruned


def test_exact_mask_edge_cases():
    assert exact_mask(np.zeros((0, 2))).tolist() == []
    assert exact_mask(np.array([[3.0], [1.0], [1.0], [2.0]])).tolist() == [False, True, True, False]
    assert exact_mask(np.array([[1.0, 2.0], [1.0, 2.0]])).tolist() == [True, True]  # copies stay
    assert exact_mask(np.array([[1.0, 2.0], [1.0, 3.0], [2.0, 2.0]])).tolist() == [True, False,
                                                                                  False]
    for bad in (np.array([1.0, 2.0]), np.zeros((3, 0))):
        with pytest.raises(ValueError) as e:
            exact_mask(bad)
        assert str(e.value) == "pareto_mask: expected an (n, k) array"
    assert exact_mask(np.zeros((0, 2))).dtype == bool


def test_objective_sign_directions_and_text():
    lo, hi = Objective("latency_ms", "min"), Objective("top1", "max")
    assert (lo.sign, hi.sign, str(lo), str(hi)) == (1.0, -1.0, "latency_ms:min", "top1:max")
    vals = np.array([[50.0, 2.0], [60.0, 1.0], [55.0, 3.0]])
    np.testing.assert_array_equal(as_loss(vals, MAXMIN), [[-50.0, 2.0], [-60.0, 1.0],
                                                           [-55.0, 3.0]])
    assert pareto_mask(vals, MAXMIN).tolist() == [False, True, False]
    assert pareto_mask(vals, [Objective("top1", "min"), Objective("latency_ms", "max")]
                       ).tolist() == [True, False, True]


def test_reference_from_bounds_each_direction():
    objs = [Objective("top1", "max"), Objective("latency_ms", "min"), Objective("params", "min")]
    # top-1 worst 40 of range 20 -> 38; latency worst 3 of range 2 -> 3.2; params range 0 -> +1
    assert reference_from_bounds([40.0, 1.0, 5.0], [60.0, 3.0, 5.0], objs) == \
        pytest.approx([38.0, 3.2, 6.0])
    v = np.array([[60.0, 1.0, 5.0], [40.0, 3.0, 5.0]])
    assert reference_point(v, objs) == reference_from_bounds(v.min(0), v.max(0), objs)
    # a range below 1 is still pushed out by 10 % of itself (1 unit only for a zero range)
    assert reference_from_bounds([40.0, 1.0, 5.0], [40.5, 1.5, 5.0], objs) == \
        pytest.approx([39.95, 1.55, 6.0])
    assert reference_point(np.array([[40.0, 1.0, 5.0]]), objs) == pytest.approx([39.0, 2.0, 6.0])


def test_hypervolume_exact_values_and_reference_rules():
    # two points and the reference (top1 30, latency 5): the union of their boxes
    vals = np.array([[50.0, 1.0], [40.0, 0.5]])
    ref = [30.0, 5.0]
    assert hypervolume(vals, MAXMIN, ref) == pytest.approx(20 * 4 + 10 * 0.5)
    # a point not strictly better than the reference in every objective adds nothing
    assert hypervolume(np.vstack([vals, [[60.0, 5.0], [30.0, 0.1]]]), MAXMIN, ref) == \
        pytest.approx(85.0)
    assert hypervolume(np.array([[20.0, 1.0]]), MAXMIN, ref) == 0.0
    assert hypervolume(np.zeros((0, 2)), MAXMIN, ref) == 0.0
    with pytest.raises(ValueError) as e:
        hypervolume(vals, MAXMIN, [30.0, float("inf")])
    assert str(e.value) == "hypervolume: reference point must be finite"
    # three objectives: a single box
    three = [Objective("top1", "max"), Objective("latency_ms", "min"), Objective("p", "min")]
    assert hypervolume(np.array([[50.0, 1.0, 2.0]]), three, [30.0, 5.0, 4.0]) == \
        pytest.approx(20 * 4 * 2)


def test_hypervolume_steps_rejects_other_shapes_and_lists_changes_only():
    with pytest.raises(ValueError) as e:
        hypervolume_steps(np.zeros((3, 3)), MAXMIN + [Objective("p", "min")], [0.0, 1.0, 1.0])
    assert str(e.value) == "hypervolume_steps: expected an (n, 2) array"
    vals = np.array([[40.0, 2.0], [40.0, 2.0], [30.0, 3.0], [50.0, 2.0], [50.0, 1.0]])
    ref = [20.0, 4.0]
    assert hypervolume_steps(vals, MAXMIN, ref) == [
        (0, pytest.approx(40.0)), (3, pytest.approx(60.0)), (4, pytest.approx(90.0))]
    # same first objective, better second: the staircase entry is replaced, not added
    assert [i for i, _ in hypervolume_steps(np.array([[40.0, 2.0], [40.0, 1.0]]), MAXMIN,
                                            ref)] == [0, 1]


def test_baseline_comparison_indices_and_ties():
    acc = np.array([50.0, 52.0, 52.0, 49.0, 55.0, 51.0])
    cost = np.array([1.0, 2.0, 1.5, 0.5, 3.0, 2.0])
    r = baseline_comparison(acc, cost, 51.0, 2.0)
    assert r["best_acc_idx"] == 1  # 52 at cost <= 2: indices 1 and 2 tie, the lower wins
    assert r["lowest_cost_idx"] == 2  # acc >= 51: cheapest is 1.5
    # dominating: acc >= 51 and cost <= 2, strictly better in one (5 equals the baseline)
    assert r["dominating_idx"] == [2, 1]  # by cost, then by -acc
    assert baseline_comparison(acc, cost, None, 2.0) == {
        "best_acc_idx": 1, "lowest_cost_idx": None, "dominating_idx": None}
    assert baseline_comparison(acc, cost, 51.0, None) == {
        "best_acc_idx": None, "lowest_cost_idx": 2, "dominating_idx": None}
    assert baseline_comparison(acc, cost, 99.0, 0.1) == {
        "best_acc_idx": None, "lowest_cost_idx": None, "dominating_idx": []}
    # ties with the baseline: equal accuracy at lower cost dominates and is the cheapest; at
    # equal cost the higher accuracy is listed first
    acc2, cost2 = np.array([51.0, 53.0, 52.0, 51.0]), np.array([1.0, 1.8, 1.8, 2.0])
    r2 = baseline_comparison(acc2, cost2, 51.0, 2.0)
    assert r2["lowest_cost_idx"] == 0 and r2["dominating_idx"] == [0, 1, 2]


def test_dominates_and_dominating_edge_cases():
    assert dominating(np.zeros((0, 2)), [1.0, 1.0], MAXMIN).tolist() == []
    assert dominating(np.array([[51.0, 1.0]]), [50.0, 2.0], MAXMIN).tolist() == [0]
    assert dominating(np.zeros((0, 2)), [1.0, 1.0], MAXMIN).dtype == np.int64
    assert not dominates([50.0, 2.0], [50.0, 2.0], MAXMIN)
    assert dominates([50.0, 2.0], [49.0, 2.0], MAXMIN)
    assert not dominates([51.0, 3.0], [50.0, 2.0], MAXMIN)
