"""Carries out the merge's plans: local writes and bookkeeping in one transaction per chunk,
then the CRM writes. A dry run records the actions instead.

Safety rules that live here:
- a local row is written only if it still holds what the plan was made from (re-read under a
  write lock in the same transaction); otherwise the app's change wins and the next cycle
  picks it up;
- the agreed base is saved only after the CRM accepted the push, so a failed push is retried;
- a create is recorded `pending_create` BEFORE add-more is called, so a crash right after the
  call can never lead to a blind re-send (`creates.py` sends them).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from sync.convert import MAX_KEY_LENGTH
from sync.cycle import CycleContext, PendingDelete
from sync.errors import RemoteError, RowsRefused, row_failure
from sync.merge import (
    Action,
    Conflict,
    ContactPlan,
    PullCreate,
    PullUpdate,
    PushDelete,
    PushUpdate,
    ReadOnlyEdit,
    RecordConflicts,
    SaveBase,
    same_fields,
)
from sync.record import DYNAMIC_PREFIX, Contact, Fields
from sync.store.state import AGREED_STATUSES, SyncState

if TYPE_CHECKING:
    from sync.engine import SyncEngine

log = structlog.get_logger("crm_sync.apply")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One contact of a pulled chunk: its versions and its plan (None: only crm_id to set)."""

    key: str
    remote: Contact
    state: SyncState | None
    row: dict[str, Any] | None
    local: Fields | None
    remote_fields: Fields
    plan: ContactPlan | None


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Await every one, then raise the first failure, if any: none is left running against a
    client the failed cycle is about to close (plain `gather` returns at the first)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]  # no exception among them


def sent_fields(fields: Fields) -> Fields:
    """What add-more carries of `fields`: it takes no dynamic attributes, so the agreed base
    leaves them out and the first cycle that sees the contact pushes them with an update."""
    return {k: (None if k.startswith(DYNAMIC_PREFIX) else v) for k, v in fields.items()}


