"""CLI: ``dashboard`` (serve the results web page + JSON API) and ``report`` (offline HTML).

The web stack (FastAPI, uvicorn, plotly) loads on first use (``lazy_import``): the database is
opened and every option checked before any of it is imported.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys

from search_space.cli_types import number_type
from search_space.errors import UsageError
from search_space.io import check_writable_file
from search_space.lazy import lazy_import

from ..options import add_db_option, open_store

app = lazy_import("results.dashboard.app")
page = lazy_import("results.dashboard.page")
uvicorn = lazy_import("uvicorn")

DEFAULT_PORT = 8050
WILDCARD_BINDS = ("0.0.0.0", "::")
# A Host-header name: a DNS name or IP literal, optionally "*.domain" (Starlette's pattern).
HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_.:\[\]-]{1,253}|\*")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the results dashboard (web page + JSON API)")
    add_db_option(p, purpose="opened read-only")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number_type(int, 1, 65535), default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests for this Host name (repeatable); the Host check "
                        "against DNS rebinding stays on with any --host: loopback names, the "
                        "bound address and, for 0.0.0.0 / ::, this machine's names and "
                        "addresses are allowed ('*' turns the check off)")
    p.add_argument("--poll-seconds", default=5.0,
                   type=number_type(float, 1, 3600, also=(0,),
                                    allowed="0 (no polling) or 1..3600 seconds"),
                   help="how often the page checks for new results (default 5; 0 = never)")
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("report", help="write the dashboard as one self-contained offline HTML file")
    add_db_option(p, purpose="opened read-only")
    p.add_argument("--out", required=True, help="HTML file to write (e.g. report.html)")
    p.add_argument("--study", action="append", metavar="NAME",
                   help="only this study (repeatable; default all)")
    p.add_argument("--max-details", type=number_type(int, 0, 100_000), default=500,
                   help="architecture details embedded (front members and baselines first; "
                        "default 500)")
    p.set_defaults(func=_report)


def machine_names() -> set[str]:
    """This machine's host name, FQDN and the addresses they resolve to (what a browser on
    another machine puts in the Host header to reach a wildcard bind)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            infos = socket.getaddrinfo(name, None)
        except OSError:  # a name that does not resolve here
            continue
        names |= {str(i[4][0]) for i in infos}
    return {n for n in names if n}


def check_host_names(extra: list[str]) -> None:
    for name in extra:
        if not HOST_NAME.fullmatch(name):
            raise UsageError(f"--allowed-host {name!r}: expected a host name or address "
                             "(e.g. myserver.lan, 192.168.1.5, *.example.org)")


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The Host-header names the dashboard answers to (DNS-rebinding protection, kept on with
    a wildcard bind: a page on evil.example that rebinds its name to this machine sends
    ``Host: evil.example`` and is refused)."""
    check_host_names(extra)
    names = set(app.LOOPBACK_HOSTS) | set(extra)
    names |= machine_names() if host in WILDCARD_BINDS else {host}
    names |= {f"[{n}]" for n in names if ":" in n and not n.startswith("[")}
    return ["*"] if "*" in names else sorted(names)


def _dashboard(args) -> int:
    host = args.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UsageError(f"--host {host!r}: expected an IP address such as 127.0.0.1 "
                         "or localhost") from None
    check_host_names(args.allowed_host)
    store = open_store(args.db, readonly=True)  # validate before importing the web stack
    hosts = allowed_hosts(host, args.allowed_host)
    server = app.create_app(args.db, poll_seconds=args.poll_seconds, store=store,
                            allowed_hosts=hosts)
    if not loopback:
        print(f"warning: binding {host}: the dashboard is reachable from other machines "
              "(read-only, no authentication)", file=sys.stderr)
    if hosts == ["*"]:
        print("warning: --allowed-host '*': any Host header is answered (no protection "
              "against DNS rebinding)", file=sys.stderr)
    elif not loopback:
        print(f"note: answering only Host names {', '.join(hosts)} (add one with "
              "--allowed-host NAME)", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard on http://{shown}:{args.port}/  (db {args.db}, read-only; Ctrl-C stops)",
          flush=True)
    uvicorn.run(server, host=host, port=args.port, log_level="warning")
    return 0


def _report(args) -> int:
    out = args.out
    if os.path.isdir(out):
        raise UsageError(f"--out {out}: is a directory; give a file name such as report.html")
    if not out.lower().endswith((".html", ".htm")):   # r.pdf would be HTML in a .pdf
        raise UsageError(f"--out {out}: the report is one HTML page; give a .html file name")
    check_writable_file(out, "--out")
    store = open_store(args.db, readonly=True)
    path = page.build_report(store, out, studies=args.study, max_details=args.max_details,
                             db_label=args.db)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, works offline)")
    return 0
