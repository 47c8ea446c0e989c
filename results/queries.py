"""Queries over the results database: Pareto fronts, hypervolume, comparison with baselines.

Pure data, no drawing: every function returns plain dicts/lists (JSON-ready) or numpy arrays,
for the CLI (``results.report`` renders them) and the dashboard alike. The numeric kernels live
in ``results.pareto`` (the one front / hypervolume / reference rule); this module only fetches
the points.

Objectives are trial metric columns (``schema.TRIAL_METRIC_COLUMNS``) with a direction, e.g.
``top1`` (max) and ``latency_ms`` (min: predicted latency on the study's device).

One definition of a front (shared with ``results.study_front``): the front is made of the
*searched* architectures only; the baselines (XS/S/L1/L3) are compared against it, never members
of it; the hypervolume reference point follows ``results.pareto.REFERENCE_RULE`` over the
searched points *and* the baseline points. When a filter selects exactly one study on its own
latency device with the default objectives, :func:`pareto_front` is that study's
``results.study_front.study_front`` (the numbers the dashboard, the offline report and the
end-of-search report show).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sqlalchemy import and_, func, not_, or_, select

from search_space.cli_types import comma_items
from search_space.errors import NotFoundError, UsageError

from .pareto import (REFERENCE_RULE, Objective, as_loss, baseline_comparison, dominating,
                     exact_mask, hypervolume, pareto_mask, reference_from_bounds)
from .schema import (COMPLETED, RUNGS, STANDALONE, TRIAL_METRIC_COLUMNS, Architecture,
                     LatencyPrediction, Study, Trial)
from .store import ResultsStore, raw_rows
from .study_front import OBJECTIVES as STUDY_OBJECTIVES
from .study_front import study_front

# Natural direction of each metric column; "name:min"/"name:max" overrides it.
DEFAULT_DIRECTIONS = {"top1": "max", "top5": "max", "val_loss": "min", "latency_ms": "min",
                      "latency_std_ms": "min", "params": "min", "gmacs": "min",
                      "synflow": "max", "naswot": "max", "grad_norm": "max",
                      "train_seconds": "min"}
assert set(DEFAULT_DIRECTIONS) == set(TRIAL_METRIC_COLUMNS)
FIDELITY_CHOICES = ("full", "any")  # or a study fidelity key (canonical JSON of the budget)
_IN_CHUNK = 500  # ids per IN (...) list when fetching details of front members


def parse_objectives(spec: str | Sequence[str], allowed_counts=(2, 3)) -> list[Objective]:
    """``"top1,latency_ms"`` or ``["top1:max", "params:min"]`` -> objectives (validated)."""
    allowed = f"comma-separated {', '.join(DEFAULT_DIRECTIONS)} (optionally :min or :max)"
    items = (comma_items(spec, "--objectives", allowed) if isinstance(spec, str)
             else [s.strip() for s in spec])
    out = []
    for it in items:
        name, _, d = it.partition(":")
        if name not in DEFAULT_DIRECTIONS:
            raise UsageError(f"objective {name!r}: allowed {', '.join(DEFAULT_DIRECTIONS)} "
                             "(optionally :min or :max)")
        d = d or DEFAULT_DIRECTIONS[name]
        if d not in ("min", "max"):
            raise UsageError(f"objective {it!r}: direction must be min or max")
        out.append(Objective(name, d))
    if len(out) not in allowed_counts:
        raise UsageError(f"objectives {','.join(items)!r}: give {' or '.join(map(str, allowed_counts))} "
                         "comma-separated objectives, e.g. top1,latency_ms")
    if len({o.name for o in out}) != len(out):
        raise UsageError(f"objectives {','.join(items)!r}: each objective at most once")
    return out


# ------------------------------------------------------------------------------------------
# database side
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialFilter:
    """Which trials a query considers. Only COMPLETED trials are ever on a front.

    studies: study names (None = all); study_latency_device: studies whose latency target (the
    device they were searched for) is this device; dataset_id: studies on this dataset; fidelity: "full" (default: trials that reached their
    study's full proxy budget), "any", or a study fidelity key (canonical budget JSON; implies
    full budget within those studies).

    latency_device: take the ``latency_ms`` objective from ``sfn_latency_predictions`` for
    this device (one predictor version: ``predictor_version`` or the newest one recorded for
    the device) instead of the trial's own prediction for its study's device; trials whose
    architecture has no such prediction are left out.

    rung: which rung of the fidelity ladder (``results.schema.RUNGS``). "standalone": trained
    proxies' top-1, comparable across studies on one dataset and budget. "supernet": the
    candidates of one ``--proxy supernet`` study scored on its own supernet; a score means
    nothing beside another supernet's, so this rung is shown one study at a time, on the
    default objectives (score up, latency down).
    """
    studies: tuple[str, ...] | None = None
    study_latency_device: str | None = None
    dataset_id: str | None = None
    fidelity: str = "full"
    latency_device: str | None = None
    predictor_version: str | None = None
    rung: str = STANDALONE


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
        raise NotFoundError(f"--latency-device {device!r}: no latency predictions for "
                         f"{what}this device in the database")
    return v


def resolve_studies(store: ResultsStore, flt: TrialFilter) -> list[dict]:
    """The studies a filter selects (id, name, device, dataset_id, fidelity_key)."""
    with store.transaction() as s:
        q = select(Study.id, Study.name, Study.device, Study.dataset_id, Study.fidelity_key)
        if flt.studies:
            q = q.where(Study.name.in_(list(flt.studies)))
        if flt.study_latency_device is not None:
            q = q.where(Study.device == flt.study_latency_device)
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
                raise NotFoundError(f"study {unknown[0]!r}: not in this database "
                                 "(see: run_search.py studies)")
    return rows


def _points_query(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                  exclude_arch: Sequence[str] = (), only_arch: Sequence[str] | None = None):
    """SELECT id, objective columns of the considered trials, or None if no study matches."""
    q, _ = _points_query_cols(store, objectives, flt, exclude_arch, only_arch=only_arch)
    return q


def _points_query_cols(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                       exclude_arch: Sequence[str] = (), use_filter_index: bool = True,
                       only_arch: Sequence[str] | None = None):
    """(query, objective column expressions); (None, None) if no study matches.

    ``exclude_arch`` / ``only_arch``: leave out / keep only trials of these architectures (the
    searched points / the baseline points of a front).

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
    # one rung: supernet scores are no proxy top-1 (results.schema.RUNGS)
    q = q.where(status == COMPLETED, Trial.rung == STANDALONE, *[c.is_not(None) for c in cols])
    if flt.fidelity != "any":
        q = q.where(Trial.full_budget.is_(True))
    if len(studies) != _count_studies(store):  # no IN list when every study is selected
        study_id = Trial.study_id if use_filter_index else Trial.study_id + 0
        q = q.where(study_id.in_([st["id"] for st in studies]))
    if exclude_arch:
        q = q.where(Trial.arch_hash.not_in(list(exclude_arch)))
    if only_arch is not None:
        q = q.where(Trial.arch_hash.in_(list(only_arch)))
    return q, cols


