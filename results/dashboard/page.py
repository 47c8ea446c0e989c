"""The dashboard's drawing step: the page (``static/dashboard.html``, plain JS + plotly.js) with
its boot data, and the offline report (the same page with plotly.js and every view inlined).

plotly.js comes from the installed ``plotly`` package (no CDN; works without internet).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

from search_space.io import json_safe, write_text_atomic
from search_space.lazy import lazy_import

from ..store import ResultsStore
from .data import report_data

plotly_offline = lazy_import("plotly.offline")

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_FILE = STATIC_DIR / "dashboard.html"


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element (no "</script>" or "<!--" can end it early).

    The data dicts are plain JSON already; only when one holds a non-finite float (rare) does
    ``search_space.io.json_safe`` walk it to turn that into null."""
    try:
        text = json.dumps(obj, allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(json_safe(obj), allow_nan=False)
    return text.replace("<", "\\u003c")  # valid JSON and JS; nothing can close the element


def render_page(*, boot: dict, plotly_tag: str) -> str:
    """The page with its boot config and plotly.js tag filled in."""
    html = PAGE_FILE.read_text(encoding="utf-8")
    return (html.replace("<!--PLOTLY-->", plotly_tag)
            .replace("/*BOOT*/null", script_json(boot)))


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """The plotly.js bundle of the installed plotly package (read once per process)."""
    return plotly_offline.get_plotlyjs().encode()


def build_report(store: ResultsStore, out: str | os.PathLike, *,
                 studies: Sequence[str] | None = None, max_details: int = 500,
                 db_label: str = "runs/results.db") -> Path:
    """Write the dashboard as one self-contained offline HTML file (atomically)."""
    data = report_data(store, studies, max_details=max_details, db_label=db_label)
    html = render_page(boot={"mode": "static", "data": data},
                       plotly_tag="<script>" + plotly_js().decode() + "</script>")
    return write_text_atomic(out, html)
