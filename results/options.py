"""The command-line option every command that touches the results database shares: ``--db``.

Declared once here; each command adds it with :func:`add_db_option` and opens the database with
:func:`open_store` (reading: the file must exist and be ours; writing: created if missing).
"""
from __future__ import annotations

import argparse
import os

from search_space.errors import NotFoundError

from .store import ResultsStore

DEFAULT_DB = "runs/results.db"


def add_db_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                  purpose: str = "") -> None:
    """``--db PATH_OR_URL`` (default runs/results.db, shared by studies so proxy results are
    reused across them)."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH_OR_URL",
                        help=f"results database: a SQLite path or any SQLAlchemy URL "
                             f"(default {DEFAULT_DB}){'; ' + purpose if purpose else ''}")


def open_store(db: str, *, readonly: bool) -> ResultsStore:
    """Open ``--db``. Reading needs an existing database (one line naming it otherwise);
    writing creates a SQLite file and its directory when missing."""
    if readonly and "://" not in db and not os.path.exists(db):
        raise NotFoundError(f"--db {db}: no such results database (run a search first, or pass "
                            "--db PATH)")
    return ResultsStore(db, readonly=readonly)
