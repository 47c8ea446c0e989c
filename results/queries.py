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

from .pareto import (Objective, as_loss, baseline_comparison, exact_mask, hypervolume,  # noqa: F401
                     pareto_mask,
                     pareto_mask_loss, reference_from_bounds, reference_point)
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
    sloss = as_loss(svals, objectives)
    front = np.flatnonzero(exact_mask(sloss))
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
