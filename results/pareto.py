"""The one Pareto front and the one hypervolume: pure numpy, no database, no drawing.

Every front in the tool (the end-of-search report, ``run_search.py pareto``, the dashboard, the
offline report, the progress line of a running search, the scaling explorer) is computed here,
so the same points always give the same front and the same hypervolume.

Conventions:

* An :class:`Objective` is a metric name with a direction ("max" for top-1, "min" for latency).
  Internally values become losses (every column minimised) by multiplying with ``sign``.
* A point is dominated when another is at least as good in every objective and strictly better
  in one; identical points do not dominate each other (all copies stay on the front).
* The hypervolume reference point follows one rule, :data:`REFERENCE_RULE`, computed by
  :func:`reference_point` over the points the caller considers (for a study: its full-budget
  candidates *and* its baselines, so the reference does not depend on which side wins).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from search_space.lazy import lazy_import

optuna_hv = lazy_import("optuna._hypervolume")  # exact WFG / sweep implementation

REFERENCE_RULE = ("worst value of each objective over the considered points, pushed 10% of "
                  "its range further out (1 unit when the range is 0)")


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "min" or "max"

    @property
    def sign(self) -> float:
        """Multiplier that turns the objective into a loss (minimised)."""
        return 1.0 if self.direction == "min" else -1.0

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"



# ------------------------------------------------------------------------------------------
def as_loss(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    signs = np.array([o.sign for o in objectives], dtype=float)
    return np.asarray(values, dtype=float) * signs


_PREFILTER_MIN_ROWS = 8192  # below this the exact sweep alone is cheaper
_PREFILTER_SAMPLE = 4096    # evenly spaced rows whose front prunes the rest
_PREFILTER_PRUNERS = 48     # at most this many sample-front rows used as pruners for k >= 3


def _prune_dominated(loss: np.ndarray) -> np.ndarray:
    """Indices of rows not strictly dominated by the front of an evenly spaced sample.

    Pruning only removes rows dominated by an actual row, so the exact front of the survivors
    is the exact front of all rows; it just makes the O(n log n) sort run on a few rows.
    """
    n, k = loss.shape
    sample = loss[np.linspace(0, n - 1, _PREFILTER_SAMPLE).astype(np.int64)]
    front = sample[exact_mask(sample)]
    if k == 2:
        # Staircase: sorted by column 0 ascending, column 1 strictly descending after dedupe.
        f = np.unique(front, axis=0)
        j = np.searchsorted(f[:, 0], loss[:, 0], side="right") - 1
        has = j >= 0
        jj = np.where(has, j, 0)
        fa, fb = f[jj, 0], f[jj, 1]
        dominated = has & (fb <= loss[:, 1]) & ((fa < loss[:, 0]) | (fb < loss[:, 1]))
        return np.flatnonzero(~dominated)
    # k >= 3: the sample-front rows that dominate most of the sample prune first; the set of
    # rows still undecided shrinks after each pruner, so later passes are cheap.
    counts = np.array([np.sum(np.all(q <= sample, axis=1) & np.any(q < sample, axis=1))
                       for q in front])
    remaining = np.arange(n)
    for q in front[np.argsort(-counts, kind="stable")[:_PREFILTER_PRUNERS]]:
        sub = loss[remaining]
        remaining = remaining[~(np.all(q <= sub, axis=1) & np.any(q < sub, axis=1))]
    return remaining


def pareto_mask_loss(loss: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``loss`` (n x k, every column minimised).

    Large inputs are first pruned by the front of an evenly spaced sample (see
    ``_prune_dominated``), then the exact algorithm runs on the survivors.
    """
    loss = np.asarray(loss, dtype=float)
    if loss.ndim == 2 and loss.shape[0] > _PREFILTER_MIN_ROWS and loss.shape[1] >= 2:
        keep = _prune_dominated(loss)
        mask = np.zeros(loss.shape[0], dtype=bool)
        mask[keep] = exact_mask(loss[keep])
        return mask
    return exact_mask(loss)


