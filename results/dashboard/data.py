"""The dashboard's data step: functions of a read-only ResultsStore that return JSON-ready dicts.

They only read (SQLAlchemy expressions with bound parameters, never SQL text built from
strings). Every view of one study (scatter, front table, hypervolume curve) is cut from
``results.study_front.study_front``, so its front and hypervolume are the ones ``run_search.py
pareto --study``, the offline report and the end-of-search report show. No web framework and no
drawing here: ``results.dashboard.app`` serves these dicts, ``results.dashboard.page`` draws.
"""
from __future__ import annotations

import re
import shlex
import threading
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
from sqlalchemy import func, select

from search_space.errors import NotFoundError
from search_space.io import json_safe
from search_space.spec import PRESETS, ArchSpec

from ..families import family_view, list_families
from ..pareto import REFERENCE_RULE, hypervolume_steps
from ..report import to_csv
from ..schema import (COMPLETED, RUNGS, STANDALONE, SUPERNET, TRIAL_STATUSES, Baseline,
                      EpochMetric, Family, LatencyMeasurement, LatencyPrediction, Study,
                      TrainingRun, Trial)
from ..store import ResultsStore
from ..study_front import FIDELITIES, OBJECTIVES, spec_summary, study_devices, study_front

DEFAULT_MAX_POINTS = 20_000
MAX_ARCH_TRIALS = 50  # trials listed (with epoch curves) in one architecture's detail


# ------------------------------------------------------------------------------------------
# data step: store -> JSON-ready dicts
# ------------------------------------------------------------------------------------------
def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc).isoformat()


def studies_data(store: ResultsStore) -> dict:
    """Every study with trial counts per status and the devices it can be viewed on."""
    rows = store.studies()
    with store.transaction() as s:   # which rungs of the ladder each study has trials on
        have = s.execute(select(Trial.study_id, Trial.rung).distinct()).all()
    rungs = {}
    for study_id, rung in have:
        rungs.setdefault(study_id, set()).add(rung)
    for r in rows:
        r["devices"] = study_devices(store, r["id"], r["device"])
        r["rungs"] = [g for g in RUNGS if g in rungs.get(r["id"], ())] or [STANDALONE]
    return {"studies": rows, "fidelities": list(FIDELITIES)}


def scatter_data(store: ResultsStore, study: str, device: str | None = None,
                 fidelity: str = "full", max_points: int = DEFAULT_MAX_POINTS,
                 cache: dict | None = None, rung: str = STANDALONE) -> dict:
    """Proxy top-1 vs predicted latency of one study on one device (see :func:`results.study_front.study_front`),
    with the Pareto front of the searched architectures and the XS/S/L1/L3 markers. With more
    than ``max_points`` points, dominated ones are thinned evenly (the front is always kept;
    ``n_shown`` says how many were sent). ``rung``: the fidelity ladder's rung (on "supernet"
    the y axis is the supernet score of each candidate, never mixed with trained top-1)."""
    v = study_front(store, study, device, fidelity, cache, rung=rung)
    cand, on_front = v["cand"], v["on_front"]
    n, n_front = len(cand), len(v["front"])
    keep = on_front.copy()
    dom = np.flatnonzero(~on_front)
    n_dom = max(min(max_points - n_front, len(dom)), 0)
    if n_dom:  # evenly spaced over the finish order, so early and late trials both show
        keep[dom[np.unique(np.linspace(0, len(dom) - 1, n_dom).astype(int))]] = True
    shown = [cand.point(i, bool(on_front[i])) for i in np.flatnonzero(keep).tolist()]
    return {"study": v["study"], "device": v["device"], "devices": v["devices"],
            "fidelity": fidelity, "rung": rung,
            "x": {"metric": "latency_ms", "label": f"predicted latency on {v['device']} (ms)"},
            "y": {"metric": "top1", "label": Y_LABEL[rung]},
            "latency_source": v["latency_source"],
            "n_considered": n, "n_front": n_front, "n_shown": len(shown),
            "counts": v["counts"], "points": shown, "baselines": v["baselines"]}


# what the y value of a point is on each rung (results.schema.RUNG_METRIC names the metric)
# (the supernet score is the subnet's top-1 or minus its val loss with inherited weights:
# SupernetConfig.score; only its order matters)
Y_LABEL = {STANDALONE: "proxy top-1", SUPERNET: "supernet score (inherited weights)"}
assert set(Y_LABEL) == set(RUNGS)

FRONT_COLUMNS = ("trial_id", "trial_key", "arch_hash", "top1", "latency_ms", "latency_std_ms",
                 "advantage_within_interval", "params", "gmacs", "epochs_reached", "arch")


