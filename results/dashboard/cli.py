"""CLI: ``dashboard`` (serve the results web page + JSON API) and ``report`` (offline HTML).

The web stack (FastAPI, uvicorn, plotly) loads on first use (``lazy_import``): the database is
opened and every option checked before any of it is imported.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from search_space.errors import UsageError
from search_space.lazy import lazy_import

from ..options import add_db_option, open_store

app = lazy_import("results.dashboard.app")
page = lazy_import("results.dashboard.page")
uvicorn = lazy_import("uvicorn")

DEFAULT_PORT = 8050


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is outside 1..65535")
    return v


def _poll(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v == 0 or 1 <= v <= 3600):
        raise argparse.ArgumentTypeError(f"{v:g}: allowed 0 (no polling) or 1..3600 seconds")
    return v


def _max_details(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 100_000:
        raise argparse.ArgumentTypeError(f"{v}: allowed 0..100000")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the results dashboard (web page + JSON API)")
    add_db_option(p, purpose="opened read-only")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--poll-seconds", type=_poll, default=5.0,
                   help="how often the page checks for new results (default 5; 0 = never)")
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("report", help="write the dashboard as one self-contained offline HTML file")
    add_db_option(p, purpose="opened read-only")
    p.add_argument("--out", required=True, help="HTML file to write (e.g. report.html)")
    p.add_argument("--study", action="append", metavar="NAME",
                   help="only this study (repeatable; default all)")
    p.add_argument("--max-details", type=_max_details, default=500,
                   help="architecture details embedded (front members and baselines first; "
                        "default 500)")
    p.set_defaults(func=_report)


def _dashboard(args) -> int:
    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UsageError(f"--host {host!r}: expected an IP address such as 127.0.0.1 "
                         "or localhost") from None
    store = open_store(args.db, readonly=True)  # validate before importing the web stack
    # Host-header check against DNS rebinding; a wildcard bind accepts any name it is reached by.
    wildcard = host in ("0.0.0.0", "::")
    hosts = ["*"] if wildcard else sorted(set(app.LOOPBACK_HOSTS) | {host, f"[{host}]"})
    server = app.create_app(args.db, poll_seconds=args.poll_seconds, store=store,
                            allowed_hosts=hosts)
    if not loopback:
        print(f"warning: binding {host}: the dashboard is reachable from other machines "
              "(read-only, no authentication)", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard on http://{shown}:{args.port}/  (db {args.db}, read-only; Ctrl-C stops)",
          flush=True)
    uvicorn.run(server, host=host, port=args.port, log_level="warning")
    return 0


def _report(args) -> int:
    out = args.out
    if os.path.isdir(out):
        raise UsageError(f"--out {out}: is a directory; give a file name such as report.html")
    store = open_store(args.db, readonly=True)
    path = page.build_report(store, out, studies=args.study, max_details=args.max_details,
                             db_label=args.db)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, works offline)")
    return 0
