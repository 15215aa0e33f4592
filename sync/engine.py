"""One sync cycle: snapshot both sides, plan with the pure merge, apply (see apply.py).

Order of a cycle:
0. quick cycles only: one SQL pass finds the local rows not as last agreed (row fingerprints
   computed by the database).
1. pull (pull.py): page through the CRM listing, chunk by chunk. A contact whose listed JSON
   and row are both as last agreed is skipped unparsed (quick cycles); for the others, load
   the chunk's local rows and sync state (a first import, which starts with neither, loads
   none), plan every contact three ways, apply the chunk (local writes in one transaction,
   then the CRM updates).
2. local: the rows the listing did not show (local_walk.py): new rows become creates, creates
   still pending are confirmed (`get?ref_id=`) before any re-send.
3. bookkeeping without a row: rows the app deleted become CRM deletions.
4. full cycles only, and only after a complete listing: contacts missing from it are looked up
   one by one; the confirmed ones are CRM deletions.
5. deletions of both kinds pass the guard together, then creates go out through add-more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from sync.api.client import OmiClient
from sync.apply import Applier
from sync.convert import Converter
from sync.creates import Creates
from sync.cycle import (
    COUNTERS,
    CycleContext,
    CycleOptions,
    CycleResult,
    ProgressFn,
    RunStatus,
)
from sync.deletions import Deletions
from sync.errors import AuthError, ConfigError, NotSent
from sync.local_walk import LocalWalk
from sync.merge import Policy
from sync.notes import NotesOutbox
from sync.pull import Pull
from sync.store import deferred_indexes, driver_message
from sync.store.local import LocalTable
from sync.store.state import AgreedRows, StateStore, SyncState

log = structlog.get_logger("crm_sync.engine")


def utcnow() -> datetime:
    return datetime.now(UTC)


class SyncEngine:
    def __init__(
        self,
        *,
        client: OmiClient,
        db: Engine,
        store: StateStore,
        local: LocalTable,
        converter: Converter,
        notes: NotesOutbox | None = None,
        policy: Policy = Policy.REMOTE_WINS,
        page_size: int = 100,
        concurrency: int = 4,
        batch_size: int = 100,
        max_delete_fraction: float = 0.1,
        pending_recheck_seconds: float = 300.0,
        import_workers: int = 0,
        import_min_contacts: int = 10_000,
        now: Callable[[], datetime] = utcnow,
        progress: ProgressFn | None = None,
    ):
        self.client, self.db, self.store, self.local, self.conv = (
            client, db, store, local, converter)
        self.notes = notes
        self.policy = policy
        self.page_size, self.concurrency, self.batch_size = page_size, concurrency, batch_size
        self.max_delete_fraction = max_delete_fraction
        self.pending_recheck = timedelta(seconds=pending_recheck_seconds)
        # worker processes for a first import of at least import_min_contacts (pull.py)
        self.import_workers, self.import_min_contacts = import_workers, import_min_contacts
        self.now = now
        self.progress = progress
        self.directions = converter.spec.directions()
        self.read_only_table = converter.spec.direction.value == "pull"
        # the local row's fingerprint, computed by the database (None: not on this database)
        text_columns = local.text_affinity(db)
        self.image = local.fingerprint(db.dialect.name, converter.row_columns,
                                       converter.row_salt, text_columns=text_columns)
        # the same, for a change-detection pass over rows that hold no BLOB (agreed_rows)
        self.quick_image = local.fingerprint(db.dialect.name, converter.row_columns,
                                             converter.row_salt, text_columns=text_columns,
                                             blobs=False)

    async def run(self, options: CycleOptions = CycleOptions()) -> CycleResult:
        ctx = CycleContext(options=options, now=self.now())
        calls_before = dict(self.client.calls)
        if not options.dry_run:
            ctx.run_id = self.store.start_run(options.kind)
        # every line of the cycle, the client's too, carries its run id
        with structlog.contextvars.bound_contextvars(run_id=ctx.run_id):
            return await self._run(ctx, calls_before)

    async def _run(self, ctx: CycleContext, calls_before: dict[str, int]) -> CycleResult:
        log_ = log.bind(kind=ctx.options.kind)
        log_.info("cycle.start", full=ctx.options.full, dry_run=ctx.options.dry_run)
        status: RunStatus = "ok"
        try:
            await self._steps(ctx)
            if ctx.refused:
                status = "refused"
        except asyncio.CancelledError:
            # Stopped by the daemon: every chunk already applied is whole; say so and go.
            ctx.notes.append("cancelled (shutdown)")
            self._finish(ctx, "failed", calls_before)
            raise
        except Exception as exc:
            status = "failed"
            # the API key refused (not a token refused mid-cycle: that is the server's doing)
            ctx.config_failure = isinstance(exc, ConfigError) or (
                isinstance(exc, AuthError) and exc.endpoint in ("", "auth"))
            ctx.notes.insert(0, _failure(exc))
            log_.error("cycle.failed", error=ctx.notes[0])
        result = self._finish(ctx, status, calls_before)
        log_.info("cycle.end", status=result.status, duration_s=round(result.duration_s, 3),
                  api_calls=sum(result.api_calls.values()),
                  **{k: v for k, v in result.counts.items() if v})
        return result

    async def _steps(self, ctx: CycleContext) -> None:
        if self.notes:  # before anything is written
            self.notes.refuse_shared()
        if not ctx.options.dry_run:  # a first import's end could not put them back
            deferred_indexes.restore_if_aside(self.store)
        applier = Applier(self, ctx)
        if self.notes and not ctx.options.dry_run:
            # notes left in flight by a crash: maybe delivered, so held as `unknown`
            ctx.counts["notes_unknown"] += self.notes.recover()
        deletions = Deletions(self, ctx, applier)
        self._note_empty_sides(ctx)
        agreed = self._agreed(ctx)
        await Pull(self, ctx, applier).run(agreed)
        await LocalWalk(self, ctx, applier).run(agreed)
        deletions.orphans(agreed)
        if ctx.options.full and ctx.listing_complete:
            await deletions.confirm_vanished()
        deletions.guard()
        await deletions.apply()
        await Creates(applier).run()
        self.analyze_after_bulk(ctx)
        if self.notes:
            ctx.counts.update(await self.notes.push(self.client, batch_size=self.batch_size,
                                                    dry_run=ctx.options.dry_run))

    def analyze_after_bulk(self, ctx: CycleContext, *, final: bool = True) -> None:
        """PostgreSQL plans a table it has no statistics for as if it were tiny: during a bulk
        import every chunk's lookups became scans of the whole table, and after it the next
        cycle's keyset walks sorts of every row. So ANALYZE whenever the rows written have
        doubled since the last time (from 1,000 on), and at the end of the cycle."""
        written = ctx.counts["created_local"] + ctx.counts["created_remote"]
        due = written >= 2 * ctx.analyzed_at if not final else written > ctx.analyzed_at
        if self.db.dialect.name != "postgresql" or ctx.options.dry_run or written < 1000 \
                or not due:
            return
        ctx.analyzed_at = written
        # Only the columns the cycle's queries select rows by: statistics of the wide JSON
        # and text columns cost most of an ANALYZE and serve no plan (the row counts, which
        # the plans need, are updated whichever columns are named).
        lookups = (("sync_state", ("tenant", "key", "public_id", "status")),
                   (self.local.table.name, (self.local.key_column,)))
        with self.db.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            for table, columns in lookups:
                conn.exec_driver_sql(
                    f"ANALYZE {quote(table)} ({', '.join(quote(c) for c in columns)})")

    def _finish(self, ctx: CycleContext, status: RunStatus,
                calls_before: dict[str, int]) -> CycleResult:
        calls = {k: v - calls_before.get(k, 0) for k, v in self.client.calls.items()
                 if v - calls_before.get(k, 0)}
        counts = {k: ctx.counts.get(k, 0) for k in COUNTERS}
        extra = {k: v for k, v in ctx.counts.items() if k not in COUNTERS and v}
        if status == "ok" and (counts["errors"] or counts["conflicts"]):
            status = "partial"
        message = "; ".join(ctx.notes) or None
        if ctx.run_id is not None:
            self.store.finish_run(ctx.run_id, status=status, counts=counts, api_calls=calls,
                                  message=message, details=extra)
        return CycleResult(
            run_id=ctx.run_id, kind=ctx.options.kind, status=status, counts=counts | extra,
            api_calls=calls, started_at=ctx.now, finished_at=self.now(), notes=tuple(ctx.notes),
            plan=tuple(ctx.plan), rows_in_error=self.store.count_errors(),
            open_conflicts=self.store.count_open_conflicts(), config_failure=ctx.config_failure)

    # --- 1. pull ----------------------------------------------------------------------------

    def _note_empty_sides(self, ctx: CycleContext) -> None:
        """A first import looks nothing up before each chunk: with no bookkeeping at the start,
        the only states are this cycle's own, of keys already handled (the tenant lock keeps
        other writers out); with an empty table, a row found later is one an app inserted
        meanwhile, which the apply's optimistic check meets as it meets any other."""
        ctx.no_states = self.store.is_empty()
        with self.db.connect() as conn:
            ctx.no_rows = self.local.is_empty(conn)
        if ctx.no_states and not ctx.no_rows:
            self.store.refuse_another_tenants_table(self.local.key)

    def _agreed(self, ctx: CycleContext) -> AgreedRows | None:
        """A quick cycle's view of the local side (None: a full cycle, which re-checks every
        contact, or a database that cannot fingerprint rows)."""
        if self.image is None or ctx.options.full:
            return None
        return self.store.agreed_rows(self.local.key, self.image, quick_image=self.quick_image)

    def rebased(self, state: SyncState) -> SyncState:
        """The base as the current mapping reads it: a field mapped anew (or re-pointed,
        re-typed) has no agreed value yet, so the CRM's is pulled, never an empty column
        pushed."""
        if state.base is None:
            return state
        base = self.conv.rebase(state.base)
        return state if base == state.base else state.replace(base=base)


def _failure(exc: Exception) -> str:
    """What failed a cycle, in one line: a database error as the database said it, with the
    start of the statement (SQLAlchemy's own text spans the whole statement, often a page of
    it), and a hint when it names the schema (a mapped column dropped while crm-sync runs).
    A refused key, or a CRM that cannot be reached at all, names the setting to look at."""
    if isinstance(exc, AuthError) and exc.endpoint in ("", "auth"):
        return f"{type(exc).__name__}: {exc} (check CRM_SYNC_API_KEY)"
    if isinstance(exc, NotSent) and exc.endpoint == "auth":
        return (f"{type(exc).__name__}: {exc} (is CRM_SYNC_BASE_URL right, and the CRM "
                "reachable from here?)")
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return f"{type(exc).__name__}: {exc}"
    said = driver_message(exc)
    statement = " ".join(str(exc.statement or "").split())
    if len(statement) > 160:
        statement = statement[:160] + "..."
    text = f"{type(exc).__name__}: {said} [SQL: {statement}]"
    if any(w in said.lower() for w in ("no such column", "no such table", "does not exist",
                                       "undefinedcolumn", "undefinedtable")):
        text += " (the table no longer fits the mapping? `crm-sync check` says what differs)"
    return text
