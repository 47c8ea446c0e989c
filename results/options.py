"""The command-line option every command that touches the results database shares: ``--db``.

Declared once here; each command adds it with :func:`add_db_option` and opens the database with
:func:`open_store` (reading: the file must exist and be ours; writing: created if missing, unless
``create=False``). The checks themselves live in :class:`results.store.ResultsStore`, once.
"""
from __future__ import annotations

import argparse

from .store import DEFAULT_DB, ResultsStore, check_database

__all__ = ["DEFAULT_DB", "add_db_option", "check_db", "open_store"]


def add_db_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                  purpose: str = "") -> None:
    """``--db PATH_OR_URL`` (default runs/results.db, shared by studies so proxy results are
    reused across them)."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH_OR_URL",
                        help=f"results database: a SQLite path or any SQLAlchemy URL "
                             f"(default {DEFAULT_DB}){'; ' + purpose if purpose else ''}")


def open_store(db: str, *, readonly: bool, create: bool | None = None) -> ResultsStore:
    """Open ``--db``. Reading needs an existing results database (a NotFoundError naming it
    otherwise); writing creates a SQLite file and its directory when missing (``create``
    defaults to ``not readonly``; ``create=False`` opens an existing database for writing).
    A file that is not a results database is a UsageError and is left untouched."""
    return ResultsStore(db, readonly=readonly, create=create)


def check_db(db: str, *, readonly: bool, create: bool | None = None) -> None:
    """What :func:`open_store` would refuse, checked with nothing opened or created: a bad URL,
    a driver that is not installed, a missing, foreign or read-only file, a directory it cannot
    be created in. Commands call it with their other checks, before any heavy work."""
    check_database(db, readonly=readonly, create=create)
