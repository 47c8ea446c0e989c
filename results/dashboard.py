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

from .families import Family, family_view, list_families
from search_space.errors import NotFoundError

from .pareto import REFERENCE_RULE, hypervolume_steps
from .schema import (COMPLETED, TRIAL_STATUSES, Baseline, EpochMetric,
                     LatencyMeasurement, LatencyPrediction, Study, TrainingRun, Trial)
from .store import ResultsStore
from .study_front import OBJECTIVES, FIDELITIES, spec_summary, study_devices, study_front

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_FILE = STATIC_DIR / "dashboard.html"
Fidelity = Literal["full", "any"]
# Names as they appear in the DB; the API refuses anything else before touching the DB.
DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+@-]{0,127}$"
STUDY_PATTERN = r"^[^\x00-\x1f/\\]{1,255}$"
ARCH_HASH_PATTERN = r"^[0-9a-f]{8,64}$"
MAX_TRIAL_ID = 2**62
DEFAULT_MAX_POINTS = 20_000
MAX_POINTS_LIMIT = 500_000
MAX_ARCH_TRIALS = 50  # trials listed (with epoch curves) in one architecture's detail


# ------------------------------------------------------------------------------------------
# data step: store -> JSON-ready dicts
# ------------------------------------------------------------------------------------------
def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc).isoformat()


def studies_data(store: ResultsStore) -> dict:
    """Every study with trial counts per status and the devices it can be viewed on."""
    rows = store.studies()
    for r in rows:
        r["devices"] = study_devices(store, r["id"], r["device"])
    return {"studies": rows, "fidelities": list(FIDELITIES)}


def scatter_data(store: ResultsStore, study: str, device: str | None = None,
                 fidelity: str = "full", max_points: int = DEFAULT_MAX_POINTS,
                 cache: dict | None = None) -> dict:
    """Proxy top-1 vs predicted latency of one study on one device (see :func:`results.study_front.study_front`),
    with the Pareto front of the searched architectures and the XS/S/L1/L3 markers. With more
    than ``max_points`` points, dominated ones are thinned evenly (the front is always kept;
    ``n_shown`` says how many were sent)."""
    v = study_front(store, study, device, fidelity, cache)
    cand, on_front = v["cand"], v["on_front"]
    n, n_front = len(cand), len(v["front"])
    keep = on_front.copy()
    dom = np.flatnonzero(~on_front)
    n_dom = max(min(max_points - n_front, len(dom)), 0)
    if n_dom:  # evenly spaced over the finish order, so early and late trials both show
        keep[dom[np.unique(np.linspace(0, len(dom) - 1, n_dom).astype(int))]] = True
    shown = [cand.point(i, bool(on_front[i])) for i in np.flatnonzero(keep).tolist()]
    return {"study": v["study"], "device": v["device"], "devices": v["devices"],
            "fidelity": fidelity,
            "x": {"metric": "latency_ms", "label": f"predicted latency on {v['device']} (ms)"},
            "y": {"metric": "top1", "label": "proxy top-1"},
            "latency_source": v["latency_source"],
            "n_considered": n, "n_front": n_front, "n_shown": len(shown),
            "counts": v["counts"], "points": shown, "baselines": v["baselines"]}


FRONT_COLUMNS = ("trial_id", "trial_key", "arch_hash", "top1", "latency_ms", "params", "gmacs",
                 "epochs_reached", "arch")


def front_data(store: ResultsStore, study: str, device: str | None = None,
               fidelity: str = "full", cache: dict | None = None) -> dict:
    """The searched front of :func:`results.study_front.study_front` as table rows, fastest
    first."""
    v = study_front(store, study, device, fidelity, cache)
    rows = sorted(v["front"], key=lambda p: (p["latency_ms"], -p["top1"], p["trial_id"]))
    return {"study": v["study"]["name"], "device": v["device"], "fidelity": fidelity,
            "columns": list(FRONT_COLUMNS), "n_considered": len(v["cand"]),
            "rows": [{c: p[c] for c in FRONT_COLUMNS} for p in rows]}