def exact_mask(loss: np.ndarray) -> np.ndarray:
    """Exact non-dominated mask.

    A row is dominated if another row is <= in every column and < in at least one; identical
    rows do not dominate each other (all copies stay on the front). 2-D: one O(n log n) sort and
    a prefix-minimum sweep. k >= 3: lexicographic sort, then peel non-dominated rows one at a
    time (each pass is vectorised over the rows still undecided; front-size passes).
    """
    loss = np.asarray(loss, dtype=float)
    n = loss.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    if loss.ndim != 2 or loss.shape[1] < 1:
        raise ValueError("pareto_mask: expected an (n, k) array")
    k = loss.shape[1]
    if k == 1:
        return loss[:, 0] == loss[:, 0].min()
    order = np.lexsort(loss.T[::-1])  # by column 0, then 1, ...
    s = loss[order]
    mask_sorted = np.zeros(n, dtype=bool)
    if k == 2:
        a, b = s[:, 0], s[:, 1]
        # First index of each run of equal a; b is ascending inside a run.
        group_start = np.searchsorted(a, a, side="left")
        prefix_min = np.concatenate(([np.inf], np.minimum.accumulate(b)))
        best_before = prefix_min[group_start]  # min b over rows with strictly smaller a
        mask_sorted = (b == b[group_start]) & (b < best_before)
    else:
        # Collapse duplicates so the peeling test "some column strictly better" is exact.
        new = np.ones(n, dtype=bool)
        new[1:] = np.any(s[1:] != s[:-1], axis=1)
        uniq_idx = np.flatnonzero(new)
        u = s[uniq_idx]
        group = np.cumsum(new) - 1  # sorted row -> its unique row
        if k == 3:
            mask_sorted = _front_3d_unique_sorted(u)[group]
            mask = np.empty(n, dtype=bool)
            mask[order] = mask_sorted
            return mask
        on = np.zeros(len(u), dtype=bool)
        remaining = np.arange(len(u))
        rest = u[:, 1:]
        while remaining.size:
            i = remaining[0]  # nothing left can dominate it (lexsort) -> non-dominated
            on[i] = True
            keep = np.any(rest[remaining] < rest[i], axis=1)
            remaining = remaining[keep]
        mask_sorted = on[group]
    mask = np.empty(n, dtype=bool)
    mask[order] = mask_sorted
    return mask


def _front_3d_unique_sorted(u: np.ndarray) -> np.ndarray:
    """Non-dominated mask of unique, lexicographically sorted 3-column rows in O(n log n).

    Every earlier row has a <= column 0, so row p is dominated iff some earlier row has
    (b, c) <= (p.b, p.c). A staircase of the (b, c) of earlier front rows (b ascending, c
    strictly descending) answers that with one bisection per row.
    """
    stair_b: list[float] = []
    stair_c: list[float] = []
    on = np.zeros(len(u), dtype=bool)
    for i, (b, c) in enumerate(u[:, 1:].tolist()):
        j = bisect_right(stair_b, b)
        if j and stair_c[j - 1] <= c:
            continue  # an earlier row is <= in b and c (and in a): dominated
        on[i] = True
        # Drop staircase entries that (b, c) now covers: b' >= b and c' >= c.
        lo = j
        if lo and stair_b[lo - 1] == b:
            lo -= 1  # same b, larger c (else we would have been dominated)
        hi = lo
        while hi < len(stair_b) and stair_c[hi] >= c:
            hi += 1
        stair_b[lo:hi] = [b]
        stair_c[lo:hi] = [c]
    return on


