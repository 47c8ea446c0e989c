"""Dashboard over the results database: a pure data step, a FastAPI JSON API, and the page.

Three layers, kept apart on purpose:

* **data** (``studies_data``, ``scatter_data``, ``front_data``, ``hypervolume_data``,
  ``arch_detail``, ``stamp_data``): functions of a :class:`~results.store.ResultsStore` that
  return JSON-ready dicts. They only read (SQLAlchemy expressions with bound parameters, never
  SQL text built from strings) and build on ``results.queries`` (Pareto mask, hypervolume).
* **API** (:func:`create_app`): FastAPI routes that validate every parameter (typed, bounded,
  pattern-checked; bad input -> 422 from FastAPI or 400 with one clear message) and return the
  data dicts. The store is opened read-only (SQLite ``mode=ro``), so the dashboard can never
  write, and in WAL mode its short read transactions never block the search writing.
* **drawing**: ``results/static/dashboard.html`` (plain JS + plotly.js). It fetches the API and
  polls ``/api/stamp`` to refresh while a search runs. :func:`build_report` writes the same page
  as one offline HTML file with plotly.js (from the installed ``plotly`` package) and the data
  inlined; the page's JS reads the inlined data instead of calling the API.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from sqlalchemy import func, select

from .queries import Objective, default_reference, hypervolume, pareto_mask
from .schema import (COMPLETED, TRIAL_STATUSES, Architecture, Baseline, EpochMetric,
                     LatencyMeasurement, LatencyPrediction, Study, TrainingRun, Trial)
from .store import ResultsStore

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_FILE = STATIC_DIR / "dashboard.html"
FIDELITIES = ("full", "any")
Fidelity = Literal["full", "any"]
# Names as they appear in the DB; the API refuses anything else before touching the DB.
DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+@-]{0,127}$"
STUDY_PATTERN = r"^[^\x00-\x1f/\\]{1,255}$"
ARCH_HASH_PATTERN = r"^[0-9a-f]{8,64}$"
MAX_TRIAL_ID = 2**62
DEFAULT_MAX_POINTS = 20_000
MAX_POINTS_LIMIT = 500_000
MAX_ARCH_TRIALS = 50  # trials listed (with epoch curves) in one architecture's detail
OBJECTIVES = (Objective("top1", "max"), Objective("latency_ms", "min"))


class NotFoundError(LookupError):
    """A study / trial / architecture the request names is not in the database (HTTP 404)."""


# ------------------------------------------------------------------------------------------
# data step: store -> JSON-ready dicts
# ------------------------------------------------------------------------------------------
def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc).isoformat()


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


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


def studies_data(store: ResultsStore) -> dict:
    """Every study with trial counts per status and the devices it can be viewed on."""
    rows = store.studies()
    for r in rows:
        r["devices"] = study_devices(store, r["id"], r["device"])
    return {"studies": rows, "fidelities": list(FIDELITIES)}


def spec_summary(spec: dict) -> str:
    """One line for hover text: depths, widths, MLP ratios, attention blocks, resolution."""
    def j(v):
        return "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return (f"d {j(spec['depths'])} | w {j(spec['widths'])} | mlp {j(spec['mlp_ratios'])} | "
            f"attn {j(spec['attn_blocks'])} | {spec['resolution']}px")


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


def _points(store: ResultsStore, st: dict, device: str, fidelity: str) -> list[dict]:
    """COMPLETED trials of the study with top-1 and a latency on ``device``, in finish order."""
    q = (select(Trial.id, Trial.trial_key, Trial.arch_hash, Trial.top1, Trial.latency_ms,
                Trial.params, Trial.gmacs, Trial.epochs_reached, Trial.full_budget,
                Trial.finished_at, Architecture.spec_json)
         .join(Architecture, Architecture.arch_hash == Trial.arch_hash)
         .where(Trial.study_id == st["id"], Trial.status == COMPLETED, Trial.top1.is_not(None))
         .order_by(Trial.finished_at, Trial.id))
    if fidelity == "full":
        q = q.where(Trial.full_budget.is_(True))
    with store.transaction() as s:
        rows = s.execute(q).all()
    other = None
    if device != st["device"]:
        other = _newest_predictions(
            store, device, select(Trial.arch_hash).where(Trial.study_id == st["id"]).distinct())
    pts = []
    for r in rows:
        if other is None:
            lat, src = r.latency_ms, "trial (predicted on the study device)"
        else:
            p = other.get(r.arch_hash)
            lat, src = (None, None) if p is None else (p["latency_ms"],
                                                        f"prediction {p['predictor_version']}")
        top1, lat = _finite(r.top1), _finite(lat)
        if top1 is None or lat is None:
            continue
        spec = json.loads(r.spec_json)
        pts.append({"trial_id": r.id, "trial_key": r.trial_key, "arch_hash": r.arch_hash,
                    "top1": top1, "latency_ms": lat, "latency_source": src,
                    "params": r.params, "gmacs": _finite(r.gmacs),
                    "epochs_reached": r.epochs_reached, "full_budget": bool(r.full_budget),
                    "finished_at": _iso(r.finished_at), "arch": spec_summary(spec)})
    return pts


def _split(store: ResultsStore, pts: list[dict]) -> tuple[list[dict], list[dict], dict[str, str]]:
    names = _baseline_names(store)
    cand = [p for p in pts if p["arch_hash"] not in names]
    base = [p for p in pts if p["arch_hash"] in names]
    return cand, base, names


def _front_mask(pts: Sequence[dict]) -> np.ndarray:
    if not pts:
        return np.zeros(0, dtype=bool)
    vals = np.array([[p["top1"], p["latency_ms"]] for p in pts], dtype=float)
    return pareto_mask(vals, OBJECTIVES)


def _baseline_markers(store: ResultsStore, st: dict, device: str, fidelity: str,
                      in_study: list[dict], names: dict[str, str]) -> list[dict]:
    """XS/S/L1/L3 as points: proxy top-1 from this study's trial of that architecture, else from
    another study with the same dataset and proxy budget (as the search driver reuses them);
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
               "top1_source": None, "latency_ms": None, "latency_source": None,
               "published_top1": b["published_top1"],
               "published_latency_ms": b["published_latency_ms"],
               "published_device": b["latency_device"]}
        t = by_arch.get(h)
        if t is not None:
            row.update(trial_id=t["trial_id"], top1=t["top1"], top1_source="this study",
                       latency_ms=t["latency_ms"], latency_source=t["latency_source"])
        else:
            proxy = store.find_proxy_result(h, st["dataset_id"], st["fidelity_key"])
            if proxy is not None and _finite(proxy.get("top1")) is not None:
                row.update(trial_id=proxy["id"], top1=float(proxy["top1"]),
                           top1_source=f"study {proxy['study']} (same dataset and budget)")
                if proxy.get("device") == device and _finite(proxy.get("latency_ms")) is not None:
                    row.update(latency_ms=float(proxy["latency_ms"]),
                               latency_source=f"trial {proxy['id']}")
        if row["latency_ms"] is None and h in preds:
            row.update(latency_ms=float(preds[h]["latency_ms"]),
                       latency_source=f"prediction {preds[h]['predictor_version']}")
        if row["latency_ms"] is None and device == b["latency_device"]:
            row.update(latency_ms=float(b["published_latency_ms"]), latency_source="published")
        out.append(row)
    return out


