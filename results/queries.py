"""Queries over the results database: Pareto fronts, hypervolume, comparison with baselines.

Pure data, no drawing: every function returns plain dicts/lists (JSON-ready) or numpy arrays,
for the CLI (``results.report`` renders them) and the dashboard alike. The numeric kernels
(:func:`pareto_mask`, :func:`hypervolume`, :func:`baseline_comparison`) take arrays and know
nothing about the database, so they are tested against brute force on random data.

Objectives are trial metric columns (``schema.TRIAL_METRIC_COLUMNS``) with a direction, e.g.
``top1`` (max) and ``latency_ms`` (min: predicted latency on the study's device).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sqlalchemy import select

from .schema import (COMPLETED, TRIAL_METRIC_COLUMNS, Architecture, LatencyPrediction,
                     Study, Trial)
from .store import ResultsStore

# Natural direction of each metric column; "name:min"/"name:max" overrides it.
DEFAULT_DIRECTIONS = {"top1": "max", "top5": "max", "val_loss": "min", "latency_ms": "min",
                      "latency_std_ms": "min", "params": "min", "gmacs": "min",
                      "synflow": "max", "naswot": "max", "grad_norm": "max",
                      "train_seconds": "min"}
assert set(DEFAULT_DIRECTIONS) == set(TRIAL_METRIC_COLUMNS)
FIDELITY_CHOICES = ("full", "any")  # or a study fidelity key (canonical JSON of the budget)
_IN_CHUNK = 500  # ids per IN (...) list when fetching details of front members


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


def parse_objectives(spec: str | Sequence[str], allowed_counts=(2, 3)) -> list[Objective]:
    """``"top1,latency_ms"`` or ``["top1:max", "params:min"]`` -> objectives (validated)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out = []
    for it in items:
        name, _, d = it.partition(":")
        if name not in DEFAULT_DIRECTIONS:
            raise ValueError(f"objective {name!r}: allowed {', '.join(DEFAULT_DIRECTIONS)} "
                             "(optionally :min or :max)")
        d = d or DEFAULT_DIRECTIONS[name]
        if d not in ("min", "max"):
            raise ValueError(f"objective {it!r}: direction must be min or max")
        out.append(Objective(name, d))
    if len(out) not in allowed_counts:
        raise ValueError(f"objectives {','.join(items)!r}: give {' or '.join(map(str, allowed_counts))} "
                         "comma-separated objectives, e.g. top1,latency_ms")
    if len({o.name for o in out}) != len(out):
        raise ValueError(f"objectives {','.join(items)!r}: each objective at most once")
    return out