class Applier:
    def __init__(self, engine: SyncEngine, ctx: CycleContext):
        self.e, self.ctx = engine, ctx
        self.spec = engine.conv.spec
        self._queued: dict[str, SyncState] = {}  # error / refresh states, saved with the next txn

    # --- small state helpers ------------------------------------------------------------------

    @staticmethod
    def state(key: str, prev: SyncState | None, **changes: Any) -> SyncState:
        return SyncState(key, **changes) if prev is None else prev.replace(**changes)

    def row_error(self, key: str, state: SyncState | None, message: str, *,
                  public_id: str | None = None, keep_status: bool = False) -> None:
        self.ctx.counts["errors"] += 1
        log.warning("row.error", key=key, error=message)
        if self.ctx.options.dry_run or len(key) > MAX_KEY_LENGTH:
            return  # a key the bookkeeping cannot hold: its state would fail every save
        status = state.status if keep_status and state else "error"
        self._queued[key] = self.state(
            key, state, status=status, last_error=message,
            attempts=(state.attempts if state else 0) + 1,
            public_id=public_id or (state.public_id if state else None))

    def row_read(self, key: str, row: dict[str, Any]) -> None:
        """A row read as changed: says which labels of its JSON column a column claims (the
        app wrote them there, and they are ignored)."""
        if labels := self.e.conv.claimed_in_json(row):
            self.ctx.counts["custom_labels_ignored"] += 1
            log.warning("row.custom_labels_ignored", key=key, labels=labels,
                        column=self.e.conv.extra_col,
                        detail="a mapped column holds these custom fields: write them there")

    def refresh(self, state: SyncState, remote: Contact | None, row_hash: str | None) -> None:
        """An agreed contact: keep the CRM's latest copy (None: the one recorded) and the
        row's fingerprint."""
        if self.ctx.options.dry_run:
            return
        # a read-only contact agreed again: its unsent edit was undone
        error = None if state.status == "read_only" else state.last_error
        if remote is None:
            self._queued[state.key] = state.replace(local_hash=row_hash, last_error=error)
        else:
            self._queued[state.key] = state.replace(
                remote=remote, remote_updated_ms=remote.updated_ms, local_hash=row_hash,
                last_error=error)

    def flush_queued(self, conn: Any) -> None:
        if self._queued:
            self.e.store.save(conn, list(self._queued.values()))
            self._queued.clear()

    def save_queued(self) -> None:
        """flush_queued in a transaction of its own, if anything is queued."""
        if self._queued:
            with self.e.store.begin() as conn:
                self.flush_queued(conn)

    def queued_mark(self) -> dict[str, SyncState]:
        """The queue as it is, for `requeue` should the transaction that flushes it fail."""
        return dict(self._queued)

    def requeue(self, mark: dict[str, SyncState]) -> None:
        self._queued = {**mark, **self._queued}

    def _synced(self, item: ChunkItem, base: Fields, remote: Contact, status: str = "synced",
                error: str | None = None) -> SyncState:
        return self.state(item.key, item.state, ref_id=remote.ref_id, public_id=remote.public_id,
                          status=status, base=base, remote=remote,
                          remote_updated_ms=remote.updated_ms, last_error=error, attempts=0,
                          pending_since=None)

    # --- a pulled chunk -----------------------------------------------------------------------

    async def apply_chunk(self, items: Sequence[ChunkItem]) -> None:
        ctx = self.ctx
        if ctx.options.dry_run:
            for it in items:
                if it.plan:
                    # a deletion waits for the delete guard, as in a real cycle: the plan
                    # gets it from Deletions.apply if the guard lets it through
                    ctx.plan.extend(a for a in it.plan.actions if not isinstance(a, PushDelete))
                    ctx.deletes += [PendingDelete(it.key, it.remote.public_id, it.state, None,
                                                  None, "local", it.remote)
                                    for a in it.plan.actions if isinstance(a, PushDelete)]
                    self._count(it.plan.actions)
            return
        counts, deletes, queued = Counter(ctx.counts), len(ctx.deletes), self.queued_mark()
        try:
            pushes = self._write_chunk(items)
        except RowsRefused as exc:
            # Nothing of the chunk was written, and what it counted is undone: the halves go
            # again, down to the rows the database refuses, each that row's error.
            ctx.counts.clear()
            ctx.counts.update(counts)
            del ctx.deletes[deletes:]
            self.requeue(queued)
            if len(items) > 1:
                half = len(items) // 2
                await self.apply_chunk(items[:half])
                await self.apply_chunk(items[half:])
            else:
                self._refused_row(items[0], str(exc))
            return
        if pushes:
            await self._push_updates(pushes)

    def _refused_row(self, it: ChunkItem, reason: str) -> None:
        # A contact new here gets a state without its CRM id (`status` names it): one with the
        # id and no row would read as a row an app deleted. It is planned afresh next cycle.
        self.row_error(it.key, it.state, f"the database refused the row: {reason}",
                       keep_status=it.state is not None)

    def _write_chunk(self, items: Sequence[ChunkItem]
                     ) -> list[tuple[ChunkItem, PushUpdate, SyncState]]:
        """The chunk's local writes and bookkeeping, in one transaction; the pushes it plans."""
        ctx, e = self.ctx, self.e
        pushes: list[tuple[ChunkItem, PushUpdate, SyncState]] = []
        with e.store.begin() as conn:
            # The optimistic check re-reads, under lock, every row the plan saw or might act on.
            # A contact new to both sides can only be inserted, and the insert itself skips a
            # key an app took meanwhile (below): no re-read (a first import makes none).
            current = e.local.load(conn, [it.key for it in items
                                          if it.row is not None or it.state is not None],
                                   lock=True)
            states: list[SyncState] = []
            conflicts: list[dict[str, Any]] = []
            inserts: list[dict[str, Any]] = []
            updates: list[tuple[str, dict[str, Any]]] = []  # written together, below
            settled: list[str] = []  # keys in conflict that the merge now finds none for
            agreed: dict[str, SyncState] = {}  # rows that hold their new base once this commits
            for it in items:
                now_row = current.get(it.key)
                if not self._unchanged(it, now_row):
                    ctx.counts["skipped_changed_during_cycle"] += 1
                    continue
                crm_id = self._crm_id(it.remote)
                if it.plan is None:
                    updates.append((it.key, crm_id))
                    continue
                acts = it.plan.actions
                push = next((a for a in acts if isinstance(a, PushUpdate)), None)
                base = next((a.fields for a in acts if isinstance(a, SaveBase)),
                            it.state.base if it.state else None)
                status, error = "synced", None
                for a in acts:
                    if isinstance(a, PullCreate):
                        inserts.append(self._row(it.key, a.fields) | crm_id)
                    elif isinstance(a, PullUpdate):
                        updates.append((it.key, e.conv.row_values(a.changes, now_row) | crm_id))
                    elif isinstance(a, RecordConflicts):
                        if not (it.state and it.state.status == "conflict"):  # already open
                            conflicts += self.conflict_rows(it.key, a.conflicts)
                        if any(c.resolution == "manual" for c in a.conflicts):
                            status, error = "conflict", "open conflict: resolve it in one side"
                    elif isinstance(a, ReadOnlyEdit):
                        error = ("local edits to " + ", ".join(a.fields) + " are not sent: the "
                                 "contact has no refId, the API cannot update it")
                    elif isinstance(a, PushDelete):
                        ctx.deletes.append(PendingDelete(it.key, it.remote.public_id, it.state,
                                                         None, None, "local", it.remote))
                if (crm_id and now_row is not None
                        and not any(isinstance(a, PullUpdate) for a in acts)
                        and now_row.get(str(self.spec.crm_id_column)) != it.remote.public_id):
                    updates.append((it.key, crm_id))  # e.g. a create just confirmed
                if it.remote.ref_id is None or e.read_only_table:
                    status = "read_only" if status == "synced" else status
                if it.state and it.state.status == "conflict" and status != "conflict":
                    settled.append(it.key)
                if push is not None:  # the base is saved once the CRM took the push
                    assert base is not None
                    pushes.append((it, push, self._synced(it, base, it.remote, status, error)))
                    if status == "synced" and it.state is not None and it.state.base is not None:
                        # Write-ahead: should the process die once the CRM has taken the
                        # update, the next cycle must know the new CRM values for ours.
                        states.append(it.state.replace(status="pushing", remote=e.conv.to_contact(
                            it.remote.ref_id, push.fields, it.remote), remote_updated_ms=None,
                            remote_hash=it.remote.digest))  # what it was made against
                elif base is not None and not any(isinstance(a, PushDelete) for a in acts):
                    states.append(self._synced(it, base, it.remote, status, error))
                    if error is None and status in AGREED_STATUSES:
                        agreed[it.key] = states[-1]
                self._count(acts)
            e.local.update_many(conn, updates)
            if inserts:
                created = e.local.insert_new(conn, inserts, e.image)
                taken = {r[self.spec.key_column] for r in inserts} - created.keys()
                # A key an app inserted meanwhile keeps the app's row, which is then not as
                # agreed: the next cycle takes its values for the app's, written last.
                for key in taken:
                    agreed.pop(key, None)
                ctx.counts["created_local"] -= len(taken)
                ctx.counts["skipped_changed_during_cycle"] += len(taken)
                for key, print_ in created.items():
                    if key in agreed:
                        agreed[key].local_hash = print_  # as the insert stored the row
            # a new base voided each state's fingerprint: those the insert gave none of
            unprinted = [k for k, st in agreed.items() if st.local_hash is None]
            if unprinted and e.image is not None:
                # Read under the same lock as the writes: the fingerprint of what we wrote (or
                # found unchanged), so the next cycle need not read these rows again.
                for key, print_ in e.local.fingerprints(conn, unprinted, e.image).items():
                    agreed[key].local_hash = print_
            e.store.save(conn, states)
            e.store.add_conflicts(conn, conflicts)
            e.store.close_conflicts(conn, settled)
            self.flush_queued(conn)
        return pushes

    def _unchanged(self, it: ChunkItem, now_row: dict[str, Any] | None) -> bool:
        """The optimistic check: does the row still hold what the plan was made from?"""
        if it.row is None:
            return now_row is None
        if now_row is None:
            return False
        try:
            now = self.e.conv.row_fields(now_row)
        except ValueError:
            return False
        # as the merge reads versions (a plan made from the agreed base holds
        # `custom_fields:<label>: None` for a label removed since, which the row, read back,
        # does not name at all)
        return same_fields(now, it.local or {})

    def _crm_id(self, remote: Contact) -> dict[str, Any]:
        col = self.spec.crm_id_column
        return {col: remote.public_id} if col else {}

    def _row(self, key: str, fields: Fields) -> dict[str, Any]:
        return {self.spec.key_column: key, **self.e.conv.row_values(fields)}

    def conflict_rows(self, key: str, conflicts: Iterable[Conflict]) -> list[dict[str, Any]]:
        return [dict(key=key, field=c.field, base_value=c.base, local_value=c.local,
                     remote_value=c.remote,
                     policy=self.e.policy.value, resolution=c.resolution, run_id=self.ctx.run_id)
                for c in conflicts]

    def _count(self, actions: Iterable[Action]) -> None:
        c = self.ctx.counts
        for a in actions:
            if isinstance(a, PullCreate):
                c["created_local"] += 1
            elif isinstance(a, PullUpdate):
                c["updated_local"] += 1
            elif isinstance(a, PushUpdate):
                c["updated_remote"] += 1
            elif isinstance(a, RecordConflicts):
                c["conflicts"] += len(a.conflicts)
            elif isinstance(a, ReadOnlyEdit):
                c["read_only_edits"] += 1

    async def _push_updates(self, pushes: list[tuple[ChunkItem, PushUpdate, SyncState]]) -> None:
        e = self.e
        sem = asyncio.Semaphore(e.concurrency)
        done: list[SyncState] = []

        async def one(it: ChunkItem, push: PushUpdate, after: SyncState) -> None:
            problems = e.conv.push_problems(push.fields, it.row, it.remote)
            if problems:  # what the CRM would refuse (or update_body raise on): a row error
                self.ctx.counts["updated_remote"] -= 1
                self.row_error(it.key, it.state, "; ".join(problems),
                               public_id=it.remote.public_id)
                return
            contact = e.conv.to_contact(it.remote.ref_id, push.fields, it.remote)
            async with sem:
                try:
                    check = await e.client.update_checked(contact, it.remote)
                except RemoteError as exc:
                    self.ctx.counts["updated_remote"] -= 1
                    # the API names no field: name what was sent (a dynamic attribute's code
                    # or a select option the tenant does not have, say)
                    sent = ", ".join(sorted(push.changed)) or "nothing but the required fields"
                    self.row_error(it.key, it.state, f"{row_failure('update', exc)} (sent: "
                                   f"{sent})", public_id=it.remote.public_id)
                    return
            if not check.sent:  # only clears no update can send: none was made
                self.ctx.counts["updated_remote"] -= 1
            if check.not_sent:  # the CRM keeps its values, which the next listing brings back
                self.ctx.counts["clears_not_sent"] += 1
                log.warning("push.clear_not_sent", key=it.key, fields=list(check.not_sent),
                            detail="an update cannot clear them: the CRM keeps its values")
                contact = replace(contact, **{a: getattr(it.remote, a) for a in check.not_sent})
            if missed := check.missed:
                # Recorded as agreed, the next listing would show the CRM's old value against
                # the value sent, read it as an agent's edit and set the row back: the row's
                # edit would be lost without a word. Kept as not agreed instead, so it is
                # sent again (what the CRM did take is agreed then, as both sides hold it).
                self.ctx.counts["updated_remote"] -= 1
                why: dict[str, list[str]] = {}
                for attr, reason in missed.items():
                    why.setdefault(reason, []).append(attr)
                self.row_error(it.key, it.state, "the update did not reach the CRM in full: "
                               + "; ".join(f"{', '.join(attrs)} {reason}"
                                           for reason, attrs in why.items())
                               + ". The row keeps its values (sent again next cycle)",
                               public_id=it.remote.public_id)
                return
            # The CRM now holds `contact`; its timestamp is unknown until the next listing,
            # and the listed bytes it replaced stay recorded: a listing that lags the update
            # serves them again, and they are then read as `contact` (Pull.chunk).
            done.append(after.replace(remote=replace(contact, updated_ms=None),
                                      remote_updated_ms=None, remote_hash=it.remote.digest))

        # Every update runs to its end before the cycle fails on one, and those the CRM took
        # are recorded as agreed before the failure goes on.
        try:
            await gather_all(one(*p) for p in pushes)
        finally:
            with e.store.begin() as conn:
                e.store.save(conn, done)
                self.flush_queued(conn)