def _raw_rows(store: ResultsStore, q) -> list[tuple]:
    with store.transaction() as s:
        return raw_rows(s.connection(), q)


def _to_arrays(rows: list[tuple], k: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, k))
    # fromiter over the flattened rows: ~15 % faster than np.array(list of tuples) at 1M.
    # Trial ids are far below 2**53, so passing them through float64 is exact.
    arr = np.fromiter(itertools.chain.from_iterable(rows), dtype=float,
                      count=len(rows) * (k + 1)).reshape(len(rows), k + 1)
    return arr[:, 0].astype(np.int64), arr[:, 1:]


def fetch_points(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                 exclude_arch: Sequence[str] = (),
                 only_arch: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(trial ids, values n x k) of COMPLETED trials matching ``flt`` with every objective set.

    Fetches only the id and objective columns; the WHERE clause is served by the
    (status, full_budget, study_id) index.
    """
    q = _points_query(store, objectives, flt, exclude_arch, only_arch)
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


def _candidates(ids: np.ndarray, vals: np.ndarray, n: int | None = None,
                mins: list[float] | None = None, maxs: list[float] | None = None) -> dict:
    """The result of :func:`fetch_front_candidates` (bounds from ``vals`` unless given)."""
    if n is None:
        n = len(ids)
        if n:
            mins, maxs = vals.min(axis=0).tolist(), vals.max(axis=0).tolist()
    return {"ids": ids, "values": vals, "n": int(n), "mins": mins if n else None,
            "maxs": maxs if n else None}


def fetch_front_candidates(store: ResultsStore, objectives: Sequence[Objective],
                           flt: TrialFilter, exclude_arch: Sequence[str] = ()) -> dict[str, Any]:
    """A superset of the Pareto front of the considered trials, plus their count and bounds.

    Small sets (and non-SQLite backends) are fetched whole. Large SQLite sets cost two scans
    that build no Python object per trial: (1) one aggregate scan for the count and the
    per-objective min/max; (2) one scan returning only the rows that none of a few "pruner"
    trials strictly dominates. The pruners are the strongest front rows of a seeded random
    sample of trial ids read by primary key (no scan). They are real trials, so every front
    member survives and the exact front of the candidates is the exact front of all
    considered trials (tests force this path on small data and compare with brute force).
    ``exclude_arch``: trials of these architectures are not considered (the baselines).

    Returns {"ids", "values" (candidates), "n", "mins", "maxs" (objective units, over all
    considered trials)}.
    """
    k = len(objectives)
    empty = _candidates(np.zeros(0, dtype=np.int64), np.zeros((0, k)))
    if store.engine.dialect.name != "sqlite" or not SQL_PRUNE:
        q = _points_query(store, objectives, flt, exclude_arch)
        return empty if q is None else _candidates(*_to_arrays(_raw_rows(store, q), k))
    studies = resolve_studies(store, flt)
    if not studies:
        return empty
    # Every study selected: most rows usually match, so a plain table scan beats the index.
    all_studies = len(studies) == _count_studies(store)
    q, cols = _points_query_cols(store, objectives, flt, exclude_arch,
                                 use_filter_index=not all_studies)
    sub = q.subquery()
    agg = select(func.count(), *[f(sub.c[o.name]) for o in objectives for f in (func.min, func.max)])
    (row,) = _raw_rows(store, agg)
    n = int(row[0])
    if n == 0:
        return empty
    bounds = {"n": n, "mins": [float(row[1 + 2 * j]) for j in range(k)],
              "maxs": [float(row[2 + 2 * j]) for j in range(k)]}
    pruners = None
    if n >= SQL_PRUNE_MIN_ROWS:
        pruners = _sql_pruners(store, objectives, flt, exclude_arch)
    if pruners is not None:  # None: the sample hit no considered row; fetch them all
        q = q.where(not_(or_(*_dominated_by(cols, objectives, pruners))))
    return _candidates(*_to_arrays(_raw_rows(store, q), k), **bounds)


def _sql_pruners(store: ResultsStore, objectives: Sequence[Objective], flt: TrialFilter,
                 exclude_arch: Sequence[str]) -> np.ndarray | None:
    """The strongest front rows of a seeded random sample of trial ids (looked up by primary
    key; the filter applies to them), or None when the sample hits no considered trial."""
    with store.transaction() as s:
        lo, hi = s.execute(select(func.min(Trial.id), func.max(Trial.id))).one()
    rng = np.random.default_rng(0)
    sample_ids = np.unique(rng.integers(lo, hi + 1, size=_SQL_SAMPLE)).tolist()
    q_pk, _ = _points_query_cols(store, objectives, flt, exclude_arch, use_filter_index=False)
    srows: list[tuple] = []
    for i in range(0, len(sample_ids), _IN_CHUNK):
        srows += _raw_rows(store, q_pk.where(Trial.id.in_(sample_ids[i:i + _IN_CHUNK])))
    if not srows:
        return None
    _, svals = _to_arrays(srows, len(objectives))
    sloss = as_loss(svals, objectives)
    front = np.flatnonzero(exact_mask(sloss))
    counts = np.array([np.sum(np.all(sloss[f] <= sloss, axis=1) & np.any(sloss[f] < sloss, axis=1))
                       for f in front])
    return svals[front[np.argsort(-counts, kind="stable")[:_SQL_PRUNERS]]]


def _dominated_by(cols, objectives: Sequence[Objective], pruners: np.ndarray) -> list:
    """One SQL condition per pruner: "this row is strictly dominated by the pruner"."""
    out = []
    for p in pruners:
        weakly = [c <= float(v) if o.direction == "max" else c >= float(v)
                  for c, v, o in zip(cols, p, objectives)]
        strictly = [c < float(v) if o.direction == "max" else c > float(v)
                    for c, v, o in zip(cols, p, objectives)]
        out.append(and_(*weakly, or_(*strictly)))
    return out


def _count_studies(store: ResultsStore) -> int:
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


# ------------------------------------------------------------------------------------------
# the Pareto front of a selection of trials
# ------------------------------------------------------------------------------------------
def pareto_front(store: ResultsStore, objectives: str | Sequence[str] | Sequence[Objective],
                 flt: TrialFilter = TrialFilter(), *,
                 reference: Sequence[float] | None = None) -> dict[str, Any]:
    """The Pareto front of the searched trials the filter selects over 2 or 3 objectives, with
    the baselines compared against it and the hypervolume.

    Returns {"objectives", "filter", "study" (the one study shown, or None), "n_considered"
    (searched trials), "n_front", "reference_point", "reference_rule", "hypervolume", "front"
    [row per front trial, sorted by the first objective, best first], "baselines" [baseline
    points with ``dominated_by_front``]}. One study with the default objectives on its own
    latency device: exactly ``results.study_front.study_front`` (see the module docstring).
    """
    objs = _objectives(objectives)
    if reference is not None and len(reference) != len(objs):
        raise UsageError(f"--ref {list(reference)}: need {len(objs)} numbers (one per objective)")
    ref = None if reference is None else [float(x) for x in reference]
    studies = resolve_studies(store, flt)
    one_study_view = (len(studies) == 1 and tuple(objs) == STUDY_OBJECTIVES
                      and flt.latency_device is None and flt.predictor_version is None)
    if flt.rung != STANDALONE:
        _check_rung_view(flt, studies, one_study_view)
    if one_study_view:
        res = _study_pareto(store, studies[0]["name"], flt, ref)
    else:
        res = _selection_pareto(store, objs, flt, ref)
    # the one-study view names its first objective (the supernet rung's is its score)
    m = res.setdefault("metric", "top1")
    res.setdefault("rung", flt.rung)
    res.update(objectives=[f"{m}:{o.direction}" if o.name == "top1" else str(o) for o in objs],
               filter=_filter_dict(flt))
    return res


def _check_rung_view(flt: TrialFilter, studies: list[dict], one_study_view: bool) -> None:
    """A rung other than the stand-alone one is one study's view (see ``TrialFilter.rung``)."""
    if flt.rung not in RUNGS:
        raise UsageError(f"--rung {flt.rung!r}: allowed {', '.join(RUNGS)}")
    if len(studies) != 1:
        raise UsageError(f"--rung {flt.rung}: give one --study (its scores are not comparable "
                         f"across studies; {len(studies)} selected)")
    if not one_study_view:
        raise UsageError(f"--rung {flt.rung}: only with the default objectives "
                         "top1,latency_ms and the study's own latency device")


def _study_pareto(store: ResultsStore, study: str, flt: TrialFilter,
                  ref: list[float] | None) -> dict[str, Any]:
    """:func:`pareto_front` of one study: its :func:`results.study_front.study_front`. On the
    supernet rung the first objective is the supernet score: ``metric`` names it."""
    v = study_front(store, study, fidelity="any" if flt.fidelity == "any" else "full",
                    rung=flt.rung)
    cand = v["cand"]
    m = v["metric"]   # the key of the first objective in the rows: top1, or the supernet score
    front = sorted(v["front"], key=lambda p: (-p["top1"], p["latency_ms"], p["trial_id"]))
    rows = [{"trial_id": p["trial_id"], "study": study, "trial_key": p["trial_key"],
             "arch_hash": p["arch_hash"], m: p["top1"], "latency_ms": p["latency_ms"],
             "params": p["params"], "gmacs": p["gmacs"], "latency_std_ms": p["latency_std_ms"],
             "latency_interval_ms": p["latency_interval_ms"],
             "advantage_within_interval": p["advantage_within_interval"]} for p in front]
    baselines = [{"baseline": b["name"], "trial_id": b["trial_id"], m: b["top1"],
                  "latency_ms": b["latency_ms"], "latency_std_ms": b["latency_std_ms"],
                  "top1_source": b["top1_source"], "latency_source": b["latency_source"],
                  "dominated_by_front": b["dominated_by_front"],
                  "dominated_beyond_interval": b["dominated_beyond_interval"]}
                 for b in v["baselines"]]
    out = {"study": study, "device": v["device"], "rung": flt.rung, "metric": m,
           "n_considered": len(cand),
           "n_front": len(rows), "front": rows, "baselines": baselines,
           "reference_point": None, "reference_rule": None, "hypervolume": None}
    if len(cand) and ref is None:
        out.update(reference_point=v["reference_point"], reference_rule=v["reference_rule"],
                   hypervolume=v["hypervolume"])
    elif len(cand):
        out.update(reference_point=ref, reference_rule="user-given",
                   hypervolume=hypervolume(cand.values, STUDY_OBJECTIVES, ref))
    return out


def _selection_pareto(store: ResultsStore, objs: list[Objective], flt: TrialFilter,
                      ref: list[float] | None) -> dict[str, Any]:
    """:func:`pareto_front` of any selection of trials (several studies, other objectives,
    another latency device)."""
    baseline_of = {b["arch_hash"]: b["name"] for b in store.baselines()}
    cand = fetch_front_candidates(store, objs, flt, exclude_arch=list(baseline_of))
    ids, values = cand["ids"], cand["values"]
    mask = pareto_mask(values, objs)
    front_ids, front_vals = ids[mask], values[mask]
    order = np.lexsort([front_vals[:, j] * objs[j].sign for j in range(len(objs))][::-1])
    front_ids, front_vals = front_ids[order], front_vals[order]
    b_ids, b_vals = (fetch_points(store, objs, flt, only_arch=list(baseline_of)) if baseline_of
                     else (np.zeros(0, dtype=np.int64), np.zeros((0, len(objs)))))
    details = trial_details(store, front_ids.tolist() + b_ids.tolist())
    rows = [_point_row(details, tid, v, objs) for tid, v in zip(front_ids.tolist(), front_vals)]
    baselines = [_point_row(details, tid, v, objs) for tid, v in zip(b_ids.tolist(), b_vals)]
    for b, v in zip(baselines, b_vals):
        b["baseline"] = baseline_of.get(b.get("arch_hash"))
        b["dominated_by_front"] = bool(len(dominating(front_vals, v, objs)))
    out: dict[str, Any] = {"study": None, "n_considered": int(cand["n"]), "n_front": len(rows),
                           "front": rows, "baselines": baselines, "reference_point": None,
                           "reference_rule": None, "hypervolume": None}
    if cand["n"]:
        if ref is None:
            mins = np.vstack([cand["mins"], b_vals]).min(axis=0) if len(b_vals) else cand["mins"]
            maxs = np.vstack([cand["maxs"], b_vals]).max(axis=0) if len(b_vals) else cand["maxs"]
            ref, rule = reference_from_bounds(mins, maxs, objs), REFERENCE_RULE
        else:
            rule = "user-given"
        out.update(reference_point=ref, reference_rule=rule,
                   hypervolume=hypervolume(front_vals, objs, ref))
    return out


def _point_row(details: dict[int, dict], tid: int, values, objs: Sequence[Objective]) -> dict:
    d = details.get(tid, {"trial_id": tid})
    names = {o.name for o in objs}
    return {"trial_id": tid, "study": d.get("study"), "trial_key": d.get("trial_key"),
            "arch_hash": d.get("arch_hash"),
            **{o.name: (int(x) if o.name == "params" else float(x)) for o, x in zip(objs, values)},
            **{c: d.get(c) for c in ("top1", "latency_ms", "params", "gmacs") if c not in names}}


# ------------------------------------------------------------------------------------------
# baselines against the search
# ------------------------------------------------------------------------------------------
def _compare_setup(store: ResultsStore, flt: TrialFilter, cost: str) -> dict[str, Any]:
    """The one dataset / proxy budget / latency device (and predictor version) a comparison
    is made on; a selection mixing them is a UsageError."""
    studies = resolve_studies(store, flt)
    if not studies:
        raise UsageError("compare: no study matches the filter (see: run_search.py studies)")
    combos = {(s["dataset_id"], s["fidelity_key"]) for s in studies}
    if len(combos) > 1:
        raise UsageError(f"compare: the selected studies use {len(combos)} dataset/fidelity "
                         "combinations; pick studies with one (--study NAME, --dataset, "
                         "--fidelity KEY)")
    devices = {s["device"] for s in studies}
    version = None
    if cost == "latency_ms" and flt.latency_device is not None:
        device = flt.latency_device  # every latency (searched and baseline) from predictions
        version = resolve_predictor_version(store, device, flt.predictor_version)
    elif len(devices) > 1 and cost == "latency_ms":
        raise UsageError(f"compare: the selected studies target devices {sorted(devices)}; "
                         "pick one with --study-latency-device (or use --latency-device)")
    else:
        device = flt.study_latency_device or next(iter(devices))
    dataset_id, fkey = combos.pop()
    return {"dataset_id": dataset_id, "fidelity_key": fkey, "device": device,
            "predictor_version": version}


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
            raise UsageError(f"metric {o.name!r}: allowed {', '.join(DEFAULT_DIRECTIONS)}")
    setup = _compare_setup(store, flt, cost)
    baselines = store.baselines()
    if not baselines:
        raise UsageError("compare: no baselines in this database (the search driver adds them; "
                         "or call ResultsStore.ensure_baselines())")
    ids, values = fetch_points(store, [acc_o, cost_o], flt,
                               exclude_arch=[b["arch_hash"] for b in baselines])
    rows, notes, wanted = [], [], set()
    for b in baselines:
        row = _compare_row(store, b, ids, values, accuracy, cost, setup)
        if row[f"baseline_{accuracy}"] is None:
            notes.append(f"{b['name']}: no proxy {accuracy} on {setup['dataset_id']} at this "
                         "budget")
        if row[f"baseline_{cost}"] is None:
            notes.append(f"{b['name']}: no {cost} on device {setup['device']}")
        wanted.update((row["dominating_trial_ids"] or [])[:20])
        rows.append(row)
    details = trial_details(store, sorted(wanted))
    return {"accuracy": accuracy, "cost": cost, **setup, "filter": _filter_dict(flt),
            "n_considered": int(len(ids)), "baselines": rows, "notes": notes,
            "dominating_details": {str(k): v for k, v in details.items()}}


def _compare_row(store: ResultsStore, b: dict, ids: np.ndarray, values: np.ndarray,
                 accuracy: str, cost: str, setup: dict) -> dict[str, Any]:
    """One baseline's row of :func:`compare_baselines`."""
    acc, cst = values[:, 0], values[:, 1]
    proxy = store.find_proxy_result(b["arch_hash"], setup["dataset_id"], setup["fidelity_key"])
    b_acc = None if proxy is None else proxy.get(accuracy)
    b_cost, cost_src = _baseline_cost(store, b, proxy, cost, setup["device"],
                                      setup["predictor_version"])
    cmp = baseline_comparison(acc, cst, b_acc, b_cost)
    dom = [int(ids[i]) for i in (cmp["dominating_idx"] or [])]
    bi, li = cmp["best_acc_idx"], cmp["lowest_cost_idx"]
    return {"baseline": b["name"], "arch_hash": b["arch_hash"],
            f"baseline_{accuracy}": b_acc,
            "baseline_trial_id": None if proxy is None else proxy["id"],
            f"baseline_{cost}": b_cost, f"{cost}_source": cost_src,
            "published_top1": b["published_top1"],
            "published_latency_ms": b["published_latency_ms"],
            "published_device": b["latency_device"],
            f"best_{accuracy}_at_le_{cost}": None if bi is None else float(acc[bi]),
            f"best_{accuracy}_trial_id": None if bi is None else int(ids[bi]),
            f"best_{accuracy}_{cost}": None if bi is None else float(cst[bi]),
            f"lowest_{cost}_at_ge_{accuracy}": None if li is None else float(cst[li]),
            f"lowest_{cost}_trial_id": None if li is None else int(ids[li]),
            f"lowest_{cost}_{accuracy}": None if li is None else float(acc[li]),
            "n_dominating": None if cmp["dominating_idx"] is None else len(dom),
            "dominating_trial_ids": None if cmp["dominating_idx"] is None else dom}


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
            raise UsageError("objectives: give 2 or 3")
        return list(objectives)
    return parse_objectives(objectives)


def _filter_dict(flt: TrialFilter) -> dict[str, Any]:
    return {"studies": list(flt.studies) if flt.studies else None,
            "study_latency_device": flt.study_latency_device,
            "dataset_id": flt.dataset_id, "fidelity": flt.fidelity,
            "latency_device": flt.latency_device, "predictor_version": flt.predictor_version,
            "rung": flt.rung}