def scatter_data(store: ResultsStore, study: str, device: str | None = None,
                 fidelity: str = "full", max_points: int = DEFAULT_MAX_POINTS) -> dict:
    """Proxy top-1 vs predicted latency of one study on one device, with the Pareto front of
    the searched architectures (baseline architectures excluded from it and shown apart).

    Points: COMPLETED trials with top-1 and a latency on ``device`` (the study's target: the
    trial's own predicted latency; another device: the newest prediction for it). ``fidelity``
    "full" keeps trials that reached the study's whole proxy budget, "any" keeps all. When there
    are more than ``max_points`` points, dominated ones are thinned evenly (front always kept;
    ``n_shown`` says how many were sent).
    """
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity {fidelity!r}: allowed {', '.join(FIDELITIES)}")
    st = _study(store, study)
    devices = study_devices(store, st["id"], st["device"])
    device = device or st["device"]
    if device not in devices:
        raise ValueError(f"device {device!r}: study {study!r} has latencies for "
                         f"{', '.join(devices)}")
    pts = _points(store, st, device, fidelity)
    cand, base_trials, names = _split(store, pts)
    mask = _front_mask(cand)
    for p, on in zip(cand, mask.tolist()):
        p["on_front"] = on
    n_front = int(mask.sum())
    shown = cand
    if len(cand) > max_points:
        dom = [p for p in cand if not p["on_front"]]
        keep = max(max_points - n_front, 0)
        idx = set(np.linspace(0, len(dom) - 1, keep).astype(int).tolist()) if keep and dom else set()
        dom_ids = {dom[i]["trial_id"] for i in idx}
        shown = [p for p in cand if p["on_front"] or p["trial_id"] in dom_ids]
    baselines = _baseline_markers(store, st, device, fidelity, base_trials, names)
    front = [p for p in cand if p["on_front"]]
    for b in baselines:  # is the baseline dominated by the searched front?
        b["dominated_by_front"] = None if b["top1"] is None or b["latency_ms"] is None else any(
            p["top1"] >= b["top1"] and p["latency_ms"] <= b["latency_ms"]
            and (p["top1"] > b["top1"] or p["latency_ms"] < b["latency_ms"]) for p in front)
    counts = next(r for r in store.studies() if r["id"] == st["id"])
    return {"study": st, "device": device, "devices": devices, "fidelity": fidelity,
            "x": {"metric": "latency_ms", "label": f"predicted latency on {device} (ms)"},
            "y": {"metric": "top1", "label": "proxy top-1"},
            "n_considered": len(cand), "n_front": n_front, "n_shown": len(shown),
            "counts": {k: counts[k] for k in ("trials", "completed", "full_budget", "failed",
                                              "rejected", "pruned", "running")},
            "points": shown, "baselines": baselines}