def pareto_mask(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Non-dominated rows of ``values`` (columns in objective units and directions)."""
    return pareto_mask_loss(as_loss(values, objectives))


def reference_point(values: np.ndarray, objectives: Sequence[Objective]) -> list[float]:
    """The hypervolume reference point, in objective units (see REFERENCE_RULE)."""
    v = np.asarray(values, dtype=float)
    return reference_from_bounds(v.min(axis=0), v.max(axis=0), objectives)


def reference_from_bounds(mins: Sequence[float], maxs: Sequence[float],
                          objectives: Sequence[Objective]) -> list[float]:
    """:func:`reference_point` from per-objective min and max (objective units), for callers
    that have the bounds from an aggregate query instead of the values."""
    lo, hi = np.asarray(mins, dtype=float), np.asarray(maxs, dtype=float)
    signs = np.array([o.sign for o in objectives])
    loss_a, loss_b = lo * signs, hi * signs
    worst, best = np.maximum(loss_a, loss_b), np.minimum(loss_a, loss_b)
    span = worst - best
    ref_loss = worst + np.where(span > 0, 0.1 * span, 1.0)
    return [float(r * o.sign) for r, o in zip(ref_loss, objectives)]


def hypervolume(values: np.ndarray, objectives: Sequence[Objective],
                reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``values`` and bounded by ``reference`` (objective units).

    Uses Optuna's exact implementation (``optuna._hypervolume.compute_hypervolume``: sweep in
    2-D/3-D, WFG beyond) after converting to minimisation; points not strictly better than the
    reference in every objective contribute nothing and are dropped first.
    """
    loss = as_loss(values, objectives)
    ref = as_loss(np.asarray(reference, dtype=float)[None, :], objectives)[0]
    if not np.all(np.isfinite(ref)):
        raise ValueError("hypervolume: reference point must be finite")
    loss = loss[np.all(loss < ref, axis=1)]
    if loss.shape[0] == 0:
        return 0.0
    loss = loss[pareto_mask_loss(loss)]
    return float(optuna_hv.compute_hypervolume(loss, ref, assume_pareto=True))


def baseline_comparison(acc: np.ndarray, cost: np.ndarray, b_acc: float | None,
                        b_cost: float | None) -> dict[str, Any]:
    """Compare searched points (acc: maximise, cost: minimise) with one baseline point.

    Returns indices into the arrays: ``best_acc_idx`` (highest acc with cost <= b_cost),
    ``lowest_cost_idx`` (lowest cost with acc >= b_acc) and ``dominating_idx`` (acc >= b_acc
    and cost <= b_cost, strictly better in at least one), sorted by cost then -acc. Ties are
    broken by the lower index. A None baseline value makes the dependent answers None.
    """
    acc, cost = np.asarray(acc, dtype=float), np.asarray(cost, dtype=float)
    out: dict[str, Any] = {"best_acc_idx": None, "lowest_cost_idx": None, "dominating_idx": None}
    if b_cost is not None:
        ok = np.flatnonzero(cost <= b_cost)
        if ok.size:
            out["best_acc_idx"] = int(ok[np.argmax(acc[ok])])  # argmax: first of the ties
    if b_acc is not None:
        ok = np.flatnonzero(acc >= b_acc)
        if ok.size:
            out["lowest_cost_idx"] = int(ok[np.argmin(cost[ok])])
    if b_acc is not None and b_cost is not None:
        dom = np.flatnonzero((acc >= b_acc) & (cost <= b_cost) & ((acc > b_acc) | (cost < b_cost)))
        out["dominating_idx"] = dom[np.lexsort((-acc[dom], cost[dom]))].tolist()
    return out


def hypervolume_steps(values: np.ndarray, objectives: Sequence[Objective],
                      reference: Sequence[float]) -> list[tuple[int, float]]:
    """(index, hypervolume) wherever the front of ``values[:index + 1]`` changes (2 objectives).

    Rows are in trial order; the result is the hypervolume-over-trials staircase. A 2-D
    staircase of the prefix front (first objective ascending as a loss, second strictly
    descending) answers "dominated by an earlier point?" with one bisection, so a long study
    costs one pass plus one :func:`hypervolume` per front change.
    """
    loss = as_loss(values, objectives)
    if loss.ndim != 2 or loss.shape[1] != 2:
        raise ValueError("hypervolume_steps: expected an (n, 2) array")
    first: list[float] = []   # staircase in loss space: first ascending, second descending
    second: list[float] = []
    steps = []
    for i, (a, b) in enumerate(loss.tolist()):
        j = bisect_right(first, a)
        if j and second[j - 1] <= b:
            continue  # an earlier point is at least as good in both: front unchanged
        lo = j - 1 if j and first[j - 1] == a else j  # same first loss, worse second: replaced
        hi = j
        while hi < len(first) and second[hi] >= b:
            hi += 1  # worse in the first loss and no better in the second: now dominated
        first[lo:hi], second[lo:hi] = [a], [b]
        front = np.column_stack([first, second]) * np.array([o.sign for o in objectives])
        steps.append((i, hypervolume(front, objectives, reference)))
    return steps


def dominates(point: Sequence[float], other: Sequence[float],
              objectives: Sequence[Objective]) -> bool:
    """Whether ``point`` is at least as good as ``other`` everywhere and better somewhere."""
    a = as_loss(np.asarray(point, dtype=float)[None, :], objectives)[0]
    b = as_loss(np.asarray(other, dtype=float)[None, :], objectives)[0]
    return bool(np.all(a <= b) and np.any(a < b))


def dominating(values: np.ndarray, baseline: Sequence[float],
               objectives: Sequence[Objective]) -> np.ndarray:
    """Indices of the rows of ``values`` that dominate the ``baseline`` point."""
    loss = as_loss(values, objectives)
    if loss.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    b = as_loss(np.asarray(baseline, dtype=float)[None, :], objectives)[0]
    return np.flatnonzero(np.all(loss <= b, axis=1) & np.any(loss < b, axis=1))
