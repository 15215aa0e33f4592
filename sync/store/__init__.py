"""The database side: engine setup, bookkeeping tables, state queries, the tenant lock.

    schema.py       the bookkeeping tables (sync_state, sync_runs, conflicts, tombstones,
                    sync_lease)
    bookkeeping.py  SyncState: one contact's bookkeeping (JSON decoded lazily)
    state.py        StateStore: bulk reads and writes of the bookkeeping
    bulk.py         the driver directly: Positional (an executemany of tuples, SQLite) and
                    driver_rows (a read as tuples)
    checkpoint.py   WAL checkpoints from a thread while a cycle writes (SQLite)
    journal.py      runs, conflicts and tombstones (StateStore inherits them)
    lock.py         TenantLock: one sync at a time per tenant, across processes and hosts
    migrate.py      alembic upgrade / revision checks, configured in code
    local.py        the mapped local table (the application's contacts)
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from sync.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_WAL_AUTOCHECKPOINT_BYTES = 40 << 20
# A file crm-sync creates gets 16 KB pages, not SQLite's 4 KB: a contact's bookkeeping row is
# about 2 KB, and at 4 KB a page holds one or two such rows with much of it left unused. At
# 16 KB a 100k import writes 15% fewer bytes with about a fifth less of SQLite's CPU. A file
# that already holds anything keeps its page size (changing it means a VACUUM).
SQLITE_NEW_PAGE_SIZE = 16384


def _sqlite_wal(cursor: Any) -> None:
    """Switch the file to WAL. The switch takes an exclusive lock and SQLite runs no busy
    handler for it, so processes opening a fresh file together can see "database is locked":
    WAL persists in the file, so look first, and retry within the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL")  # in-memory databases answer "memory"
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _sqlite_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new, empty file
            cursor.execute(f"PRAGMA page_size = {SQLITE_NEW_PAGE_SIZE}")  # before WAL: else fixed
        _sqlite_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint every ~40 MB of WAL rather than SQLite's 1,000 pages (4 MB at 4 KB): an
        # import writes a few hundred MB, and each checkpoint copies and fsyncs (bench.ab: -5%
        # on a 100k first pull). Only this connection's commits checkpoint less often.
        page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
        pages = SQLITE_WAL_AUTOCHECKPOINT_BYTES // max(int(page_size), 512)
        cursor.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


SQLITE_URL_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"


def parse_database_url(url: str | URL) -> URL:
    """CRM_SYNC_DATABASE_URL parsed; a ConfigError naming the setting (the password left out)
    for one that is no URL, or a SQLite URL SQLAlchemy would refuse only when connecting."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("CRM_SYNC_DATABASE_URL: not a database URL (sqlite:///path/to/file.db "
                          "or postgresql+psycopg://user@host/db)") from None
    if parsed.get_backend_name() == "sqlite" and (parsed.host or parsed.username
                                                  or parsed.password or parsed.port):
        # `sqlite://shop.db` (two slashes) makes shop.db a host name, and no file at all
        raise ConfigError(
            f"CRM_SYNC_DATABASE_URL: {parsed.render_as_string(hide_password=True)} is not a "
            f"SQLite file URL: after `sqlite://` comes a host name ({parsed.host or ''!r} "
            f"here), which SQLite has none of; write {SQLITE_URL_FORMS}")
    if parsed.get_backend_name() == "sqlite" and (parsed.database or "").startswith("~"):
        # `sqlite:///~/crm.db`: SQLite itself would look for a folder named `~`
        parsed = parsed.set(database=os.path.expanduser(parsed.database or ""))
    return parsed


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names, as SQLite opens it (relative to the working directory);
    None for another database, an in-memory one or a `file:` URI."""
    parsed = parse_database_url(url)
    database = parsed.database or ""
    if (parsed.get_backend_name() != "sqlite" or database in ("", ":memory:")
            or database.startswith("file:")):
        return None
    return Path(os.path.abspath(database))