FRONT_COLUMNS = ("trial_id", "trial_key", "arch_hash", "top1", "latency_ms", "params", "gmacs",
                 "epochs_reached", "arch")


def front_data(store: ResultsStore, study: str, device: str | None = None,
               fidelity: str = "full") -> dict:
    """The front of :func:`scatter_data` as table rows, sorted by latency (fastest first)."""
    sc = scatter_data(store, study, device, fidelity, max_points=MAX_POINTS_LIMIT)
    rows = sorted((p for p in sc["points"] if p["on_front"]),
                  key=lambda p: (p["latency_ms"], -p["top1"], p["trial_id"]))
    return {"study": sc["study"]["name"], "device": sc["device"], "fidelity": fidelity,
            "columns": list(FRONT_COLUMNS), "n_considered": sc["n_considered"],
            "rows": [{c: p[c] for c in FRONT_COLUMNS} for p in rows]}


def front_csv(front: dict) -> str:
    from .report import to_csv
    return to_csv(front["rows"], front["columns"])


def hypervolume_data(store: ResultsStore, study: str, device: str | None = None,
                     fidelity: str = "full",
                     reference: Sequence[float] | None = None) -> dict:
    """Hypervolume of the searched front after each trial (finish order), top-1 up, latency down.

    The reference point is fixed for the whole curve (default: ``queries.default_reference``
    over every considered point: worst value of each objective plus 10 % of its range), so the
    curve is non-decreasing. Steps are listed only where the front changed, plus the last trial.
    """
    sc = scatter_data(store, study, device, fidelity, max_points=MAX_POINTS_LIMIT)
    cand = [p for p in sc["points"]]  # finish order
    out = {"study": sc["study"]["name"], "device": sc["device"], "fidelity": fidelity,
           "objectives": [str(o) for o in OBJECTIVES], "n_trials": len(cand),
           "reference_point": None, "reference_rule": None, "steps": [], "final": None}
    if not cand:
        return out
    vals = np.array([[p["top1"], p["latency_ms"]] for p in cand], dtype=float)
    if reference is None:
        ref = default_reference(vals, OBJECTIVES)
        rule = "worst considered value of each objective + 10% of its range"
    else:
        ref = [float(x) for x in reference]
        rule = "user-given"
    loss = vals * np.array([o.sign for o in OBJECTIVES])
    front = np.zeros((0, 2))  # loss space, current non-dominated set
    steps = []
    hv = 0.0
    for i, (p, q) in enumerate(zip(cand, loss)):
        if front.shape[0] and np.any(np.all(front <= q, axis=1)):
            continue  # dominated by (or equal to) a front member: hypervolume unchanged
        front = np.vstack([front[~np.all(q <= front, axis=1)], q])
        hv = hypervolume(front * np.array([o.sign for o in OBJECTIVES]), OBJECTIVES, ref)
        steps.append({"n": i + 1, "trial_id": p["trial_id"], "hypervolume": hv})
    if not steps or steps[-1]["n"] != len(cand):
        steps.append({"n": len(cand), "trial_id": cand[-1]["trial_id"], "hypervolume": hv})
    out.update(reference_point=ref, reference_rule=rule, steps=steps, final=hv)
    return out