# ------------------------------------------------------------------------------------------
# numeric kernels (pure numpy)
# ------------------------------------------------------------------------------------------
def _as_loss(values: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
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
    front = sample[_exact_mask(sample)]
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
        mask[keep] = _exact_mask(loss[keep])
        return mask
    return _exact_mask(loss)


def _exact_mask(loss: np.ndarray) -> np.ndarray:
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
    from bisect import bisect_right

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
    return pareto_mask_loss(_as_loss(values, objectives))


def default_reference(values: np.ndarray, objectives: Sequence[Objective]) -> list[float]:
    """Default hypervolume reference point, in objective units: the worst value of each
    objective over all considered trials, pushed 10 % of its range further out (1 unit if the
    range is 0), so that the extreme front members still contribute volume."""
    v = np.asarray(values, dtype=float)
    return reference_from_bounds(v.min(axis=0), v.max(axis=0), objectives)


def reference_from_bounds(mins: Sequence[float], maxs: Sequence[float],
                          objectives: Sequence[Objective]) -> list[float]:
    """:func:`default_reference` from per-objective min and max (objective units)."""
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
    from optuna._hypervolume import compute_hypervolume

    loss = _as_loss(values, objectives)
    ref = _as_loss(np.asarray(reference, dtype=float)[None, :], objectives)[0]
    if not np.all(np.isfinite(ref)):
        raise ValueError("hypervolume: reference point must be finite")
    loss = loss[np.all(loss < ref, axis=1)]
    if loss.shape[0] == 0:
        return 0.0
    loss = loss[pareto_mask_loss(loss)]
    return float(compute_hypervolume(loss, ref, assume_pareto=True))


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


# ------------------------------------------------------------------------------------------
# database side
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialFilter:
    """Which trials a query considers. Only COMPLETED trials are ever on a front.

    studies: study names (None = all); device: studies whose latency target is this device;
    dataset_id: studies on this dataset; fidelity: "full" (default: trials that reached their
    study's full proxy budget), "any", or a study fidelity key (canonical budget JSON; implies
    full budget within those studies).

    latency_device: take the ``latency_ms`` objective from ``sfn_latency_predictions`` for
    this device (one predictor version: ``predictor_version`` or the newest one recorded for
    the device) instead of the trial's own prediction for its study's device; trials whose
    architecture has no such prediction are left out.
    """
    studies: tuple[str, ...] | None = None
    device: str | None = None
    dataset_id: str | None = None
    fidelity: str = "full"
    latency_device: str | None = None
    predictor_version: str | None = None


def resolve_predictor_version(store: ResultsStore, device: str,
                              version: str | None = None) -> str:
    """The predictor version used for ``device``: the given one (checked) or the newest."""
    with store.transaction() as s:
        q = select(LatencyPrediction.predictor_version).where(LatencyPrediction.device == device)
        if version is not None:
            q = q.where(LatencyPrediction.predictor_version == version)
        v = s.scalars(q.order_by(LatencyPrediction.created_at.desc(),
                                 LatencyPrediction.id.desc()).limit(1)).first()
    if v is None:
        what = f"predictor version {version!r} on " if version else ""
        raise ValueError(f"--latency-device {device!r}: no latency predictions for "
                         f"{what}this device in the database")
    return v


def resolve_studies(store: ResultsStore, flt: TrialFilter) -> list[dict]:
    """The studies a filter selects (id, name, device, dataset_id, fidelity_key)."""
    with store.transaction() as s:
        q = select(Study.id, Study.name, Study.device, Study.dataset_id, Study.fidelity_key)
        if flt.studies:
            q = q.where(Study.name.in_(list(flt.studies)))
        if flt.device is not None:
            q = q.where(Study.device == flt.device)
        if flt.dataset_id is not None:
            q = q.where(Study.dataset_id == flt.dataset_id)
        if flt.fidelity not in FIDELITY_CHOICES:
            q = q.where(Study.fidelity_key == flt.fidelity)
        rows = [dict(r._mapping) for r in s.execute(q.order_by(Study.id))]
    if flt.studies:
        missing = sorted(set(flt.studies) - {r["name"] for r in rows})
        if missing:
            with store.transaction() as s:
                known = set(s.scalars(select(Study.name).where(Study.name.in_(missing))))
            unknown = [m for m in missing if m not in known]
            if unknown:
                raise ValueError(f"study {unknown[0]!r}: not in this database "
                                 "(see: run_search.py studies)")
    return rows


def _points_query(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                  exclude_arch: Sequence[str] = ()):
    """SELECT id, objective columns of the considered trials, or None if no study matches."""
    q, _ = _points_query_cols(store, objectives, flt, exclude_arch)
    return q


def _points_query_cols(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                       exclude_arch: Sequence[str] = (), use_filter_index: bool = True):
    """(query, objective column expressions); (None, None) if no study matches.

    ``use_filter_index=False`` writes the status and study tests so that SQLite cannot serve
    them from the (status, full_budget, study_id) or (study_id, trial_key) indexes. Without ANALYZE statistics the planner takes that
    index for any equality on status, which is right for one study among many but wrong in two
    cases measured at 1M rows: a scan where most rows match (the table scan is ~35% faster) and
    primary-key lookups of a sample (0.97 s through the index, milliseconds by rowid).
    """
    studies = resolve_studies(store, flt)
    if not studies:
        return None, None
    cols = [Trial.__table__.c[o.name] for o in objectives]
    pred = None
    if flt.latency_device is not None and any(o.name == "latency_ms" for o in objectives):
        version = resolve_predictor_version(store, flt.latency_device, flt.predictor_version)
        pred = (select(LatencyPrediction.arch_hash, LatencyPrediction.latency_ms)
                .where(LatencyPrediction.device == flt.latency_device,
                       LatencyPrediction.predictor_version == version).subquery("pred"))
        cols = [pred.c.latency_ms.label("latency_ms") if o.name == "latency_ms" else c
                for o, c in zip(objectives, cols)]
    q = select(Trial.id, *cols)
    if pred is not None:
        # (arch_hash, device, predictor_version) is unique: at most one row per trial.
        q = q.join(pred, pred.c.arch_hash == Trial.arch_hash)
        cols = [pred.c.latency_ms if o.name == "latency_ms" else c
                for o, c in zip(objectives, cols)]
    status = Trial.status if use_filter_index else Trial.status.concat("")
    q = q.where(status == COMPLETED, *[c.is_not(None) for c in cols])
    if flt.fidelity != "any":
        q = q.where(Trial.full_budget.is_(True))
    if len(studies) != _count_studies(store):  # no IN list when every study is selected
        study_id = Trial.study_id if use_filter_index else Trial.study_id + 0
        q = q.where(study_id.in_([st["id"] for st in studies]))
    if exclude_arch:
        q = q.where(Trial.arch_hash.not_in(list(exclude_arch)))
    return q, cols


def _raw_rows(store: ResultsStore, q) -> list[tuple]:
    """Rows of a Core select as plain tuples. On SQLite through the DB-API cursor (several
    times faster than SQLAlchemy rows at 1M rows); values still travel as bound parameters."""
    with store.transaction() as s:
        conn = s.connection()
        if conn.dialect.name != "sqlite":
            return [tuple(r) for r in conn.execute(q)]
        compiled = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        args = [params[name] for name in compiled.positiontup]  # "?" placeholders, in order
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(str(compiled), args)
            return cur.fetchall()
        finally:
            cur.close()


def _to_arrays(rows: list[tuple], k: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, k))
    # fromiter over the flattened rows: ~15 % faster than np.array(list of tuples) at 1M.
    # Trial ids are far below 2**53, so passing them through float64 is exact.
    arr = np.fromiter(itertools.chain.from_iterable(rows), dtype=float,
                      count=len(rows) * (k + 1)).reshape(len(rows), k + 1)
    return arr[:, 0].astype(np.int64), arr[:, 1:]


