"""Alembic environment for the results database; run programmatically by results.store.

The store passes an open connection in ``config.attributes["connection"]``; there is no
alembic.ini and no logging configuration, so this works from an installed package.
"""
from __future__ import annotations

from alembic import context

from results.schema import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # Only our tables: an Optuna storage may share the file (tables without the sfn_ prefix).
    if type_ == "table":
        return name.startswith("sfn_")
    return True


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("results migrations run through results.store.ResultsStore only")
    context.configure(connection=connection, target_metadata=target_metadata,
                      version_table=VERSION_TABLE, include_object=_include_object,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) mode is not supported for the results database")
run_migrations_online()