def _q(x: Any) -> str:
    return shlex.quote(str(x))


def arch_detail(store: ResultsStore, arch_hash: str, focus_trial: int | None = None,
                db_label: str = "runs/results.db") -> dict:
    """Everything about one architecture: spec by stage, params, GMACs, latency per device,
    its trials with per-epoch curves, full-scale training runs, and the export/retrain commands."""
    from search_space.spec import ArchSpec, PRESETS

    a = store.architecture(arch_hash)
    if a is None:
        raise NotFoundError(f"architecture {arch_hash!r}: not in this database")
    spec = ArchSpec.from_dict(a["spec"])
    stages = [{"stage": i, "depth": spec.depths[i], "width": spec.widths[i],
               "mlp_ratio": spec.mlp_ratios[i], "hidden_dim": spec.hidden_dim(i),
               "attn_blocks": spec.attn_blocks[i], "blocks": list(spec.block_kinds(i))}
              for i in range(len(spec.depths))]
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
    if focus_trial is not None and focus_trial not in trial_ids:
        trial_ids.insert(0, focus_trial)
    trials = []
    for tid in trial_ids:
        t = store.trial(tid)
        if t["arch_hash"] != arch_hash:
            raise NotFoundError(f"trial {tid}: is not a trial of architecture {arch_hash}")
        trials.append({k: t[k] for k in ("id", "study", "trial_key", "status", "device",
                                         "top1", "top5", "val_loss", "latency_ms",
                                         "epochs_reached", "full_budget", "error",
                                         "finished_at")}
                      | {"epochs": t["epochs"]})
    runs = store.training_runs(arch_hash)
    # Commands: export the focused (or newest completed) trial; retrain from the spec itself.
    pick = next((t for t in trials if t["id"] == focus_trial), None) or next(
        (t for t in trials if t["status"] == COMPLETED), None)
    preset = baseline["name"] if baseline and PRESETS.get(baseline["name"]) == spec else None
    commands = {
        "export": None if pick is None else (
            f"python run_search.py export --trial {pick['id']} --db {_q(db_label)} "
            f"--out {_q('runs/export/' + re.sub(r'[^A-Za-z0-9_.-]+', '_', str(pick['study'])) + '-' + str(pick['id']))}"),
        "export_arch": f"python run_search.py export --arch {_q(preset or spec.to_json())} "
                       f"--out {_q('runs/export/' + arch_hash[:12])}",
        "retrain": f"python run_search.py retrain --arch {_q(preset or spec.to_json())} "
                   "--data PATH/TO/IMAGENET",
    }
    return {"arch_hash": arch_hash, "baseline": baseline, "spec": spec.to_dict(),
            "summary": spec_summary(spec.to_dict()), "stages": stages,
            "params": a["params"], "gmacs": a["gmacs"],
            "latency": preds + meas + ([{"device": baseline["published_device"],
                                         "latency_ms": baseline["published_latency_ms"],
                                         "kind": "published", "source": baseline["source"]}]
                                       if baseline else []),
            "focus_trial_id": focus_trial, "n_trials": int(n_trials), "trials": trials,
            "training_runs": runs, "commands": commands}


