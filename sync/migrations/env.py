"""Alembic environment, configured programmatically by `sync.store.migrate` (no alembic.ini).

`migrate.upgrade` passes an open Connection in `config.attributes["connection"]`; the
`sqlalchemy.url` main option is the fallback (e.g. the alembic command line with `-x`-less
configs). Only the bookkeeping tables are considered: an application's own tables in the same
database are never touched, and the version table has its own name so that an application's
own alembic history does not collide with ours.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from sync.store import make_engine
from sync.store.migrate import VERSION_TABLE, include_name
from sync.store.schema import metadata

config = context.config


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_type=True,
        render_as_batch=True,  # SQLite ALTERs need batch mode
        **kwargs,
    )


def _run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run_online(given)
    else:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no connection given and no sqlalchemy.url set")
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                _run_online(connection)
        finally:
            engine.dispose()