def front_data(store: ResultsStore, study: str, device: str | None = None,
               fidelity: str = "full", cache: dict | None = None,
               rung: str = STANDALONE) -> dict:
    """The searched front of :func:`results.study_front.study_front` as table rows, fastest
    first (on the "supernet" rung ``top1`` holds the supernet score: ``metric`` says so)."""
    v = study_front(store, study, device, fidelity, cache, rung=rung)
    rows = sorted(v["front"], key=lambda p: (p["latency_ms"], -p["top1"], p["trial_id"]))
    return {"study": v["study"]["name"], "device": v["device"], "fidelity": fidelity,
            "rung": rung, "metric": v["metric"],
            "columns": list(FRONT_COLUMNS), "n_considered": len(v["cand"]),
            "rows": [{c: p[c] for c in FRONT_COLUMNS} for p in rows]}


def front_csv(front: dict) -> str:
    return to_csv(front["rows"], front["columns"])


def hypervolume_data(store: ResultsStore, study: str, device: str | None = None,
                     fidelity: str = "full", reference: Sequence[float] | None = None,
                     cache: dict | None = None, rung: str = STANDALONE) -> dict:
    """Hypervolume of the searched front after each trial (finish order), top-1 up, latency down.

    The reference point is fixed for the whole curve (default: the study's reference point, the
    one the search report and ``pareto --study`` use: ``results.pareto.REFERENCE_RULE`` over the
    searched points and the baselines), so the curve is non-decreasing and ends at the study's
    hypervolume. Steps are listed only where the front changed, plus the last trial.
    """
    v = study_front(store, study, device, fidelity, cache, rung=rung)
    key = ("hypervolume", v["study"]["name"], v["device"], fidelity, rung,
           None if reference is None else tuple(float(x) for x in reference))
    if cache is not None and key in cache:
        return cache[key]
    cand = v["cand"]  # finish order
    out = {"study": v["study"]["name"], "device": v["device"], "fidelity": fidelity,
           "rung": rung, "metric": v["metric"], "objectives": [str(o) for o in OBJECTIVES],
           "n_trials": len(cand),
           "reference_point": None, "reference_rule": None, "steps": [], "final": None}
    if not len(cand):
        return out
    vals = cand.values
    if reference is None:
        ref, rule = v["reference_point"], REFERENCE_RULE
    else:
        ref = [float(x) for x in reference]
        rule = "user-given"
    ids = [r[0] for r in cand.rows]
    steps = [{"n": i + 1, "trial_id": ids[i], "hypervolume": hv}
             for i, hv in hypervolume_steps(vals, OBJECTIVES, ref)]
    if steps[-1]["n"] != len(cand):
        steps.append({"n": len(cand), "trial_id": ids[-1],
                      "hypervolume": steps[-1]["hypervolume"]})
    out.update(reference_point=ref, reference_rule=rule, steps=steps,
               final=steps[-1]["hypervolume"])
    if cache is not None:
        cache[key] = out
    return out


def _q(x: Any) -> str:
    return shlex.quote(str(x))


def _stages(spec: ArchSpec | None) -> list[dict]:
    return [] if spec is None else [
        {"stage": i, "depth": spec.depths[i], "width": spec.widths[i],
         "mlp_ratio": spec.mlp_ratios[i], "hidden_dim": spec.hidden_dim(i),
         "attn_blocks": spec.attn_blocks[i], "blocks": list(spec.block_kinds(i))}
        for i in range(len(spec.depths))]


def _arch_rows(store: ResultsStore, arch_hash: str) -> dict:
    """Latency predictions and measurements, the baseline row, and the newest trial ids of one
    architecture (one read transaction)."""
    with store.transaction() as s:
        preds = [{"device": p.device, "predictor_version": p.predictor_version,
                  "latency_ms": p.latency_ms, "std_ms": p.std_ms, "kind": "predicted",
                  "created_at": _iso(p.created_at)}
                 for p in s.scalars(select(LatencyPrediction)
                                    .where(LatencyPrediction.arch_hash == arch_hash)
                                    .order_by(LatencyPrediction.device, LatencyPrediction.id))]
        meas = [{"device": m.device, "backend": m.backend, "latency_ms": m.latency_ms,
                 "spread_ms": m.spread_ms, "source": m.source, "resolution": m.resolution,
                 "kind": "measured"}
                for m in s.scalars(select(LatencyMeasurement)
                                   .where(LatencyMeasurement.arch_hash == arch_hash)
                                   .order_by(LatencyMeasurement.device, LatencyMeasurement.id))]
        base = s.scalar(select(Baseline).where(Baseline.arch_hash == arch_hash))
        baseline = None if base is None else {
            "name": base.name, "published_top1": base.published_top1,
            "published_latency_ms": base.published_latency_ms,
            "published_device": base.latency_device, "source": base.source}
        q = (select(Trial.id).where(Trial.arch_hash == arch_hash)
             .order_by(Trial.id.desc()).limit(MAX_ARCH_TRIALS))
        trial_ids = list(s.scalars(q))
        n_trials = s.scalar(select(func.count()).select_from(Trial)
                            .where(Trial.arch_hash == arch_hash))
    published = [] if baseline is None else [
        {"device": baseline["published_device"], "latency_ms": baseline["published_latency_ms"],
         "kind": "published", "source": baseline["source"]}]
    return {"latency": preds + meas + published, "baseline": baseline,
            "trial_ids": trial_ids, "n_trials": int(n_trials)}