def trial_detail(store: ResultsStore, trial_id: int, db_label: str = "runs/results.db") -> dict:
    """:func:`arch_detail` of the trial's architecture, focused on that trial."""
    with store.transaction() as s:
        h = s.scalar(select(Trial.arch_hash).where(Trial.id == trial_id))
    if h is None:
        raise NotFoundError(f"trial {trial_id}: not in this database")
    return arch_detail(store, h, focus_trial=trial_id, db_label=db_label)


def stamp_data(store: ResultsStore) -> dict:
    """A cheap change marker: the page polls it and refetches only when it changed."""
    with store.transaction() as s:
        n, last_id, last_fin = s.execute(select(func.count(Trial.id), func.max(Trial.id),
                                                func.max(Trial.finished_at))).one()
        status = dict(s.execute(select(Trial.status, func.count()).group_by(Trial.status)).all())
        ep_n, ep_last = s.execute(select(func.count(EpochMetric.id),
                                         func.max(EpochMetric.recorded_at))).one()
        n_studies = s.scalar(select(func.count(Study.id)))
        n_pred = s.scalar(select(func.max(LatencyPrediction.id)))
        runs = s.execute(select(func.count(TrainingRun.id),
                                func.max(TrainingRun.finished_at))).one()
    parts = [n_studies, n, last_id, _iso(last_fin), *(status.get(k, 0) for k in TRIAL_STATUSES),
             ep_n, _iso(ep_last), n_pred, runs[0], _iso(runs[1])]
    return {"stamp": "|".join("" if p is None else str(p) for p in parts), "studies": n_studies,
            "trials": n, "by_status": {k: status.get(k, 0) for k in TRIAL_STATUSES},
            "epochs_logged": ep_n, "last_finished_at": _iso(last_fin)}


