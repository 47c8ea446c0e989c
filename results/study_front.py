"""The front of one study, as every view shows it.

The end-of-search report, ``run_search.py pareto --study``, the dashboard and the offline report
all take a study's points, front, baselines and hypervolume from :func:`study_front`, so they
show the same numbers. Definitions:

* points: COMPLETED trials with a finite top-1 and a latency on the chosen device, in finish
  order ("full" fidelity: only trials that reached the study's whole proxy budget);
* baselines: XS/S/L1/L3 (the published baseline architectures) and any other architecture the
  search trained as a baseline (``--extra-arch``: trial keys starting with
  :data:`BASELINE_TRIAL_PREFIX`). They are compared against the front, never members of it;
* a reused result (the same architecture recorded again with the same numbers) is an identical
  point: it changes neither the front's shape nor the hypervolume (views list it once);
* front and hypervolume: ``results.pareto`` over the searched points (top-1 max, latency min);
* latency intervals: every predicted latency carries its predictor's std (trials store
  ``latency_std_ms``); a front member whose advantage over a baseline (it dominates the
  baseline on the point estimates) rests on a latency difference inside
  ``INTERVAL_SIGMAS`` combined standard deviations of log latency is listed in its
  ``advantage_within_interval`` (:func:`advantage_within_interval` is the one rule).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from sqlalchemy import func, select

from latency_models.predictor import INTERVAL_SIGMAS
from latency_models.predictor import latency_interval as predicted_interval
from search_space.errors import NotFoundError, UsageError

from .pareto import REFERENCE_RULE, Objective, dominating, hypervolume, pareto_mask, reference_point
from .schema import (COMPLETED, RUNGS, STANDALONE, SUPERNET, TRIAL_STATUSES, Architecture,
                     Baseline, LatencyPrediction, Study, Trial)
from .store import ResultsStore, raw_rows

FIDELITIES = ("full", "any")
BASELINE_TRIAL_PREFIX = "base-"  # the search's baseline trials: base-<name>-<arch_hash>
# Trial keys of the supernet rung start with this (sn-base-XS-<hash>, sn-0007-<hash>), so a
# study holds both rungs of one architecture under distinct keys.
RUNG_KEY_PREFIX = {STANDALONE: "", SUPERNET: "sn-"}
# The objective each rung's front maximises: the stand-alone rung's proxy top-1, the supernet
# rung's score (minus the subnet's val loss, or its top-1: SupernetConfig.score).
RUNG_METRIC = {STANDALONE: "top1", SUPERNET: "score"}
OBJECTIVES = (Objective("top1", "max"), Objective("latency_ms", "min"))


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def latency_interval(ms: float | None, std: float | None,
                     k: float = INTERVAL_SIGMAS) -> list[float] | None:
    """The prediction's +-k sigma interval [low, high] ms (``predictor.latency_interval``:
    multiplicative, never below zero); None when either is unknown."""
    if _finite(ms) is None or _finite(std) is None:
        return None
    return [float(v) for v in predicted_interval(float(ms), float(std), k)]


def point_dominates(member: dict, baseline: dict) -> bool | None:
    """Top-1 >= and latency <= (one strictly) on the point estimates; None if a value is
    missing."""
    vals = [_finite(member.get("top1")), _finite(member.get("latency_ms")),
            _finite(baseline.get("top1")), _finite(baseline.get("latency_ms"))]
    if any(v is None for v in vals):
        return None
    m_top1, m_ms, b_top1, b_ms = vals
    return m_top1 >= b_top1 and m_ms <= b_ms and (m_top1 > b_top1 or m_ms < b_ms)


def advantage_within_interval(member: dict, baseline: dict,
                              k: float = INTERVAL_SIGMAS) -> bool | None:
    """Whether ``member`` dominates ``baseline`` on the point estimates only by a latency
    ratio inside k combined standard deviations of log latency (log(b / m) <= k hypot(m_sd / m,
    b_sd / b): the predictions' errors are log-normal), i.e. the predictor cannot tell that the
    member is the faster one. False when the member does not dominate the baseline, or does so
    beyond the interval; None when a value or the member's std is unknown. A baseline without a
    std (a published measurement) counts as exact."""
    dom = point_dominates(member, baseline)
    m_sd = _finite(member.get("latency_std_ms"))
    if dom is None or (dom and m_sd is None):
        return None
    if not dom:
        return False
    b_sd = _finite(baseline.get("latency_std_ms")) or 0.0
    m_ms, b_ms = float(member["latency_ms"]), float(baseline["latency_ms"])
    # in log latency, where the predictions' errors are normal (predictor.latency_interval)
    return math.log(b_ms / m_ms) <= k * math.hypot(m_sd / m_ms, b_sd / b_ms)


def _study(store: ResultsStore, name: str) -> dict:
    with store.transaction() as s:
        st = s.scalar(select(Study).where(Study.name == name))
        if st is None:
            raise NotFoundError(f"study {name!r}: not in this database")
        return {"id": st.id, "name": st.name, "device": st.device, "dataset_id": st.dataset_id,
                "fidelity": st.fidelity, "fidelity_key": st.fidelity_key, "seed": st.seed}


def study_devices(store: ResultsStore, study_id: int, own_device: str) -> list[str]:
    """Devices the study can be viewed on: its own target first, then (sorted) every device
    with a latency prediction for at least one of its architectures."""
    archs = select(Trial.arch_hash).where(Trial.study_id == study_id).distinct()
    with store.transaction() as s:
        other = set(s.scalars(select(LatencyPrediction.device).distinct()
                              .where(LatencyPrediction.arch_hash.in_(archs))))
    other.discard(own_device)
    return [own_device] + sorted(other)


def spec_summary(spec: dict) -> str:
    """One line for hover text: depths, widths, MLP ratios, attention blocks, resolution."""
    def j(k):
        v = spec.get(k)
        if not isinstance(v, (list, tuple)):
            return "?"
        return "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return (f"d {j('depths')} | w {j('widths')} | mlp {j('mlp_ratios')} | "
            f"attn {j('attn_blocks')} | {spec.get('resolution', '?')}px")


def _newest_predictions(store: ResultsStore, device: str, arch_hashes) -> dict[str, dict]:
    """Newest latency prediction on ``device`` per architecture (any predictor version)."""
    q = (select(LatencyPrediction.arch_hash, LatencyPrediction.latency_ms,
                LatencyPrediction.std_ms, LatencyPrediction.predictor_version)
         .where(LatencyPrediction.device == device, LatencyPrediction.arch_hash.in_(arch_hashes))
         .order_by(LatencyPrediction.created_at, LatencyPrediction.id))
    out: dict[str, dict] = {}
    with store.transaction() as s:
        for r in s.execute(q):
            out[r.arch_hash] = {"latency_ms": r.latency_ms, "std_ms": r.std_ms,
                                "predictor_version": r.predictor_version}  # newest wins
    return out


def _baseline_names(store: ResultsStore) -> dict[str, str]:
    with store.transaction() as s:
        return {h: n for n, h in s.execute(select(Baseline.name, Baseline.arch_hash))}


_ROW_FIELDS = ("trial_id", "trial_key", "arch_hash", "top1", "latency_ms", "params", "gmacs",
               "epochs_reached", "latency_std_ms")


class _Points:
    """COMPLETED trials of one study with top-1 and a latency on one device, in finish order.

    Kept as row tuples plus a numpy (n, 2) array of (top1, latency_ms): a study of 10^5-10^6
    trials needs dicts only for the points actually sent (the front and a thinned sample).
    """

    def __init__(self, rows: list[tuple], summary: dict[str, str], latency_source: str):
        self.rows, self.summary, self.latency_source = rows, summary, latency_source
        self.values = (np.array([(r[3], r[4]) for r in rows], dtype=float) if rows
                       else np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep) -> "_Points":
        sub = _Points.__new__(_Points)
        sub.rows = [self.rows[i] for i in np.flatnonzero(keep)]
        sub.summary, sub.latency_source = self.summary, self.latency_source
        sub.values = self.values[keep]
        return sub

    def point(self, i: int, on_front: bool | None = None) -> dict:
        d = dict(zip(_ROW_FIELDS, self.rows[i]))
        d["arch"] = self.summary.get(d["arch_hash"], "?")
        d["latency_interval_ms"] = latency_interval(d["latency_ms"], d["latency_std_ms"])
        if on_front is not None:
            d["on_front"] = on_front
        return d


def _points(store: ResultsStore, st: dict, device: str, fidelity: str,
            rung: str = STANDALONE) -> _Points:
    """The study's COMPLETED trials of one rung with a finite objective (RUNG_METRIC; in the
    "top1" slot of a point) and a latency on ``device``."""
    metric = getattr(Trial, RUNG_METRIC[rung])
    q = (select(Trial.id, Trial.trial_key, Trial.arch_hash, metric, Trial.latency_ms,
                Trial.params, Trial.gmacs, Trial.epochs_reached, Trial.latency_std_ms)
         .where(Trial.study_id == st["id"], Trial.status == COMPLETED, Trial.rung == rung,
                metric.is_not(None))
         .order_by(Trial.finished_at, Trial.id))
    if fidelity == "full":
        q = q.where(Trial.full_budget.is_(True))
    archs = select(Trial.arch_hash).where(Trial.study_id == st["id"]).distinct()
    with store.transaction() as s:
        conn = s.connection()  # plain DB-API rows: no ORM or Row bookkeeping per trial
        rows = raw_rows(conn, q)
        # One summary per architecture (many trials may share one), not one JSON parse per row.
        summary = {h: spec_summary(json.loads(j)) for h, j in conn.execute(
            select(Architecture.arch_hash, Architecture.spec_json)
            .where(Architecture.arch_hash.in_(archs)))}
    if device == st["device"]:
        source = "trial (predicted on the study device)"
        rows = [r for r in rows if r[4] is not None]
    else:
        other = _newest_predictions(store, device, archs)
        source = "newest prediction for the device"
        rows = [r[:4] + (other[r[2]]["latency_ms"],) + r[5:8] + (other[r[2]]["std_ms"],)
                for r in rows if r[2] in other]
    pts = _Points(rows, summary, source)
    finite = np.all(np.isfinite(pts.values), axis=1)
    return pts if finite.all() else pts.subset(finite)


def _baseline_markers(store: ResultsStore, st: dict, device: str,
                      in_study: list[dict], names: dict[str, str],
                      rung: str = STANDALONE) -> list[dict]:
    """XS/S/L1/L3 as points: proxy top-1 from this study's trial of that architecture (of this
    rung), else -- stand-alone rung only -- from another study with the same dataset and proxy
    budget (as the search driver reuses them);
    latency on ``device`` from that trial, else the newest prediction, else the published figure
    when ``device`` is the published one. Missing pieces stay None (drawn as a vertical line)."""
    preds = _newest_predictions(store, device, list(names))
    by_arch: dict[str, dict] = {}
    for p in in_study:  # finish order: the newest trial of each baseline architecture wins
        by_arch[p["arch_hash"]] = p
    out = []
    for b in store.baselines():
        h = b["arch_hash"]
        row = {"name": b["name"], "arch_hash": h, "trial_id": None, "top1": None,
               "top1_source": None, "latency_ms": None, "latency_std_ms": None,
               "latency_source": None, "published_top1": b["published_top1"],
               "published_latency_ms": b["published_latency_ms"],
               "published_device": b["latency_device"]}
        t = by_arch.get(h)
        if t is not None:
            row.update(trial_id=t["trial_id"], top1=t["top1"], top1_source="this study",
                       latency_ms=t["latency_ms"], latency_std_ms=t["latency_std_ms"],
                       latency_source=t["latency_source"])
        elif rung == STANDALONE:
            proxy = store.find_proxy_result(h, st["dataset_id"], st["fidelity_key"])
            if proxy is not None and _finite(proxy.get("top1")) is not None:
                row.update(trial_id=proxy["id"], top1=float(proxy["top1"]),
                           top1_source=f"study {proxy['study']} (same dataset and budget)")
                if proxy.get("device") == device and _finite(proxy.get("latency_ms")) is not None:
                    row.update(latency_ms=float(proxy["latency_ms"]),
                               latency_std_ms=_finite(proxy.get("latency_std_ms")),
                               latency_source=f"trial {proxy['id']}")
        if row["latency_ms"] is None and h in preds:
            row.update(latency_ms=float(preds[h]["latency_ms"]),
                       latency_std_ms=_finite(preds[h]["std_ms"]),
                       latency_source=f"prediction {preds[h]['predictor_version']}")
        if row["latency_ms"] is None and device == b["latency_device"]:
            row.update(latency_ms=float(b["published_latency_ms"]), latency_source="published")
        row["latency_interval_ms"] = latency_interval(row["latency_ms"], row["latency_std_ms"])
        out.append(row)
    return out


def _mark_intervals(front: list[dict], baselines: list[dict]) -> None:
    """Front members: ``advantage_within_interval`` = the baselines they dominate only inside
    the latency interval. Baselines: ``dominated_beyond_interval`` = True if some member
    dominates it by more than the interval, False if every member that dominates it does so
    inside the interval, None if none dominates it (or a std is unknown)."""
    for p in front:
        p["advantage_within_interval"] = sorted(
            b["name"] for b in baselines if advantage_within_interval(p, b))
    for b in baselines:
        verdicts = [advantage_within_interval(p, b) for p in front if point_dominates(p, b)]
        b["dominated_beyond_interval"] = (None if not verdicts or None in verdicts
                                          else not all(verdicts))


def _user_baseline_markers(in_study: list[dict], names: dict[str, str],
                           prefix: str = BASELINE_TRIAL_PREFIX) -> list[dict]:
    """Baselines the user added to the search (``--extra-arch``): their own trials only."""
    by_key: dict[str, dict] = {}
    for p in in_study:
        if p["arch_hash"] in names:
            continue
        name = p["trial_key"][len(prefix):].rsplit("-", 1)[0] or p["arch_hash"]
        by_key[name] = {"name": name, "arch_hash": p["arch_hash"], "trial_id": p["trial_id"],
                        "top1": p["top1"], "top1_source": "this study",
                        "latency_ms": p["latency_ms"], "latency_std_ms": p["latency_std_ms"],
                        "latency_interval_ms": p["latency_interval_ms"],
                        "latency_source": p["latency_source"],
                        "published_top1": None, "published_latency_ms": None,
                        "published_device": None}
    return list(by_key.values())


def _status_counts(store: ResultsStore, study_id: int,
                   rung: str | None = None) -> dict[str, int]:
    """Trials of one study (of one rung, when given) per status (lower-case keys), all of
    them, and the full-budget COMPLETED ones (the counts ``ResultsStore.studies`` gives, for
    one study)."""
    where = [Trial.study_id == study_id] + ([Trial.rung == rung] if rung else [])
    with store.transaction() as s:
        by = dict(s.execute(select(Trial.status, func.count()).where(*where)
                            .group_by(Trial.status)).all())
        full = s.scalar(select(func.count()).select_from(Trial).where(
            *where, Trial.status == COMPLETED, Trial.full_budget.is_(True)))
    out = {k.lower(): by.get(k, 0) for k in TRIAL_STATUSES}
    return out | {"trials": sum(by.values()), "full_budget": int(full)}


def study_front(store: ResultsStore, study: str, device: str | None = None,
               fidelity: str = "full", cache: dict | None = None,
               rung: str = STANDALONE) -> dict:
    """What the scatter, front and hypervolume views share (computed once per data change when
    the caller passes a ``cache`` dict that it clears whenever :func:`stamp_data` changes).

    Points: COMPLETED trials with top-1 and a latency on ``device`` (the study's target: the
    trial's own predicted latency; another device: the newest prediction for it), in finish
    order; ``fidelity`` "full" keeps trials that reached the study's whole proxy budget, "any"
    keeps all. Baseline architectures (XS/S/L1/L3) are taken out of the searched points and
    the front, and returned as markers. ``on_front`` marks the searched Pareto front.

    ``hypervolume`` is the searched front's, w.r.t. ``reference_point``: the one rule of
    ``results.pareto`` over the searched points *and* the baseline markers, so the number does
    not depend on whether the baselines win.

    ``rung``: one rung of the fidelity ladder (``results.schema.RUNGS``); a front never mixes
    rungs. On the "supernet" rung the first objective is the supernet score (``RUNG_METRIC``;
    the points' ``top1`` field holds it, ``metric`` names it) and the baselines are the ones
    scored on the supernet in this study.
    """
    if fidelity not in FIDELITIES:
        raise UsageError(f"fidelity {fidelity!r}: allowed {', '.join(FIDELITIES)}")
    if rung not in RUNGS:
        raise UsageError(f"rung {rung!r}: allowed {', '.join(RUNGS)}")
    key = (study, device, fidelity) + (() if rung == STANDALONE else (rung,))
    if cache is not None and key in cache:
        return cache[key]
    st = _study(store, study)
    devices = study_devices(store, st["id"], st["device"])
    dev = device or st["device"]
    if dev not in devices:
        raise UsageError(f"device {dev!r}: study {study!r} has latencies for "
                         f"{', '.join(devices)}")
    pts = _points(store, st, dev, fidelity, rung)
    names = _baseline_names(store)
    prefix = RUNG_KEY_PREFIX[rung] + BASELINE_TRIAL_PREFIX
    is_base = np.array([r[2] in names or r[1].startswith(prefix) for r in pts.rows], dtype=bool)
    cand = pts.subset(~is_base)
    on_front = pareto_mask(cand.values, OBJECTIVES) if len(cand) else np.zeros(0, dtype=bool)
    front_idx = np.flatnonzero(on_front)
    front = [cand.point(i, True) for i in front_idx.tolist()]
    base_pts = [dict(pts.point(i), latency_source=pts.latency_source)
                for i in np.flatnonzero(is_base).tolist()]
    baselines = (_baseline_markers(store, st, dev, base_pts, names, rung)
                 + _user_baseline_markers(base_pts, names, prefix))
    front_vals = cand.values[front_idx]
    for b in baselines:  # is the baseline dominated by the searched front?
        b["dominated_by_front"] = None if b["top1"] is None or b["latency_ms"] is None else bool(
            len(dominating(front_vals, (b["top1"], b["latency_ms"]), OBJECTIVES)))
    _mark_intervals(front, baselines)
    ref_vals = np.vstack([cand.values, np.array(
        [(b["top1"], b["latency_ms"]) for b in baselines
         if b["top1"] is not None and b["latency_ms"] is not None], dtype=float).reshape(-1, 2)])
    ref = reference_point(ref_vals, OBJECTIVES) if len(ref_vals) else None
    hv = hypervolume(cand.values, OBJECTIVES, ref) if len(cand) else 0.0
    counts = _status_counts(store, st["id"], rung)
    view = {"study": st, "device": dev, "devices": devices, "fidelity": fidelity,
            "rung": rung, "metric": RUNG_METRIC[rung],
            "cand": cand, "on_front": on_front, "front": front, "baselines": baselines,
            "latency_source": pts.latency_source, "reference_point": ref,
            "reference_rule": REFERENCE_RULE, "hypervolume": hv,
            "counts": {k: counts[k] for k in ("trials", "completed", "full_budget", "failed",
                                              "rejected", "pruned", "running")}}
    if cache is not None:
        cache[key] = view
    return view