def front_csv(front: dict) -> str:
    from .report import to_csv
    return to_csv(front["rows"], front["columns"])


def hypervolume_data(store: ResultsStore, study: str, device: str | None = None,
                     fidelity: str = "full", reference: Sequence[float] | None = None,
                     cache: dict | None = None) -> dict:
    """Hypervolume of the searched front after each trial (finish order), top-1 up, latency down.

    The reference point is fixed for the whole curve (default: the study's reference point, the
    one the search report and ``pareto --study`` use: ``results.pareto.REFERENCE_RULE`` over the
    searched points and the baselines), so the curve is non-decreasing and ends at the study's
    hypervolume. Steps are listed only where the front changed, plus the last trial.
    """
    v = study_front(store, study, device, fidelity, cache)
    key = ("hypervolume", v["study"]["name"], v["device"], fidelity,
           None if reference is None else tuple(float(x) for x in reference))
    if cache is not None and key in cache:
        return cache[key]
    cand = v["cand"]  # finish order
    out = {"study": v["study"]["name"], "device": v["device"], "fidelity": fidelity,
           "objectives": [str(o) for o in OBJECTIVES], "n_trials": len(cand),
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


def arch_detail(store: ResultsStore, arch_hash: str, focus_trial: int | None = None,
                db_label: str = "runs/results.db") -> dict:
    """Everything about one architecture: spec by stage, params, GMACs, latency per device,
    its trials with per-epoch curves, full-scale training runs, and the export/retrain commands."""
    from search_space.spec import ArchSpec, PRESETS

    a = store.architecture(arch_hash)
    if a is None:
        raise NotFoundError(f"architecture {arch_hash!r}: not in this database")
    try:
        spec = ArchSpec.from_dict(a["spec"])
    except (ValueError, KeyError, TypeError):  # e.g. a synthetic/imported row: show what is there
        spec = None
    stages = [] if spec is None else [
        {"stage": i, "depth": spec.depths[i], "width": spec.widths[i],
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
    arch_arg = None if spec is None else _q(preset or spec.to_json())
    out_dir = None if pick is None else "runs/export/" + re.sub(
        r"[^A-Za-z0-9_.-]+", "_", f"{pick['study']}-{pick['id']}")
    commands = {
        "export": None if pick is None else (
            f"python run_search.py export --trial {pick['id']} --db {_q(db_label)} "
            f"--out {_q(out_dir)}"),
        "export_arch": None if spec is None else (
            f"python run_search.py export --arch {arch_arg} "
            f"--out {_q('runs/export/' + arch_hash[:12])}"),
        "retrain": None if spec is None else (
            f"python run_search.py retrain --arch {arch_arg} --data PATH/TO/IMAGENET"),
    }
    spec_d = a["spec"] if spec is None else spec.to_dict()
    return {"arch_hash": arch_hash, "baseline": baseline, "spec": spec_d,
            "summary": spec_summary(spec_d), "stages": stages,
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
    try:
        return json_safe(family_view(store, name))
    except ValueError as e:
        raise NotFoundError(str(e)) from None


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
        import threading
        self.store, self.stamp, self.views, self.lock = store, None, {}, threading.Lock()

    def fresh(self) -> dict:
        st = stamp_data(self.store)["stamp"]
        with self.lock:
            if st != self.stamp or len(self.views) > self.MAX_VIEWS:
                self.stamp, self.views = st, {}
            return self.views


# ------------------------------------------------------------------------------------------
# the page and the offline report (drawing lives in static/dashboard.html)
# ------------------------------------------------------------------------------------------
def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element (no "</script>" or "<!--" can end it early)."""
    try:
        text = json.dumps(obj, allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(json_safe(obj), allow_nan=False, default=str)
    return text.replace("<", "\\u003c")  # valid JSON and JS; nothing can close the element


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
def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None (strict JSON: a diverged trial may log NaN losses)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _fast_json(obj: dict):
    """The data dicts are plain JSON already: skip FastAPI's per-value jsonable_encoder walk
    (about 4x the cost of json.dumps on a 20k-point scatter). Strict JSON: a non-finite float
    somewhere (rare) costs one extra pass that turns it into null."""
    from fastapi.responses import JSONResponse
    try:
        return JSONResponse(obj)
    except ValueError:
        return JSONResponse(json_safe(obj))


# The page loads nothing from elsewhere; say so to the browser too (inline script/style are the
# page's own; plotly.js needs eval for some of its code paths).
CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(db: str, *, poll_seconds: float = 5.0, store: ResultsStore | None = None,
               allowed_hosts: Sequence[str] | None = None):
    """The FastAPI app serving the page and the JSON API over ``db``, opened read-only.

    ``allowed_hosts``: Host header values accepted (Starlette's TrustedHostMiddleware), which
    stops DNS-rebinding pages from reading the API through a browser; None = no check (the CLI
    always passes the loopback names plus the bound address).
    """
    from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

    store = store or ResultsStore(db, readonly=True)
    if not store.readonly:
        raise ValueError("dashboard: the results store must be opened read-only")
    db_label = str(db)
    cache = StampCache(store)
    # No Swagger/ReDoc pages: FastAPI loads their JS from a CDN. The schema itself is served.
    app = FastAPI(title="swiftformer-nas results dashboard",
                  description="Read-only JSON API over a swiftformer-nas results database.",
                  version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store = store
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        resp = await call_next(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if resp.headers.get("content-type", "").startswith("text/html"):
            resp.headers.setdefault("Content-Security-Policy", CSP)
        return resp

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
    def stamp():
        return _fast_json(stamp_data(store))

    @app.get("/api/studies")
    def studies():
        return _fast_json(studies_data(store))

    @app.get("/api/studies/{study}/scatter")
    def scatter(study: str = StudyName, device: str | None = DeviceQ,
                fidelity: Fidelity = FidelityQ,
                max_points: int = Query(DEFAULT_MAX_POINTS, ge=1, le=MAX_POINTS_LIMIT)) -> dict:
        return _fast_json(scatter_data(store, study, device, fidelity, max_points,
                                       cache=cache.fresh()))

    @app.get("/api/studies/{study}/front")
    def front(study: str = StudyName, device: str | None = DeviceQ,
              fidelity: Fidelity = FidelityQ,
              format: Literal["json", "csv"] = Query("json")):
        f = front_data(store, study, device, fidelity, cache=cache.fresh())
        if format == "csv":
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"front-{study}-{f['device']}-{fidelity}")
            return PlainTextResponse(front_csv(f), media_type="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"'})
        return _fast_json(f)

    @app.get("/api/studies/{study}/hypervolume")
    def hv(study: str = StudyName, device: str | None = DeviceQ,
           fidelity: Fidelity = FidelityQ,
           ref_top1: float | None = Query(None, allow_inf_nan=False,
                                          description="reference top-1 (with ref_latency_ms)"),
           ref_latency_ms: float | None = Query(None, allow_inf_nan=False, gt=0)) -> dict:
        if (ref_top1 is None) != (ref_latency_ms is None):
            raise HTTPException(400, "give both ref_top1 and ref_latency_ms, or neither")
        ref = None if ref_top1 is None else [ref_top1, ref_latency_ms]
        return _fast_json(hypervolume_data(store, study, device, fidelity, ref,
                                           cache=cache.fresh()))

    @app.get("/api/families")
    def families():
        return _fast_json(families_data(store))

    @app.get("/api/families/{name}")
    def family(name: str = PathParam(..., pattern=STUDY_PATTERN, max_length=255,
                                     description="family name (see /api/families)")):
        return _fast_json(family_data(store, name))

    @app.get("/api/trials/{trial_id}")
    def trial(trial_id: int = PathParam(..., ge=1, le=MAX_TRIAL_ID)):
        return _fast_json(trial_detail(store, trial_id, db_label=db_label))

    @app.get("/api/architectures/{arch_hash}")
    def architecture(arch_hash: str = PathParam(..., pattern=ARCH_HASH_PATTERN)):
        return _fast_json(arch_detail(store, arch_hash, db_label=db_label))

    return app