# ------------------------------------------------------------------------------------------
# the page and the offline report (drawing lives in static/dashboard.html)
# ------------------------------------------------------------------------------------------
def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element (no "</" can close it early)."""
    return json.dumps(obj, allow_nan=False, default=str).replace("</", "<\\/").replace(
        "<!--", "<\\!--")


def render_page(*, boot: dict, plotly_tag: str) -> str:
    """The page with its boot config and plotly.js tag filled in."""
    html = PAGE_FILE.read_text(encoding="utf-8")
    return (html.replace("<!--PLOTLY-->", plotly_tag)
            .replace("/*BOOT*/null", _script_json(boot)))


def report_data(store: ResultsStore, studies: Sequence[str] | None = None,
                max_details: int = 500, db_label: str = "runs/results.db") -> dict:
    """Every view of the page for the chosen studies (all devices, both fidelities), plus the
    detail of front members, baselines and the newest other points up to ``max_details``."""
    all_studies = studies_data(store)
    if studies:
        known = {s["name"] for s in all_studies["studies"]}
        for n in studies:
            if n not in known:
                raise ValueError(f"--study {n!r}: not in this database (see: run_search.py studies)")
        all_studies["studies"] = [s for s in all_studies["studies"] if s["name"] in set(studies)]
    views: dict = {}
    want: list[int] = []
    later: list[int] = []
    for st in all_studies["studies"]:
        for dev in st["devices"]:
            for fid in FIDELITIES:
                sc = scatter_data(store, st["name"], dev, fid)
                views.setdefault(st["name"], {}).setdefault(dev, {})[fid] = {
                    "scatter": sc, "front": front_data(store, st["name"], dev, fid),
                    "hypervolume": hypervolume_data(store, st["name"], dev, fid)}
                want += [p["trial_id"] for p in sc["points"] if p["on_front"]]
                want += [b["trial_id"] for b in sc["baselines"] if b["trial_id"] is not None]
                later += [p["trial_id"] for p in reversed(sc["points"]) if not p["on_front"]]
    ids = list(dict.fromkeys(want + later))[:max_details]
    details = {str(t): trial_detail(store, t, db_label=db_label) for t in ids}
    return {"generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "db": db_label, "studies": all_studies, "views": views, "trials": details,
            "max_details": max_details}


def build_report(store: ResultsStore, out: str | os.PathLike, *,
                 studies: Sequence[str] | None = None, max_details: int = 500,
                 db_label: str = "runs/results.db") -> Path:
    """Write the dashboard as one self-contained offline HTML file (temp file, then rename)."""
    from plotly.offline import get_plotlyjs

    data = report_data(store, studies, max_details=max_details, db_label=db_label)
    html = render_page(boot={"mode": "static", "data": data},
                       plotly_tag="<script>" + get_plotlyjs() + "</script>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------------------
def create_app(db: str, *, poll_seconds: float = 5.0, store: ResultsStore | None = None):
    """The FastAPI app serving the page and the JSON API over ``db``, opened read-only."""
    from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

    store = store or ResultsStore(db, readonly=True)
    if not store.readonly:
        raise ValueError("dashboard: the results store must be opened read-only")
    db_label = str(db)
    app = FastAPI(title="swiftformer-nas results dashboard",
                  description="Read-only JSON API over a swiftformer-nas results database.",
                  version="1")
    app.state.store = store

    @app.exception_handler(NotFoundError)
    async def _not_found(_req: Request, exc: NotFoundError):
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(ValueError)
    async def _bad_value(_req: Request, exc: ValueError):
        return JSONResponse(status_code=400, content={"detail": str(exc).splitlines()[0]})

    StudyName = PathParam(..., pattern=STUDY_PATTERN, max_length=255,
                          description="study name (see /api/studies)")
    DeviceQ = Query(None, pattern=DEVICE_PATTERN, max_length=128,
                    description="latency device (default: the study's target device)")
    FidelityQ = Query("full", description="full: trials that reached the study's whole proxy "
                                          "budget; any: every completed trial")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(
            boot={"mode": "api", "poll_seconds": poll_seconds, "db": db_label},
            plotly_tag='<script src="static/plotly.min.js"></script>'))

    plotly_js: dict[str, bytes] = {}

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> Response:
        # Served from the installed plotly package: no CDN, works without internet.
        if "js" not in plotly_js:
            from plotly.offline import get_plotlyjs
            plotly_js["js"] = get_plotlyjs().encode()
        return Response(plotly_js["js"], media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "readonly": store.readonly, "db": db_label}

    @app.get("/api/stamp")
    def stamp() -> dict:
        return stamp_data(store)

    @app.get("/api/studies")
    def studies() -> dict:
        return studies_data(store)

    @app.get("/api/studies/{study}/scatter")
    def scatter(study: str = StudyName, device: str | None = DeviceQ,
                fidelity: Fidelity = FidelityQ,
                max_points: int = Query(DEFAULT_MAX_POINTS, ge=1, le=MAX_POINTS_LIMIT)) -> dict:
        return scatter_data(store, study, device, fidelity, max_points)

    @app.get("/api/studies/{study}/front")
    def front(study: str = StudyName, device: str | None = DeviceQ,
              fidelity: Fidelity = FidelityQ,
              format: Literal["json", "csv"] = Query("json")):
        f = front_data(store, study, device, fidelity)
        if format == "csv":
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"front-{study}-{f['device']}-{fidelity}")
            return PlainTextResponse(front_csv(f), media_type="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"'})
        return f

    @app.get("/api/studies/{study}/hypervolume")
    def hv(study: str = StudyName, device: str | None = DeviceQ,
           fidelity: Fidelity = FidelityQ,
           ref_top1: float | None = Query(None, allow_inf_nan=False,
                                          description="reference top-1 (with ref_latency_ms)"),
           ref_latency_ms: float | None = Query(None, allow_inf_nan=False, gt=0)) -> dict:
        if (ref_top1 is None) != (ref_latency_ms is None):
            raise HTTPException(400, "give both ref_top1 and ref_latency_ms, or neither")
        ref = None if ref_top1 is None else [ref_top1, ref_latency_ms]
        return hypervolume_data(store, study, device, fidelity, ref)

    @app.get("/api/trials/{trial_id}")
    def trial(trial_id: int = PathParam(..., ge=1, le=MAX_TRIAL_ID)) -> dict:
        return trial_detail(store, trial_id, db_label=db_label)

    @app.get("/api/architectures/{arch_hash}")
    def architecture(arch_hash: str = PathParam(..., pattern=ARCH_HASH_PATTERN)) -> dict:
        return arch_detail(store, arch_hash, db_label=db_label)

    return app