def fetch_points(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                 exclude_arch: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(trial ids, values n x k) of COMPLETED trials matching ``flt`` with every objective set.

    Fetches only the id and objective columns; the WHERE clause is served by the
    (status, full_budget, study_id) index.
    """
    q = _points_query(store, objectives, flt, exclude_arch)
    if q is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(objectives)))
    return _to_arrays(_raw_rows(store, q), len(objectives))


# Large SQLite sets are pruned inside SQLite (see fetch_front_candidates): measured at 900k
# rows on a quiet machine, one aggregate scan + one pruned scan cost ~0.6 s where fetching
# every row as Python tuples costs ~0.9 s (BENCHMARKS.md). False: always fetch every row.
SQL_PRUNE = True
SQL_PRUNE_MIN_ROWS = 50_000  # from this many considered trials on, prune inside SQLite
_SQL_PRUNERS = 8             # sample-front rows turned into "NOT dominated by" clauses
_SQL_SAMPLE = 4096           # random trial ids looked up (by primary key) to find the pruners


def fetch_front_candidates(store: ResultsStore, objectives: Sequence[Objective],
                           flt: TrialFilter) -> dict[str, Any]:
    """A superset of the Pareto front of the considered trials, plus their count and bounds.

    Small sets (and non-SQLite backends) are fetched whole. Large SQLite sets cost two scans
    that build no Python object per trial: (1) one aggregate scan for the count and the
    per-objective min/max; (2) one scan returning only the rows that none of a few "pruner"
    trials strictly dominates. The pruners are the strongest front rows of a seeded random
    sample of trial ids read by primary key (no scan). They are real trials, so every front
    member survives and the exact front of the candidates is the exact front of all
    considered trials (tests force this path on small data and compare with brute force).

    Returns {"ids", "values" (candidates), "n", "mins", "maxs" (objective units, over all
    considered trials)}.
    """
    from sqlalchemy import and_, func, not_, or_

    k = len(objectives)
    empty = {"ids": np.zeros(0, dtype=np.int64), "values": np.zeros((0, k)), "n": 0,
             "mins": None, "maxs": None}
    if store.engine.dialect.name != "sqlite" or not SQL_PRUNE:
        q = _points_query(store, objectives, flt)
        if q is None:
            return empty
        ids, vals = _to_arrays(_raw_rows(store, q), k)
        if not len(ids):
            return empty
        return {"ids": ids, "values": vals, "n": len(ids), "mins": vals.min(axis=0).tolist(),
                "maxs": vals.max(axis=0).tolist()}
    studies = resolve_studies(store, flt)
    if not studies:
        return empty
    # Every study selected: most rows usually match, so a plain table scan beats the index.
    all_studies = len(studies) == _count_studies(store)
    q, cols = _points_query_cols(store, objectives, flt, use_filter_index=not all_studies)
    sub = q.subquery()
    agg = select(func.count(), *[f(sub.c[o.name]) for o in objectives for f in (func.min, func.max)])
    (row,) = _raw_rows(store, agg)
    n = int(row[0])
    if n == 0:
        return empty
    mins = [float(row[1 + 2 * j]) for j in range(k)]
    maxs = [float(row[2 + 2 * j]) for j in range(k)]
    if n < SQL_PRUNE_MIN_ROWS:
        ids, vals = _to_arrays(_raw_rows(store, q), k)
        return {"ids": ids, "values": vals, "n": n, "mins": mins, "maxs": maxs}
    # A seeded random sample of ids, looked up by primary key; the filter applies to it.
    with store.transaction() as s:
        lo, hi = s.execute(select(func.min(Trial.id), func.max(Trial.id))).one()
    rng = np.random.default_rng(0)
    sample_ids = np.unique(rng.integers(lo, hi + 1, size=_SQL_SAMPLE)).tolist()
    q_pk, _ = _points_query_cols(store, objectives, flt, use_filter_index=False)
    srows: list[tuple] = []
    for i in range(0, len(sample_ids), _IN_CHUNK):
        srows += _raw_rows(store, q_pk.where(Trial.id.in_(sample_ids[i:i + _IN_CHUNK])))
    if not srows:  # the filter matches too few rows for the sample to hit any
        ids, vals = _to_arrays(_raw_rows(store, q), k)
        return {"ids": ids, "values": vals, "n": n, "mins": mins, "maxs": maxs}
    _, svals = _to_arrays(srows, k)
    sloss = _as_loss(svals, objectives)
    front = np.flatnonzero(_exact_mask(sloss))
    counts = np.array([np.sum(np.all(sloss[f] <= sloss, axis=1) & np.any(sloss[f] < sloss, axis=1))
                       for f in front])
    pruners = svals[front[np.argsort(-counts, kind="stable")[:_SQL_PRUNERS]]]
    dominated_by = []
    for p in pruners:
        weakly = [c <= float(v) if o.direction == "max" else c >= float(v)
                  for c, v, o in zip(cols, p, objectives)]
        strictly = [c < float(v) if o.direction == "max" else c > float(v)
                    for c, v, o in zip(cols, p, objectives)]
        dominated_by.append(and_(*weakly, or_(*strictly)))
    ids, vals = _to_arrays(_raw_rows(store, q.where(not_(or_(*dominated_by)))), k)
    return {"ids": ids, "values": vals, "n": n, "mins": mins, "maxs": maxs}


def _count_studies(store: ResultsStore) -> int:
    from sqlalchemy import func
    with store.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Study)))


def trial_details(store: ResultsStore, ids: Sequence[int]) -> dict[int, dict]:
    """Summary of the given trials (study, key, arch, the metric columns), keyed by id."""
    out: dict[int, dict] = {}
    ids = [int(i) for i in ids]
    cols = [Trial.__table__.c[c] for c in TRIAL_METRIC_COLUMNS]
    with store.transaction() as s:
        for i in range(0, len(ids), _IN_CHUNK):
            q = (select(Trial.id, Study.name.label("study"), Trial.trial_key, Trial.arch_hash,
                        Trial.epochs_reached, *cols)
                 .join(Study, Study.id == Trial.study_id).where(Trial.id.in_(ids[i:i + _IN_CHUNK])))
            for r in s.execute(q):
                out[r.id] = {"trial_id": r.id, **{k: v for k, v in r._mapping.items() if k != "id"}}
    return out


def pareto_front(store: ResultsStore, objectives: str | Sequence[str] | Sequence[Objective],
                 flt: TrialFilter = TrialFilter(), *, reference: Sequence[float] | None = None,
                 compute_hv: bool = True) -> dict[str, Any]:
    """The Pareto front of the filtered trials over 2 or 3 objectives, with hypervolume.

    Returns {"objectives", "filter", "n_considered", "reference_point", "reference_rule",
    "hypervolume", "front": [row per front trial, sorted by the first objective, best first]}.
    """
    objs = _objectives(objectives)
    cand = fetch_front_candidates(store, objs, flt)
    ids, values = cand["ids"], cand["values"]
    mask = pareto_mask(values, objs)
    front_ids, front_vals = ids[mask], values[mask]
    order = np.lexsort([front_vals[:, j] * objs[j].sign for j in range(len(objs))][::-1])
    front_ids, front_vals = front_ids[order], front_vals[order]
    details = trial_details(store, front_ids.tolist())
    baseline_of = {b["arch_hash"]: b["name"] for b in store.baselines()}
    rows = []
    for tid, v in zip(front_ids.tolist(), front_vals):
        d = details.get(tid, {"trial_id": tid})
        rows.append({"trial_id": tid, "study": d.get("study"), "trial_key": d.get("trial_key"),
                     "arch_hash": d.get("arch_hash"),
                     "baseline": baseline_of.get(d.get("arch_hash")),  # XS/S/L1/L3 or None
                     **{o.name: (int(x) if o.name == "params" else float(x))
                        for o, x in zip(objs, v)},
                     **{c: d.get(c) for c in ("top1", "latency_ms", "params", "gmacs")
                        if c not in {o.name for o in objs}}})
    result: dict[str, Any] = {
        "objectives": [str(o) for o in objs], "filter": _filter_dict(flt),
        "n_considered": int(cand["n"]), "n_front": int(mask.sum()),
        "reference_point": None, "reference_rule": None, "hypervolume": None, "front": rows}
    if compute_hv and cand["n"]:
        if reference is None:
            ref = reference_from_bounds(cand["mins"], cand["maxs"], objs)
            rule = "default: worst value of each objective over the considered trials, 10% of its range further out"
        else:
            ref = [float(x) for x in reference]
            if len(ref) != len(objs):
                raise ValueError(f"--ref {ref}: need {len(objs)} numbers (one per objective)")
            rule = "user-given"
        result.update(reference_point=ref, reference_rule=rule,
                      hypervolume=hypervolume(front_vals, objs, ref))
    return result


def compare_baselines(store: ResultsStore, flt: TrialFilter = TrialFilter(), *,
                      accuracy: str = "top1", cost: str = "latency_ms") -> dict[str, Any]:
    """Each baseline (XS/S/L1/L3) against the searched architectures of the filtered studies.

    The baseline point is its *proxy* result on the same dataset and proxy budget (a trial of
    the baseline architecture in any study with identical dataset and fidelity, as reused by
    the search driver): its ``accuracy``; its ``cost`` from that trial when measured on the same
    device, else the newest latency prediction for the device, else (latency only) the published
    figure when the device is the published one. Published ImageNet figures are reported beside
    it but never compared with proxy accuracies.
    """
    acc_o, cost_o = Objective(accuracy, "max"), Objective(cost, "min")
    for o in (acc_o, cost_o):
        if o.name not in DEFAULT_DIRECTIONS:
            raise ValueError(f"metric {o.name!r}: allowed {', '.join(DEFAULT_DIRECTIONS)}")
    studies = resolve_studies(store, flt)
    if not studies:
        raise ValueError("compare: no study matches the filter (see: run_search.py studies)")
    combos = {(s["dataset_id"], s["fidelity_key"]) for s in studies}
    if len(combos) > 1:
        raise ValueError(f"compare: the selected studies use {len(combos)} dataset/fidelity "
                         "combinations; pick studies with one (--study NAME, --dataset, --fidelity KEY)")
    devices = {s["device"] for s in studies}
    version = None
    if cost == "latency_ms" and flt.latency_device is not None:
        device = flt.latency_device  # every latency (searched and baseline) from predictions
        version = resolve_predictor_version(store, device, flt.predictor_version)
    elif len(devices) > 1 and cost == "latency_ms":
        raise ValueError(f"compare: the selected studies target devices {sorted(devices)}; "
                         "pick one with --device (or use --latency-device)")
    else:
        device = flt.device or next(iter(devices))
    dataset_id, fkey = combos.pop()
    baselines = store.baselines()
    if not baselines:
        raise ValueError("compare: no baselines in this database (the search driver adds them; "
                         "or call ResultsStore.ensure_baselines())")
    ids, values = fetch_points(store, [acc_o, cost_o], flt,
                               exclude_arch=[b["arch_hash"] for b in baselines])
    acc, cst = values[:, 0], values[:, 1]
    rows = []
    wanted: set[int] = set()
    partial = []
    for b in baselines:
        proxy = store.find_proxy_result(b["arch_hash"], dataset_id, fkey)
        b_acc = None if proxy is None else proxy.get(accuracy)
        b_cost, cost_src = _baseline_cost(store, b, proxy, cost, device, version)
        cmp = baseline_comparison(acc, cst, b_acc, b_cost)
        dom = [int(ids[i]) for i in (cmp["dominating_idx"] or [])]
        row = {"baseline": b["name"], "arch_hash": b["arch_hash"],
               f"baseline_{accuracy}": b_acc,
               "baseline_trial_id": None if proxy is None else proxy["id"],
               f"baseline_{cost}": b_cost, f"{cost}_source": cost_src,
               "published_top1": b["published_top1"],
               "published_latency_ms": b["published_latency_ms"],
               "published_device": b["latency_device"]}
        bi, li = cmp["best_acc_idx"], cmp["lowest_cost_idx"]
        row[f"best_{accuracy}_at_le_{cost}"] = None if bi is None else float(acc[bi])
        row[f"best_{accuracy}_trial_id"] = None if bi is None else int(ids[bi])
        row[f"best_{accuracy}_{cost}"] = None if bi is None else float(cst[bi])
        row[f"lowest_{cost}_at_ge_{accuracy}"] = None if li is None else float(cst[li])
        row[f"lowest_{cost}_trial_id"] = None if li is None else int(ids[li])
        row[f"lowest_{cost}_{accuracy}"] = None if li is None else float(acc[li])
        row["n_dominating"] = None if cmp["dominating_idx"] is None else len(dom)
        row["dominating_trial_ids"] = None if cmp["dominating_idx"] is None else dom
        if b_acc is None:
            partial.append(f"{b['name']}: no proxy {accuracy} on {dataset_id} at this budget")
        if b_cost is None:
            partial.append(f"{b['name']}: no {cost} on device {device}")
        wanted.update(dom[:20])
        rows.append(row)
    details = trial_details(store, sorted(wanted))
    return {"accuracy": accuracy, "cost": cost, "device": device,
            "predictor_version": version, "dataset_id": dataset_id,
            "fidelity_key": fkey, "filter": _filter_dict(flt), "n_considered": int(len(ids)),
            "baselines": rows, "notes": partial,
            "dominating_details": {str(k): v for k, v in details.items()}}


def _baseline_cost(store: ResultsStore, b: dict, proxy: dict | None, cost: str,
                   device: str, version: str | None = None) -> tuple[float | None, str | None]:
    if cost != "latency_ms":
        if proxy is not None and proxy.get(cost) is not None:
            return float(proxy[cost]), f"trial {proxy['id']}"
        with store.transaction() as s:
            a = s.get(Architecture, b["arch_hash"])
            v = getattr(a, cost, None) if a is not None else None
        return (None, None) if v is None else (float(v), "architecture (analytic)")
    if (version is None and proxy is not None and proxy.get("device") == device
            and proxy.get("latency_ms") is not None):
        return float(proxy["latency_ms"]), f"trial {proxy['id']} (predicted, {device})"
    p = store.latency_prediction(b["arch_hash"], device, version)
    if p is not None:
        return float(p["latency_ms"]), f"prediction {p['predictor_version']} ({device})"
    if device == b["latency_device"]:
        return float(b["published_latency_ms"]), "published"
    return None, None


def _objectives(objectives) -> list[Objective]:
    if objectives and all(isinstance(o, Objective) for o in objectives):
        if len(objectives) not in (2, 3):
            raise ValueError("objectives: give 2 or 3")
        return list(objectives)
    return parse_objectives(objectives)


def _filter_dict(flt: TrialFilter) -> dict[str, Any]:
    return {"studies": list(flt.studies) if flt.studies else None, "device": flt.device,
            "dataset_id": flt.dataset_id, "fidelity": flt.fidelity,
            "latency_device": flt.latency_device, "predictor_version": flt.predictor_version}
