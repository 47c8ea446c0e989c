"""The dashboard's web layer: a FastAPI app serving the page and a read-only JSON API.

Every route is a small function of this module's ``router`` that validates its parameters
(typed, bounded, pattern-checked: bad input -> 422 from FastAPI, or 400 with one clear message
for a UsageError, 404 for a NotFoundError) and returns a dict from ``results.dashboard.data``.
The per-app state (the read-only store, its stamp cache, the page settings) lives in
``app.state.dashboard`` and reaches the routes through one dependency, so the routes need no
closure and :func:`create_app` only assembles the app.

The store is opened read-only (SQLite ``mode=ro``), so the dashboard can never write, and in
WAL mode its short read transactions never block the search writing. Servers bind 127.0.0.1 by
default (``results.dashboard.cli``) and check the Host header against DNS rebinding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Sequence

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from search_space.errors import NotFoundError, UsageError
from search_space.io import json_safe

from ..options import open_store
from ..store import ResultsStore
from . import data
from .page import plotly_js, render_page

# Names as they appear in the DB; the API refuses anything else before touching the DB.
DEVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+@-]{0,127}$"
STUDY_PATTERN = r"^[^\x00-\x1f/\\]{1,255}$"
ARCH_HASH_PATTERN = r"^[0-9a-f]{8,64}$"
MAX_TRIAL_ID = 2**62
MAX_POINTS_LIMIT = 500_000
# The page loads nothing from elsewhere; say so to the browser too (inline script/style are the
# page's own; plotly.js needs eval for some of its code paths).
CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass
class Dashboard:
    """What the routes of one app share."""
    store: ResultsStore
    db_label: str
    poll_seconds: float
    cache: data.StampCache


def _dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


Dash = Annotated[Dashboard, Depends(_dashboard)]
StudyName = Annotated[str, Path(pattern=STUDY_PATTERN, max_length=255,
                                description="study name (see /api/studies)")]
FamilyName = Annotated[str, Path(pattern=STUDY_PATTERN, max_length=255,
                                 description="family name (see /api/families)")]
DeviceQ = Annotated[str | None, Query(pattern=DEVICE_PATTERN, max_length=128,
                                      description="latency device (default: the study's "
                                                  "target device)")]
FidelityQ = Annotated[Literal["full", "any"], Query(
    description="full: trials that reached the study's whole proxy budget; any: every "
                "completed trial")]
RungQ = Annotated[Literal["standalone", "supernet"], Query(
    description="rung of the fidelity ladder: standalone (trained proxies' top-1, default) or "
                "supernet (every candidate's supernet score; a --proxy supernet study)")]

router = APIRouter()


def fast_json(obj: dict) -> JSONResponse:
    """The data dicts are plain JSON already: skip FastAPI's per-value jsonable_encoder walk
    (about 4x the cost of json.dumps on a 20k-point scatter). Strict JSON: a non-finite float
    somewhere (rare) costs one extra pass (``search_space.io.json_safe``) that makes it null."""
    try:
        return JSONResponse(obj)
    except ValueError:
        return JSONResponse(json_safe(obj))


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(d: Dash) -> HTMLResponse:
    return HTMLResponse(render_page(
        boot={"mode": "api", "poll_seconds": d.poll_seconds, "db": d.db_label},
        plotly_tag='<script src="static/plotly.min.js"></script>'))


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_bundle() -> Response:
    return Response(plotly_js(), media_type="application/javascript",
                    headers={"Cache-Control": "max-age=86400"})


@router.get("/api/health")
def health(d: Dash) -> dict:
    return {"ok": True, "readonly": d.store.readonly, "db": d.db_label}


@router.get("/api/stamp")
def stamp(d: Dash):
    return fast_json(data.stamp_data(d.store))


@router.get("/api/studies")
def studies(d: Dash):
    return fast_json(data.studies_data(d.store))


@router.get("/api/studies/{study}/scatter")
def scatter(d: Dash, study: StudyName, device: DeviceQ = None, fidelity: FidelityQ = "full",
            max_points: Annotated[int, Query(ge=1, le=MAX_POINTS_LIMIT)] = data.DEFAULT_MAX_POINTS,
            rung: RungQ = "standalone"):
    return fast_json(data.scatter_data(d.store, study, device, fidelity, max_points,
                                       cache=d.cache.fresh(), rung=rung))


@router.get("/api/studies/{study}/front")
def front(d: Dash, study: StudyName, device: DeviceQ = None, fidelity: FidelityQ = "full",
          format: Annotated[Literal["json", "csv"], Query()] = "json",
          rung: RungQ = "standalone"):
    f = data.front_data(d.store, study, device, fidelity, cache=d.cache.fresh(), rung=rung)
    if format == "json":
        return fast_json(f)
    suffix = "" if rung == "standalone" else f"-{rung}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"front-{study}-{f['device']}-{fidelity}{suffix}")
    return PlainTextResponse(data.front_csv(f), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.get("/api/studies/{study}/hypervolume")
def hypervolume(d: Dash, study: StudyName, device: DeviceQ = None, fidelity: FidelityQ = "full",
                ref_top1: Annotated[float | None, Query(
                    allow_inf_nan=False, description="reference top-1 (with ref_latency_ms)")] = None,
                ref_latency_ms: Annotated[float | None, Query(allow_inf_nan=False, gt=0)] = None,
                rung: RungQ = "standalone"):
    if (ref_top1 is None) != (ref_latency_ms is None):
        raise HTTPException(400, "give both ref_top1 and ref_latency_ms, or neither")
    ref = None if ref_top1 is None else [ref_top1, ref_latency_ms]
    return fast_json(data.hypervolume_data(d.store, study, device, fidelity, ref,
                                           cache=d.cache.fresh(), rung=rung))


@router.get("/api/families")
def families(d: Dash):
    return fast_json(data.families_data(d.store))


@router.get("/api/families/{name}")
def family(d: Dash, name: FamilyName):
    return fast_json(data.family_data(d.store, name))


@router.get("/api/trials/{trial_id}")
def trial(d: Dash, trial_id: Annotated[int, Path(ge=1, le=MAX_TRIAL_ID)]):
    return fast_json(data.trial_detail(d.store, trial_id, db_label=d.db_label))


@router.get("/api/architectures/{arch_hash}")
def architecture(d: Dash, arch_hash: Annotated[str, Path(pattern=ARCH_HASH_PATTERN)]):
    return fast_json(data.arch_detail(d.store, arch_hash, db_label=d.db_label))


async def _security_headers(request: Request, call_next):
    resp = await call_next(request)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if resp.headers.get("content-type", "").startswith("text/html"):
        resp.headers.setdefault("Content-Security-Policy", CSP)
    return resp


async def _not_found(_req: Request, exc: NotFoundError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _bad_input(_req: Request, exc: UsageError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(exc).splitlines()[0]})


def create_app(db: str, *, poll_seconds: float = 5.0, store: ResultsStore | None = None,
               allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The FastAPI app serving the page and the JSON API over ``db``, opened read-only.

    ``allowed_hosts``: Host header values accepted (Starlette's TrustedHostMiddleware), which
    stops DNS-rebinding pages from reading the API through a browser. The check is always on:
    the default accepts the loopback names only (the CLI adds the bound address and
    ``--allowed-host`` names); ``("*",)`` is the explicit way to accept any Host.
    """
    store = store or open_store(db, readonly=True)
    if not store.readonly:
        raise ValueError("dashboard: the results store must be opened read-only")
    # No Swagger/ReDoc pages: FastAPI loads their JS from a CDN. The schema itself is served.
    app = FastAPI(title="swiftformer-nas results dashboard",
                  description="Read-only JSON API over a swiftformer-nas results database.",
                  version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.dashboard = Dashboard(store, str(db), poll_seconds, data.StampCache(store))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.middleware("http")(_security_headers)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(UsageError, _bad_input)
    app.include_router(router)
    return app