_TRIAL_KEYS = ("id", "study", "trial_key", "status", "device", "top1", "top5", "val_loss",
               "latency_ms", "epochs_reached", "full_budget", "error", "finished_at")


def _arch_trials(store: ResultsStore, arch_hash: str, trial_ids: list[int],
                 focus_trial: int | None) -> list[dict]:
    """The listed trials with their epoch curves; the focused one first when not listed."""
    if focus_trial is not None and focus_trial not in trial_ids:
        trial_ids = [focus_trial] + trial_ids
    trials = []
    for tid in trial_ids:
        t = store.trial(tid)
        if t["arch_hash"] != arch_hash:
            raise NotFoundError(f"trial {tid}: is not a trial of architecture {arch_hash}")
        trials.append({k: t[k] for k in _TRIAL_KEYS} | {"epochs": t["epochs"]})
    return trials


def _commands(arch_hash: str, spec: ArchSpec | None, baseline: dict | None, trials: list[dict],
              focus_trial: int | None, db_label: str) -> dict:
    """Export the focused (or newest completed) trial; export / retrain the spec itself."""
    pick = next((t for t in trials if t["id"] == focus_trial), None) or next(
        (t for t in trials if t["status"] == COMPLETED), None)
    preset = baseline["name"] if baseline and PRESETS.get(baseline["name"]) == spec else None
    arch_arg = None if spec is None else _q(preset or spec.to_json())
    out_dir = None if pick is None else "runs/export/" + re.sub(
        r"[^A-Za-z0-9_.-]+", "_", f"{pick['study']}-{pick['id']}")
    return {
        "export": None if pick is None else (
            f"python run_search.py export --trial {pick['id']} --db {_q(db_label)} "
            f"--out {_q(out_dir)}"),
        "export_arch": None if spec is None else (
            f"python run_search.py export --arch {arch_arg} "
            f"--out {_q('runs/export/' + arch_hash[:12])}"),
        "retrain": None if spec is None else (
            f"python run_search.py retrain --arch {arch_arg} --data PATH/TO/IMAGENET"),
    }


def arch_detail(store: ResultsStore, arch_hash: str, focus_trial: int | None = None,
                db_label: str = "runs/results.db") -> dict:
    """Everything about one architecture: spec by stage, params, GMACs, latency per device,
    its trials with per-epoch curves, full-scale training runs, and the export/retrain commands."""
    a = store.architecture(arch_hash)
    if a is None:
        raise NotFoundError(f"architecture {arch_hash!r}: not in this database")
    try:
        spec = ArchSpec.from_dict(a["spec"])
    except (ValueError, KeyError, TypeError):  # e.g. a synthetic/imported row: show what is there
        spec = None
    rows = _arch_rows(store, arch_hash)
    trials = _arch_trials(store, arch_hash, rows["trial_ids"], focus_trial)
    spec_d = a["spec"] if spec is None else spec.to_dict()
    return {"arch_hash": arch_hash, "baseline": rows["baseline"], "spec": spec_d,
            "summary": spec_summary(spec_d), "stages": _stages(spec),
            "params": a["params"], "gmacs": a["gmacs"], "latency": rows["latency"],
            "focus_trial_id": focus_trial, "n_trials": rows["n_trials"], "trials": trials,
            "training_runs": store.training_runs(arch_hash),
            "commands": _commands(arch_hash, spec, rows["baseline"], trials, focus_trial,
                                  db_label)}


def trial_detail(store: ResultsStore, trial_id: int, db_label: str = "runs/results.db") -> dict:
    """:func:`arch_detail` of the trial's architecture, focused on that trial."""
    with store.transaction() as s:
        h = s.scalar(select(Trial.arch_hash).where(Trial.id == trial_id))
    if h is None:
        raise NotFoundError(f"trial {trial_id}: not in this database")
    return arch_detail(store, h, focus_trial=trial_id, db_label=db_label)


def families_data(store: ResultsStore) -> dict:
    """Every stored family (``run_search.py scale``), one summary row each, oldest first."""
    out = []
    for f in list_families(store):
        ms = f["members"]
        out.append({"name": f["name"], "device": f["device"],
                    "predictor_version": f["predictor_version"],
                    "base_source": f["base_source"], "coefficients": f["coefficients"],
                    "n_members": len(ms), "targets_ms": [m["target_latency_ms"] for m in ms],
                    "has_comparison": f["config"].get("comparison") is not None,
                    "created_at": f["created_at"]})
    return {"families": out}


