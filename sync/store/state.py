"""Per-contact bookkeeping (`sync_state`): bulk loads and upserts, one chunk at a time.

The engine works in chunks of ~500 contacts: one `IN` query to load a chunk, one executemany
upsert to save it, inside the same transaction as the chunk's local-table writes (write
methods take the open `Connection`; `store.begin()` gives one). One state is a SyncState
(`bookkeeping.py`).

Runs, conflicts and tombstones: see `journal.py` (StateStore inherits them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    inspect,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from sync.errors import ConfigError, RowsRefused
from sync.store import pgcopy
from sync.store.bookkeeping import PUBLIC_FIELDS, SyncState
from sync.store.bulk import Positional, driver_rows
from sync.store.journal import Journal
from sync.store.schema import STATUSES, sync_state, utcnow

__all__ = ["AGREED_STATUSES", "FRESH_COLUMNS", "STATUSES", "AgreedRows", "StateStore",
           "SyncState"]

CHUNK = 500  # keys per IN query / rows per executemany batch

# save_fresh's rows
FRESH_COLUMNS = ("key", "ref_id", "public_id", "status", "base", "base_hash", "local_hash",
                 "remote", "remote_hash", "remote_updated_ms")


AGREED_STATUSES = ("synced", "read_only")


@dataclass(frozen=True, slots=True)
class AgreedRows:
    """What a quick cycle needs to know of the local side before listing the CRM.

    `agreed_as(digest)`: (public_id, key) of the row that still holds its agreed base and whose
    CRM copy was listed as JSON with this digest: a listed contact with that digest is the very
    JSON agreed, with its row unchanged since, so it is skipped undecoded. A digest two rows
    hold (stale bookkeeping) is left out: parsed. (Two dicts of strings rather than one of
    tuples: 100k tuples made the garbage collector walk them, up to 0.1 s per pass.)
    `unclean`: the keys of every other row. `orphaned`: how many bookkeeping rows had no local
    row (an app deleted it): 0 spares the search for them (a row deleted after this pass is the
    next cycle's)."""

    keys: dict[str, str]  # remote_hash -> key
    public_ids: dict[str, str]  # remote_hash -> public_id
    unclean: list[str]
    orphaned: int = 0

    def agreed_as(self, digest: str) -> tuple[str, str] | None:
        key = self.keys.get(digest)
        return None if key is None else (self.public_ids[digest], key)


# agreed_rows' columns: the digest of a row still as agreed, the key, the CRM id, has bookkeeping
_DIGEST_KEY, _DIGEST_PUBLIC_ID, _STATED = itemgetter(0, 1), itemgetter(0, 2), itemgetter(3)


def _upserting(stmt: Any, names: Iterable[str]) -> Any:
    """`stmt` (an SQLite or PostgreSQL INSERT into sync_state) updating a key's row when it
    exists: every column of `names` but the key's."""
    return stmt.on_conflict_do_update(
        index_elements=["tenant", "key"],
        set_={name: stmt.excluded[name] for name in names if name not in ("tenant", "key")})


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# In error: status `error`, or an error that kept the status it was in (a lookup, a delete or a
# write failed for this contact only, and is tried again next cycle as the status says). Two
# conditions, each answered by an index (the second by a partial one): OR-ed, they read every
# row, 85 ms a cycle at 100k on SQLite.
_ERROR_STATUS = sync_state.c.status == "error"
_KEPT_ERROR = and_(sync_state.c.last_error.is_not(None),
                   sync_state.c.status.in_(("synced", "pending_create", "pushing")))


class StateStore(Journal):
    """Bookkeeping queries for one tenant. Reads open their own connection unless given one;
    writes take the caller's open Connection so they commit with the local-table writes."""

    def __init__(self, engine: Engine, tenant: str) -> None:
        if not tenant or len(tenant) > 64:
            raise ValueError(f"tenant must be 1 to 64 characters: {tenant!r}")
        self.engine, self.tenant = engine, tenant
        self._cols = [sync_state.c[name] for name in PUBLIC_FIELDS]
        # save()'s upsert per dialect and row shape, with its compiled form where the driver
        # takes one (Positional; None: the ordinary executemany)
        self._upserts: dict[tuple[str, tuple[str, ...]], tuple[Any, Positional | None]] = {}
        self._staged: pgcopy.Staged | None = None  # save_fresh's, through COPY
        self._blobs = False  # agreed_rows met a BLOB in the local table
        # a first import set sync_state's secondary indexes aside (deferred_indexes.py)
        self.indexes_aside = False

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: everything written through the yielded Connection commits together.

        On SQLite it takes the write lock at once (BEGIN IMMEDIATE), so the engine's
        read-check-write of a local row cannot interleave with an app's write. A value the
        database refuses (a constraint, a type's limits) is RowsRefused, after the rollback.
        """
        dbapi = self.engine.dialect.loaded_dbapi  # the paths that use the driver directly
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        except (DataError, IntegrityError, dbapi.DataError, dbapi.IntegrityError) as exc:
            # rolled back: the caller may go row by row
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            first = (str(orig).strip() or type(orig).__name__).splitlines()[0]
            raise RowsRefused(first) from exc

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as own:
                yield own

    def _select(self) -> Any:
        return select(*self._cols).where(sync_state.c.tenant == self.tenant)

    def load(self, keys: Collection[str], *, conn: Connection | None = None
             ) -> dict[str, SyncState]:
        """The states of these keys (missing keys are simply absent)."""
        return self._load_by(sync_state.c.key, keys, conn, lambda s: s.key)

    def load_by_public_ids(self, ids: Collection[str], *, conn: Connection | None = None
                           ) -> dict[str, SyncState]:
        """The states of these CRM ids, keyed by public_id."""
        return self._load_by(sync_state.c.public_id, ids, conn, lambda s: s.public_id)

    def _load_by(self, column: Any, values: Collection[str], conn: Connection | None,
                 key_of: Any) -> dict[str, SyncState]:
        wanted = list(dict.fromkeys(values))
        out: dict[str, SyncState] = {}
        if not wanted:
            return out
        with self._reading(conn) as c:
            for part in _chunks(wanted):
                for row in c.execute(self._select().where(column.in_(part))):
                    state = SyncState.from_row(row)
                    out[key_of(state)] = state
        return out

    def iter_all(self, chunk: int = 1000) -> Iterator[list[SyncState]]:
        """Every state of the tenant, in key order, `chunk` at a time (keyset pagination)."""
        after: str | None = None
        while True:
            query = self._select().order_by(sync_state.c.key).limit(chunk)
            if after is not None:
                query = query.where(sync_state.c.key > after)
            with self.engine.connect() as conn:
                batch = [SyncState.from_row(row) for row in conn.execute(query)]
            if not batch:
                return
            yield batch
            if len(batch) < chunk:
                return
            after = batch[-1].key

    def missing_from(self, key_column: Any) -> list[SyncState]:
        """The states whose key `key_column` (the local table's key) no longer holds: rows an
        app deleted. One anti-join instead of a walk of both tables."""
        gone = ~exists().where(key_column == sync_state.c.key)
        with self.engine.connect() as conn:
            return [SyncState.from_row(row) for row in conn.execute(self._select().where(gone))]

    def agreed_rows(self, key_column: Any, image: Any, *, quick_image: Any = None
                    ) -> AgreedRows:
        """One pass over the local table joined to the bookkeeping, fingerprints compared by
        the database (`image`: the local table's fingerprint expression): which rows still
        hold what was last agreed, and which do not (edited, new, pending, in error).

        `quick_image`: the same fingerprint for less work, for tables that hold no BLOB
        (`LocalTable.fingerprint(blobs=False)`), tried first. On a BLOB it fails, and the pass
        runs again with `image`, as it does from then on for this store."""
        if quick_image is not None and not self._blobs:
            try:
                return self._agreed_rows(key_column, quick_image)
            except DBAPIError as exc:
                if "cannot hold BLOB" not in str(exc.orig):
                    raise
                self._blobs = True
        return self._agreed_rows(key_column, image)

    def _agreed_rows(self, key_column: Any, image: Any) -> AgreedRows:
        c = sync_state.c
        # Said by the database, which keeps the per-row Python to a minimum (100k rows per
        # cycle): the CRM digest of a row still as agreed (NULL for every other row), and
        # whether the row has bookkeeping at all.
        agreed = and_(c.status.in_(AGREED_STATUSES), c.local_hash == image, c.public_id != "",
                      c.remote_hash != "")
        query = (select(case((agreed, c.remote_hash)), key_column, c.public_id,
                        case((c.status.is_(None), 0), else_=1))
                 .select_from(key_column.table.outerjoin(
                     sync_state, and_(c.tenant == self.tenant, c.key == key_column))))
        with self.engine.connect() as conn:
            states = conn.execute(select(func.count()).where(c.tenant == self.tenant)).scalar()
            rows = driver_rows(conn, query)
        if not rows:
            return AgreedRows({}, {}, [], int(states or 0))
        # In C: dict() of itemgetter pairs, not a Python loop over the rows (nor zip(*rows),
        # which took as long as both dicts at 100k rows).
        keys = dict(map(_DIGEST_KEY, rows))
        by_digest = dict(map(_DIGEST_PUBLIC_ID, rows))
        keys.pop(None, None)
        by_digest.pop(None, None)
        unclean = [row[1] for row in rows if row[0] is None]
        if len(keys) < len(rows) - len(unclean):  # a digest two rows hold: parsed
            for digest, n in Counter(row[0] for row in rows if row[0] is not None).items():
                if n > 1:
                    del keys[digest], by_digest[digest]
        return AgreedRows(keys, by_digest, unclean, int(states or 0) - sum(map(_STATED, rows)))

    def keys_by_status(self, status: str) -> list[str]:
        query = (select(sync_state.c.key)
                 .where(sync_state.c.tenant == self.tenant, sync_state.c.status == status)
                 .order_by(sync_state.c.key))
        with self.engine.connect() as conn:
            return list(conn.scalars(query))

    def is_empty(self) -> bool:
        """No bookkeeping for this tenant yet (a first import)."""
        with self.engine.connect() as conn:
            return not conn.execute(select(exists().where(
                sync_state.c.tenant == self.tenant))).scalar()

    def refuse_another_tenants_table(self, key: Column[Any]) -> None:
        """For a tenant with no bookkeeping yet: ConfigError if another tenant's bookkeeping
        tracks rows of the local table (`key`: its key column). Syncing it would merge two
        CRMs' contacts into one table and push each to the other (or, under a renamed tenant,
        take every row for new and every note for unsent)."""
        query = (select(sync_state.c.tenant, func.count())
                 .select_from(sync_state.join(key.table,
                                              sync_state.c.key == cast(key, String)))
                 .where(sync_state.c.tenant != self.tenant)
                 .group_by(sync_state.c.tenant).order_by(func.count().desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is not None:
            raise ConfigError(
                f"the table {key.table.name!r} holds {row[1]} rows that tenant {row[0]!r} "
                f"syncs, and tenant {self.tenant!r} has none yet: if the tenant was renamed, "
                f"set CRM_SYNC_TENANT={row[0]}; a second CRM needs a table of its own (the "
                "mapping's `table:`) and a notes table of its own")

    def refuse_new_table(self, table: str) -> None:
        """If the local table does not exist yet: ConfigError if this tenant's bookkeeping
        tracks contacts. Those rows must be in another table or database (a typo in the
        mapping's `table:` or in CRM_SYNC_DATABASE_URL), and a new, empty table would look
        like an app that deleted every row, to be deleted in the CRM."""
        inspector = inspect(self.engine)
        if inspector.has_table(table) or not inspector.has_table(sync_state.name):
            return
        known = sum(self.counts().values())
        if known:
            raise ConfigError(
                f"the table {table!r} does not exist, but tenant {self.tenant!r} syncs {known} "
                "contacts through a table: check the mapping's `table:` and "
                "CRM_SYNC_DATABASE_URL. To fill a new table from the CRM instead, remove this "
                f"tenant's bookkeeping first (DELETE FROM sync_state WHERE tenant = "
                f"'{self.tenant}').")

    def counts(self) -> dict[str, int]:
        """Contacts per status; every status present, zero when none."""
        query = (select(sync_state.c.status, func.count())
                 .where(sync_state.c.tenant == self.tenant).group_by(sync_state.c.status))
        out = dict.fromkeys(STATUSES, 0)
        with self.engine.connect() as conn:
            out.update({status: int(n) for status, n in conn.execute(query)})
        return out

    def errors(self, limit: int = 100) -> list[dict[str, Any]]:
        """Contacts in error, most recently updated first, with their last error."""
        c = sync_state.c
        cols = (c.key, c.ref_id, c.public_id, c.status, c.last_error, c.attempts,
                c.pending_since, c.updated_at)
        both = union_all(*(select(*cols).where(c.tenant == self.tenant, which)
                           for which in (_ERROR_STATUS, _KEPT_ERROR))).subquery()
        query = select(both).order_by(both.c.updated_at.desc(), both.c.key).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def read_only_edits(self, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """Read-only contacts whose local edits are not sent (their last error says which
        fields): how many, and the most recently updated."""
        c = sync_state.c
        which = and_(c.tenant == self.tenant, c.status == "read_only", c.last_error.is_not(None))
        query = (select(c.key, c.public_id, c.last_error, c.updated_at).where(which)
                 .order_by(c.updated_at.desc(), c.key).limit(limit))
        with self.engine.connect() as conn:
            count = int(conn.execute(select(func.count()).where(which)).scalar_one())
            return count, [dict(row._mapping) for row in conn.execute(query)]

    def count_errors(self) -> int:
        """How many contacts `errors` lists, without the limit."""
        with self.engine.connect() as conn:
            return sum(int(conn.execute(select(func.count()).where(
                sync_state.c.tenant == self.tenant, which)).scalar_one())
                for which in (_ERROR_STATUS, _KEPT_ERROR))

    def save(self, conn: Connection, states: Iterable[SyncState]) -> None:
        """Insert or update these states (the last one wins when a key repeats)."""
        now = utcnow()
        rows = list({s.key: s.as_row(self.tenant, now) for s in states}.values())
        if not rows:
            return
        dialect = conn.dialect.name
        if dialect not in ("sqlite", "postgresql"):  # update what exists, insert the rest
            self._save_generic(conn, rows)
            return
        stmt, positional = self._upsert(conn, tuple(rows[0]))
        for part in _chunks(rows):
            if positional is not None:
                positional.execute(conn, part)
            else:
                conn.execute(stmt, list(part))

    def save_fresh(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """`save` for states given as tuples of FRESH_COLUMNS, of distinct keys, their JSON
        texts made (codec), with no error, attempt or pending time (a first import's): no
        SyncState is made for them."""
        if not rows:
            return
        if odd := {r[3] for r in rows} - set(STATUSES):
            raise ValueError(f"status {sorted(odd)} is not one of {STATUSES}")
        shared = {"tenant": self.tenant, "last_error": None, "attempts": 0,
                  "pending_since": None, "updated_at": utcnow()}

        def dicts(part: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
            return [{**dict(zip(FRESH_COLUMNS, r, strict=True)), **shared} for r in part]

        if conn.dialect.name not in ("sqlite", "postgresql"):
            self._save_generic(conn, dicts(rows))
            return
        names = (*FRESH_COLUMNS, *shared)
        if len(rows) >= pgcopy.MIN_ROWS and pgcopy.usable(conn):
            if self._staged is None:
                self._staged = pgcopy.Staged(sync_state, FRESH_COLUMNS, conn.dialect,
                                             lambda stmt: _upserting(stmt, names),
                                             extra=tuple(shared))
            self._staged.execute_tuples(conn, rows, shared)
            return
        stmt, positional = self._upsert(conn, names)
        for part in _chunks(rows):
            if positional is not None:
                positional.execute_tuples(conn, FRESH_COLUMNS, part, shared)
            else:
                conn.execute(stmt, dicts(part))

    def _upsert(self, conn: Connection, names: tuple[str, ...]
                ) -> tuple[Any, Positional | None]:
        """The upsert of rows of these columns on this connection's dialect (SQLite or
        PostgreSQL), and its compiled form where the driver takes one."""
        dialect = conn.dialect.name
        if (dialect, names) not in self._upserts:
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            stmt = _upserting(insert(sync_state), names)
            self._upserts[dialect, names] = stmt, Positional.of(stmt, conn.dialect, names)
        return self._upserts[dialect, names]

    def _save_generic(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        c = sync_state.c
        update = (sync_state.update()
                  .where(c.tenant == bindparam("b_tenant"), c.key == bindparam("b_key"))
                  .values({name: bindparam(name) for name in rows[0]
                           if name not in ("tenant", "key")}))
        for part in _chunks(rows):
            existing = set(conn.scalars(select(c.key).where(
                c.tenant == self.tenant, c.key.in_([r["key"] for r in part]))))
            old = [{**r, "b_tenant": r["tenant"], "b_key": r["key"]}
                   for r in part if r["key"] in existing]
            new = [r for r in part if r["key"] not in existing]
            if old:
                conn.execute(update, old)
            if new:
                conn.execute(sync_state.insert(), new)

    def delete(self, conn: Connection, keys: Collection[str]) -> int:
        """Forget these keys; returns how many states were deleted."""
        deleted = 0
        for part in _chunks(list(dict.fromkeys(keys))):
            result = conn.execute(sync_state.delete().where(
                sync_state.c.tenant == self.tenant, sync_state.c.key.in_(part)))
            deleted += result.rowcount
        return deleted