def missing_sqlite_file(url: str | URL) -> Path | None:
    """The SQLite file the URL names when it does not exist yet (the first `sync` creates
    it); None when it exists or the URL names no SQLite file."""
    path = sqlite_file(url)
    return path if path is not None and not path.exists() else None


def make_engine(url: str | URL, *, create: bool = True, **kwargs: Any) -> Engine:
    """An Engine tuned for crm-sync.

    SQLite: WAL journal, synchronous=NORMAL, a checkpoint every 40 MB of WAL, a 5 s busy
    timeout on every connection, 16 KB pages in a file it creates, and the database file's
    directory created if missing. With create=False nothing is created or switched: no
    directory, the file opened read-write only if it exists (a missing one fails to connect),
    its journal mode left as it is.
    PostgreSQL: pool_pre_ping, so a connection the server dropped (restart, idle timeout) is
    replaced instead of failing a cycle.
    Extra keyword arguments go to `create_engine`. A URL that is not one, or whose driver is
    not installed, is a ConfigError naming the setting (the password left out).
    """
    parsed = parse_database_url(url)
    try:
        return _engine(parsed, create=create, **kwargs)
    except (ImportError, NoSuchModuleError) as exc:
        raise ConfigError(
            f"CRM_SYNC_DATABASE_URL: no driver for {parsed.drivername!r} in "
            f"{parsed.render_as_string(hide_password=True)} ({exc}); crm-sync supports SQLite "
            "(sqlite:///path/to/file.db) and PostgreSQL (postgresql+psycopg://...)") from None
    except (ArgumentError, ValueError) as exc:  # parsed, but the dialect refuses its values
        raise ConfigError(f"CRM_SYNC_DATABASE_URL: {parsed.render_as_string(hide_password=True)}"
                          f": {driver_message(exc, parsed)}") from None


def driver_message(exc: BaseException, url: str | URL | None = None) -> str:
    """The driver's own first line, without SQLAlchemy's statement and parameters (an error
    of SQLAlchemy's own, whose text may be a bare table name, is prefixed with its kind); the
    URL's password is masked should a driver ever quote it (psycopg's and SQLite's do not)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    line = (text.splitlines() or [type(exc).__name__])[0]
    if orig is None and line != type(exc).__name__:
        line = f"{type(exc).__name__}: {line}"
    password = make_url(url).password if url is not None else None
    return line.replace(str(password), "***") if password else line


def _engine(parsed: URL, *, create: bool = True, **kwargs: Any) -> Engine:
    backend = parsed.get_backend_name()
    # a statement the database refuses is reported without its parameters: they are customers'
    # names and phones, and the error goes on to logs, sync_runs and the terminal
    kwargs.setdefault("hide_parameters", True)
    if backend == "sqlite":
        database = parsed.database or ""
        if (create and database and database != ":memory:"
                and not database.startswith("file:")):
            folder = Path(database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"CRM_SYNC_DATABASE_URL: cannot make the SQLite file's folder "
                                  f"{str(folder)!r}: {exc.strerror or exc}") from None
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(parsed, **kwargs)
        if not create and sqlite_file(parsed) is not None:
            event.listen(engine, "do_connect", _sqlite_existing_only)
        # create=False reads (check, status): the file's journal mode is left as it is
        event.listen(engine, "connect", _sqlite_pragmas if create else _sqlite_busy_timeout)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _sqlite_existing_only(_dialect: Any, _record: Any, cargs: list[Any],
                          cparams: dict[str, Any]) -> None:
    """Open the file as a URI with mode=rw: SQLite then refuses a missing file instead of
    creating an empty one (the engine's URL, shown in messages, stays the user's)."""
    cargs[0] = f"file:{quote(str(cargs[0]))}?mode=rw"
    cparams["uri"] = True


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "SQLITE_URL_FORMS", "driver_message", "is_sqlite",
           "make_engine", "missing_sqlite_file", "parse_database_url", "sqlite_file"]
