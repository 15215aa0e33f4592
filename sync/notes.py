"""The notes outbox: rows apps insert into the local notes table reach CRM agents via add-note.

At most once. The API offers no way to read notes back, so after a lost answer nothing can tell
whether a note arrived. Each batch is therefore marked `in_flight` and COMMITTED before the call;
the answer then makes it `sent`, `pending` again (NotSent or 429: it certainly never arrived),
`failed` (refused) or `unknown` (it may or may not have arrived). Rows a crash left `in_flight`
become `unknown` at the next cycle's `recover()`. `unknown` rows are never re-sent on their own:
only `crm-sync notes resend`, after someone has looked in the CRM, puts them back to `pending`.

Bookkeeping lives in `note_outbox` (tenant, notes table, note id); a local note without a row
there is new. A notes table another tenant sends from is refused (`refuse_shared`): its notes
would reach two CRMs, each to whichever of its contacts has the note's refId.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from sync import errors
from sync.api.adapter import NoteIn
from sync.api.client import OmiClient
from sync.errors import ApiError, AuthError, NotSent, RateLimited, RemoteError
from sync.mapping import MappingSpec
from sync.record import norm_phone
from sync.store.local import LocalTable
from sync.store.schema import NOTE_STATUSES, note_outbox, sync_state, utcnow

__all__ = ["NOTE_COLUMNS", "NOTE_STATUSES", "NotesOutbox", "build_notes_table"]

log = structlog.get_logger("crm_sync.notes")
NOTE_COLUMNS = ("id", "ref_id", "phone", "content", "note_by")  # what push reads
_HAS_DIGIT = re.compile(r"\d")
_o = note_outbox.c


def build_notes_table(name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """The local notes table. SQLite gets AUTOINCREMENT: an id is never reused after the newest
    row is deleted (a reused id would look already sent)."""
    return sa.Table(
        name, metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("ref_id", sa.String(255), nullable=True),  # the contact's key
        sa.Column("phone", sa.Text, nullable=True),  # or the customer's phone itself
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("note_by", sa.Text, nullable=True),  # an agent's email
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True,
                  server_default=sa.func.now()),
        sqlite_autoincrement=True,
    )


class NotesOutbox:
    """One tenant's notes outbox. Inert (no table, nothing sent) when `spec.notes_table` is
    None. `recover()` and `push()` must run under the tenant lock, like the rest of a cycle."""

    def __init__(self, db: Engine, tenant: str, spec: MappingSpec, local: LocalTable) -> None:
        self.db, self.tenant, self.spec, self.local = db, tenant, spec, local
        self.table = build_notes_table(spec.notes_table) if spec.notes_table else None
        # this tenant's outbox rows of this notes table, and those written before rows named
        # their table (migration 0007), until ensure_table names them: a `status` or `notes`
        # command run before any cycle reads them as this table's
        self._mine = sa.and_(_o.tenant == tenant,
                             _o.notes_table.in_(sorted({spec.notes_table or "", ""})))
        phone_cols = [f.column for f in spec.fields if f.field == "phone"]
        self.phone_column: str | None = phone_cols[0] if phone_cols else None

    @property
    def enabled(self) -> bool:
        return self.table is not None

    def ensure_table(self) -> None:
        """Create the notes table when absent; otherwise check it has the columns push reads."""
        if self.table is None:
            return
        self._adopt_unnamed()
        insp = sa.inspect(self.db)
        if not insp.has_table(self.table.name):
            self.table.metadata.create_all(self.db, checkfirst=True)
            return
        have = {c["name"] for c in insp.get_columns(self.table.name)}
        if missing := [c for c in NOTE_COLUMNS if c not in have]:
            raise errors.ConfigError(f"the notes table {self.table.name!r} lacks column(s) "
                              f"{', '.join(missing)}; it needs {', '.join(NOTE_COLUMNS)} "
                              "(or set notes_table: null in the mapping)")
        if self.db.dialect.name == "sqlite":
            with self.db.connect() as conn:
                ddl = conn.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = :n"),
                                  {"n": self.table.name}) or ""
            if "AUTOINCREMENT" not in ddl.upper():  # a reused id looks already handled
                log.warning("notes.ids_may_be_reused", table=self.table.name)

    def _adopt_unnamed(self) -> None:
        """Outbox rows written before they named their notes table (migration 0007) are this
        tenant's notes table's: the one it had then, as far as can be known."""
        assert self.table is not None
        with self.db.begin() as conn:
            n = conn.execute(note_outbox.update().where(
                _o.tenant == self.tenant, _o.notes_table == "").values(
                notes_table=self.table.name)).rowcount
        if n:
            log.info("notes.outbox_rows_named", notes=n, notes_table=self.table.name,
                     tenant=self.tenant)

    def refuse_shared(self) -> None:
        """ConfigError if another tenant sends notes from this tenant's notes table: each
        note would reach both CRMs (a second tenant's mapping copied from the first, with
        only `table:` changed)."""
        if self.table is None:
            return
        query = (sa.select(_o.tenant).where(_o.notes_table == self.table.name,
                                            _o.tenant != self.tenant).limit(1))
        with self.db.connect() as conn:
            other = conn.scalar(query)
        if other is not None:
            raise errors.ConfigError(
                f"the notes table {self.table.name!r} holds the notes tenant {other!r} sends "
                f"to its CRM: tenant {self.tenant!r} needs a notes table of its own (the "
                "mapping's notes_table), else each note reaches both CRMs; if the tenant was "
                f"renamed, set CRM_SYNC_TENANT={other}")

    def recover(self) -> int:
        """Rows left `in_flight` (a crash between send and record) become `unknown`."""
        if self.table is None:
            return 0
        with self.db.begin() as conn:
            n = conn.execute(note_outbox.update().where(
                self._mine, _o.status == "in_flight").values(
                status="unknown", updated_at=utcnow(),
                last_error="interrupted between sending and recording the answer: it may or "
                           "may not have reached the CRM")).rowcount
        if n:
            log.warning("notes.recovered_unknown", notes=n, tenant=self.tenant)
        return int(n)

    async def push(self, client: OmiClient, *, batch_size: int = 100,
                   dry_run: bool = False) -> Counter[str]:
        """Send new and pending notes in id order, batch by batch. Counts: notes_sent,
        notes_failed, notes_unknown, notes_deferred (back to pending), notes_waiting (their
        contact's create is not confirmed yet); a dry run counts notes_to_send and
        notes_to_fail instead and writes nothing."""
        counts: Counter[str] = Counter()
        if self.table is None:
            return counts
        last = 0
        while True:
            with self.db.begin() as conn:
                rows = self._candidates(conn, last, max(1, batch_size))
                if not rows:
                    return counts
                last = int(rows[-1]["id"])
                good, bad = self._resolve(conn, rows)
                if waiting := len(rows) - len(good) - len(bad):
                    counts["notes_waiting"] += waiting
                if dry_run:
                    counts["notes_to_send"] += len(good)
                    counts["notes_to_fail"] += len(bad)
                    continue
                self._take(conn, rows, good, bad)
            counts["notes_failed"] += len(bad)  # committed above, before the call
            if good and not await self._send(client, good, counts):
                return counts  # the server is in trouble: the rest waits for the next cycle

    async def _send(self, client: OmiClient, good: dict[int, NoteIn],
                    counts: Counter[str]) -> bool:
        ids = list(good)
        try:
            await client.add_notes(list(good.values()))
        except (NotSent, RateLimited, AuthError) as exc:  # refused before anything happened
            self._settle(ids, "pending", _err(exc))
            counts["notes_deferred"] += len(ids)
            if isinstance(exc, AuthError):
                raise  # a refused key stops the cycle
            return False
        except RemoteError as exc:  # the API refused the batch
            self._settle(ids, "failed", _err(exc))
            counts["notes_failed"] += len(ids)
            return True
        except ApiError as exc:  # timeout, 5xx, broken answer: it may have arrived
            self._settle(ids, "unknown", _err(exc))
            counts["notes_unknown"] += len(ids)
            return False
        except BaseException as exc:  # cancelled or a bug mid-call: same doubt, then go on up
            self._settle(ids, "unknown", _err(exc))
            raise
        self._settle(ids, "sent", None)
        counts["notes_sent"] += len(ids)
        return True

    def _candidates(self, conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
        table = self._joined()
        n = table.left.c
        query = (sa.select(*(n[c] for c in NOTE_COLUMNS), _o.status).select_from(table)
                 .where(n.id > after, sa.or_(_o.note_id.is_(None), _o.status == "pending"))
                 .order_by(n.id).limit(limit))
        return [dict(r) for r in conn.execute(query).mappings()]

    def _joined(self) -> sa.Join:
        """The local notes with their outbox rows (none: never looked at)."""
        assert self.table is not None
        return self.table.outerjoin(note_outbox, sa.and_(self._mine,
                                                         _o.note_id == self.table.c.id))

    def _resolve(self, conn: Connection, rows: Sequence[dict[str, Any]]
                 ) -> tuple[dict[int, NoteIn], dict[int, str]]:
        refs = {str(r["ref_id"]).strip() for r in rows
                if _blank(r["phone"]) and not _blank(r["ref_id"])}
        phones = self._contact_phones(conn, refs)
        # a contact whose add-more is not confirmed yet may not be in the CRM: its notes wait
        waiting = set(conn.scalars(sa.select(sync_state.c.key).where(
            sync_state.c.tenant == self.tenant, sync_state.c.status == "pending_create",
            sync_state.c.key.in_(sorted(refs))))) if refs else set()
        good: dict[int, NoteIn] = {}
        bad: dict[int, str] = {}  # note id -> why
        for r in rows:
            note_id = int(r["id"])
            phone, why = self._phone_of(r, phones)
            if _blank(r["phone"]) and str(r["ref_id"]).strip() in waiting:
                continue
            if _blank(r["content"]):
                bad[note_id] = "empty content"
            elif phone is None:
                bad[note_id] = why or "no phone"
            else:
                by = None if _blank(r["note_by"]) else str(r["note_by"]).strip()
                good[note_id] = NoteIn(phone=phone, content=str(r["content"]), note_by=by)
        return good, bad

    def _phone_of(self, row: dict[str, Any], phones: dict[str, Any]
                  ) -> tuple[str | None, str | None]:
        if not _blank(row["phone"]):
            raw, source = row["phone"], "phone"
        elif _blank(row["ref_id"]):
            return None, "neither phone nor ref_id is given"
        else:
            ref = str(row["ref_id"]).strip()
            if self.phone_column is None:
                return None, (f"ref_id {ref!r}: the mapping maps no column to the `phone` "
                              "field, so a contact's phone cannot be looked up")
            if ref not in phones:
                return None, f"ref_id {ref!r}: no such contact in table {self.spec.table!r}"
            raw, source = phones[ref], f"ref_id {ref!r}: the contact's phone"
            if _blank(raw):
                return None, f"ref_id {ref!r}: the contact has no phone"
        phone = norm_phone(raw)
        if phone is None or not _HAS_DIGIT.search(phone):
            return None, f"{source} {str(raw)!r} is not a phone number"
        return phone, None

    def _contact_phones(self, conn: Connection, refs: Collection[str]) -> dict[str, Any]:
        if not refs or self.phone_column is None:
            return {}
        query = sa.select(self.local.key, self.local.table.c[self.phone_column]).where(
            self.local.key.in_(sorted(refs)))
        return {str(key): phone for key, phone in conn.execute(query)}

    def _take(self, conn: Connection, rows: Sequence[dict[str, Any]], good: dict[int, NoteIn],
              bad: dict[int, str]) -> None:
        """Record the batch: failures as failed, the rest in_flight (committed by the caller
        before the call). A row taken meanwhile by another push aborts the transaction."""
        now = utcnow()
        known = {int(r["id"]) for r in rows if r["status"] is not None}
        table = self.table.name if self.table is not None else ""
        fresh = [{"tenant": self.tenant, "notes_table": table, "note_id": i, "created_at": now,
                  "updated_at": now, "status": "in_flight", "phone": good[i].phone,
                  "attempts": 1, "last_error": None} for i in good if i not in known]
        fresh += [{"tenant": self.tenant, "notes_table": table, "note_id": i, "created_at": now,
                   "updated_at": now, "status": "failed", "phone": None, "attempts": 0,
                   "last_error": why} for i, why in bad.items() if i not in known]
        if fresh:
            conn.execute(note_outbox.insert(), fresh)  # the primary key forbids a double take
        again = [i for i in good if i in known]
        refused = [i for i in bad if i in known]
        for ids, values in (
                (again, {"status": "in_flight", "attempts": _o.attempts + 1, "last_error": None,
                         "phone": _by_id({i: good[i].phone for i in again})}),
                (refused, {"status": "failed",
                           "last_error": _by_id({i: bad[i] for i in refused})})):
            if not ids:
                continue
            done = conn.execute(note_outbox.update().where(
                self._mine, _o.note_id.in_(ids), _o.status == "pending")
                .values(updated_at=now, **values)).rowcount
            if done != len(ids):
                raise errors.StoreError("notes outbox: rows changed under this push (another push "
                                 "for the same tenant?); nothing of this batch was sent")

    def _settle(self, ids: list[int], status: str, error: str | None) -> None:
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now, "last_error": error,
                                  **({"sent_at": now} if status == "sent" else {})}
        with self.db.begin() as conn:
            conn.execute(note_outbox.update().where(
                self._mine, _o.note_id.in_(ids), _o.status == "in_flight")
                .values(values))
        log.info("notes.batch", status=status, notes=len(ids), tenant=self.tenant, error=error)

    # --- status and the operator's command ---------------------------------------------------

    def counts(self) -> dict[str, int]:
        """pending (including notes never looked at), in_flight, sent, failed, unknown."""
        out = dict.fromkeys(NOTE_STATUSES, 0)
        query = (sa.select(_o.status, sa.func.count()).where(self._mine)
                 .group_by(_o.status))
        with self.db.connect() as conn:
            out.update({str(s): int(n) for s, n in conn.execute(query)})
            if self.table is not None and sa.inspect(conn).has_table(self.table.name):
                out["pending"] += int(conn.scalar(sa.select(sa.func.count()).select_from(
                    self._joined()).where(_o.note_id.is_(None))) or 0)
        return out

    def problems(self, limit: int = 20) -> list[dict[str, Any]]:
        """Notes failed or unknown, newest change first, with their last error."""
        query = (sa.select(*(_o[c] for c in ("note_id", "status", "phone", "attempts",
                                             "last_error", "updated_at")))
                 .where(self._mine, _o.status.in_(("failed", "unknown")))
                 .order_by(_o.updated_at.desc(), _o.note_id).limit(limit))
        with self.db.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def resend_unknown(self, *, dry_run: bool, ids: Collection[int] | None = None) -> list[int]:
        """Unknown notes (all, or those of `ids`) back to pending, so the next cycle sends them
        again; returns their ids. A dry run only lists them."""
        query = sa.select(_o.note_id).where(self._mine, _o.status == "unknown")
        if ids is not None:
            query = query.where(_o.note_id.in_(list(ids)))
        with self.db.begin() as conn:
            found = sorted(int(i) for i in conn.scalars(query.order_by(_o.note_id)))
            if found and not dry_run:
                conn.execute(note_outbox.update().where(
                    self._mine, _o.status == "unknown", _o.note_id.in_(found))
                    .values(status="pending", updated_at=utcnow()))
                log.warning("notes.resend", notes=len(found), tenant=self.tenant)
        return found


def _blank(value: object) -> bool:
    return value is None or not str(value).strip()


def _by_id(values: dict[int, str]) -> Any:
    """A per-row value for a multi-row UPDATE."""
    return sa.case(*((_o.note_id == i, v) for i, v in values.items()))


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]