def family_data(store: ResultsStore, name: str) -> dict:
    """One family against XS/S/L1/L3 at equal predicted latency (see
    :func:`results.families.family_view`); unknown name -> NotFoundError."""
    return json_safe(family_view(store, name))


def stamp_data(store: ResultsStore) -> dict:
    """A cheap change marker: the page polls it and refetches only when it changed.

    Only primary-key maxima and counts served by indexes (no table scan at 1M trials): new
    studies, trials, epochs, predictions and training runs raise a max id; a trial finishing
    moves one count between statuses; a training run finishing changes the count of its status.
    """
    with store.transaction() as s:
        n_studies, last_study = s.execute(select(func.count(Study.id), func.max(Study.id))).one()
        last_trial = s.scalar(select(func.max(Trial.id)))
        # Served by the (status, full_budget, study_id) index.
        status = dict(s.execute(select(Trial.status, func.count()).group_by(Trial.status)).all())
        full = s.scalar(select(func.count()).select_from(Trial).where(
            Trial.status == COMPLETED, Trial.full_budget.is_(True)))
        last_epoch = s.scalar(select(func.max(EpochMetric.id)))
        last_pred = s.scalar(select(func.max(LatencyPrediction.id)))
        last_meas = s.scalar(select(func.max(LatencyMeasurement.id)))
        runs = dict(s.execute(select(TrainingRun.status, func.count())
                              .group_by(TrainingRun.status)).all())
        last_family = s.scalar(select(func.max(Family.id)))
    by_status = {k: status.get(k, 0) for k in TRIAL_STATUSES}
    parts = [n_studies, last_study, last_trial, *by_status.values(), full, last_epoch,
             last_pred, last_meas, *(runs.get(k, 0) for k in ("RUNNING", "COMPLETED", "FAILED")),
             last_family]
    return {"stamp": "|".join("" if p is None else str(p) for p in parts),
            "studies": n_studies, "trials": sum(by_status.values()), "by_status": by_status,
            "last_trial_id": last_trial, "last_epoch_id": last_epoch}


class StampCache:
    """Views cached until the database changes: :meth:`fresh` (called per request) checks
    :func:`stamp_data` and hands out the dict of the current snapshot, so one page refresh
    computes each study view once instead of once per API call. A new stamp gets a new dict,
    so a view computed from an older snapshot can never land in the newer one."""

    MAX_VIEWS = 16

    def __init__(self, store: ResultsStore) -> None:
        self.store, self.stamp, self.views, self.lock = store, None, {}, threading.Lock()

    def fresh(self) -> dict:
        st = stamp_data(self.store)["stamp"]
        with self.lock:
            if st != self.stamp or len(self.views) > self.MAX_VIEWS:
                self.stamp, self.views = st, {}
            return self.views


def report_data(store: ResultsStore, studies: Sequence[str] | None = None,
                max_details: int = 500, db_label: str = "runs/results.db") -> dict:
    """Every view of the page for the chosen studies (all devices, both fidelities), plus the
    detail of front members, baselines and the newest other points up to ``max_details``."""
    all_studies = studies_data(store)
    if studies:
        known = {s["name"] for s in all_studies["studies"]}
        for n in studies:
            if n not in known:
                raise NotFoundError(f"--study {n!r}: not in this database "
                                    "(see: run_search.py studies)")
        all_studies["studies"] = [s for s in all_studies["studies"] if s["name"] in set(studies)]
    views: dict = {}
    cache: dict = {}  # one snapshot for the whole report
    want: list[int] = []
    later: list[int] = []
    for st in all_studies["studies"]:
        for dev in st["devices"]:
            for fid in FIDELITIES:
                sc = scatter_data(store, st["name"], dev, fid, cache=cache)
                views.setdefault(st["name"], {}).setdefault(dev, {})[fid] = {
                    "scatter": sc, "front": front_data(store, st["name"], dev, fid, cache=cache),
                    "hypervolume": hypervolume_data(store, st["name"], dev, fid, cache=cache)}
                want += [p["trial_id"] for p in sc["points"] if p["on_front"]]
                want += [b["trial_id"] for b in sc["baselines"] if b["trial_id"] is not None]
                later += [p["trial_id"] for p in reversed(sc["points"]) if not p["on_front"]]
    ids = list(dict.fromkeys(want + later))[:max_details]
    details = {str(t): trial_detail(store, t, db_label=db_label) for t in ids}
    fams = families_data(store)
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "db": db_label, "studies": all_studies, "views": views, "trials": details,
            "max_details": max_details, "families": fams,
            "family_views": {f["name"]: family_data(store, f["name"]) for f in fams["families"]}}
