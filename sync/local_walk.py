"""Step 2 of a cycle: the local rows the listing did not show.

- a new row (no bookkeeping yet) becomes a create, checked first (a row the CRM would refuse
  is a row error, named field by field);
- a create sent earlier and still not listed is looked up by `ref_id` before any re-send, with
  a back-off, and given up (a row error) after MAX_CREATE_ATTEMPTS;
- a row edited since it was agreed, whose contact this listing did not show (items shift
  between pages), is fetched by its refId and planned against the CRM's copy of now;
- in a full cycle after a complete listing, a row whose contact was not listed is kept for the
  one-by-one confirmation of deletions (deletions.py).

A quick cycle looks only at the rows the database found not as agreed (`AgreedRows.unclean`):
an agreed row the listing did not show has nothing to send. A full cycle walks every key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sync.apply import ChunkItem, sent_fields
from sync.convert import RowError, key_problem
from sync.creates import MAX_CREATE_ATTEMPTS
from sync.cycle import CycleContext
from sync.lookup import look_up
from sync.merge import plan_contact
from sync.pull import Pull
from sync.record import Contact, Fields
from sync.store.state import AgreedRows, SyncState

if TYPE_CHECKING:
    from sync.apply import Applier
    from sync.engine import SyncEngine

KEYS_PER_READ = 5000


CLOCK_SKEW = timedelta(minutes=10)  # between the CRM's created_date and our clock


def _created_since(contact: Contact, since: datetime) -> bool:
    return (contact.created_ms is not None
            and contact.created_ms >= (since - CLOCK_SKEW).timestamp() * 1000)


class LocalWalk:
    def __init__(self, engine: SyncEngine, ctx: CycleContext, applier: Applier):
        self.e, self.ctx, self.applier = engine, ctx, applier

    def _keys(self, agreed: AgreedRows | None) -> Iterator[list[str]]:
        if agreed is None:
            yield from self.e.local.iter_keys(self.e.db, chunk=KEYS_PER_READ)
            return
        for start in range(0, len(agreed.unclean), KEYS_PER_READ):
            yield agreed.unclean[start:start + KEYS_PER_READ]

    async def run(self, agreed: AgreedRows | None) -> None:
        e, ctx, applier = self.e, self.ctx, self.applier
        for keys in self._keys(agreed):
            unseen_keys = [k for k in keys if k not in ctx.seen_keys]
            if not unseen_keys:
                continue
            with e.db.connect() as conn:
                rows = e.local.load(conn, unseen_keys)
            states = e.store.load(unseen_keys)
            edits: list[ChunkItem] = []
            missed: list[SyncState] = []  # edited here, not listed: fetched before planning
            for key, row in rows.items():  # a row deleted meanwhile is the next cycle's
                state = states.get(key)
                try:
                    local_f = e.conv.row_fields(row)
                    applier.row_read(key, row)
                except RowError as exc:
                    applier.row_error(key, state, self._unreadable(key, state, exc))
                    continue
                if state is not None and state.status == "pending_create":
                    ctx.pending.append((state, local_f))
                elif state is None or (state.base is None and state.public_id is None):
                    self._new_row(key, row, local_f, state)
                elif state.public_id is None:
                    # A create the CRM never showed (given up after MAX_CREATE_ATTEMPTS): never
                    # in the CRM, so neither deleted there nor anything to plan against. Once
                    # the app changes the row it is tried again, looked up first like any
                    # pending create (an earlier add-more may yet land: no duplicate; its
                    # last send is long past), as a create sent before (attempts 1: the next
                    # send is a re-send).
                    if sent_fields(local_f) != state.base:
                        if problems := e.conv.push_problems(local_f, row):
                            applier.row_error(key, state, "; ".join(problems))
                        else:
                            ctx.pending.append((state.replace(attempts=1), local_f))
                elif ctx.options.full and ctx.listing_complete:
                    ctx.vanished.append((state, row, local_f))  # confirmed one by one later
                elif (state := e.rebased(state)).base is not None and state.remote \
                        and local_f != state.base:
                    if state.ref_id and not e.read_only_table:
                        missed.append(state)  # planned against the CRM's copy of now, below
                        continue
                    # No refId to look it up by: only a read-only note can come of it,
                    # planned against the CRM copy we know.
                    known = state.remote
                    try:
                        remote_f = e.conv.remote_fields(known)
                    except RowError as exc:
                        applier.row_error(key, state, str(exc))
                        continue
                    plan = plan_contact(key, state.base, local_f, remote_f, policy=e.policy,
                                        directions=e.directions, read_only=True,
                                        unagreed=e.conv.unagreed(state.base))
                    edits.append(ChunkItem(key, known, state, row, local_f, remote_f, plan))
            if edits:
                await applier.apply_chunk(edits)
            if missed:
                await self._refetched(missed)
        await self._pending()

    async def _refetched(self, states: list[SyncState]) -> None:
        """Rows edited here whose contact this listing did not show (items shift between
        pages, and a CRM listing by update time hides exactly the contacts agents edit): each
        is fetched by its refId and planned three ways against what the CRM holds now, so an
        agent's edit is merged, not overwritten by a push against an old copy. One the CRM
        does not return is left to a full cycle (which confirms deletions)."""
        e, ctx, applier = self.e, self.ctx, self.applier
        found: list[Contact] = []
        for state, contact in zip(states, await look_up(e, states), strict=True):
            if isinstance(contact, str):  # this contact only: the others go on
                applier.row_error(state.key, state, contact, keep_status=True)
            elif contact is None or contact.is_deleted:
                ctx.counts["unlisted_edits_not_found"] += 1
            else:
                found.append(contact)
        if found:  # look_up chose which contact each row follows
            await Pull(e, ctx, applier).chunk(found, follow_any=True)

    def _unreadable(self, key: str, state: SyncState | None, exc: RowError) -> str:
        """A row that does not read. A new row's key a create could not send is said too: the
        row is fixed once (a pending create's key was checked when it was first sent)."""
        new = state is None or (state.status != "pending_create" and state.base is None
                                and state.public_id is None)
        problem = None if self.e.read_only_table or not new else key_problem(
            key, self.e.conv.spec.key_column)
        return f"{problem}; {exc}" if problem else str(exc)

    def _new_row(self, key: str, row: Mapping[str, Any], local_f: Fields,
                 state: SyncState | None) -> None:
        if self.e.read_only_table:
            return  # nothing the CRM could take
        problem = key_problem(key, self.e.conv.spec.key_column)
        problems = [problem] if problem else []
        problems += self.e.conv.push_problems(local_f, row)
        if problems:  # all at once: the row is fixed once
            self.applier.row_error(key, state, "; ".join(problems))
            return
        self.ctx.creates.append((key, local_f, state))

    async def _pending(self) -> None:
        """Creates sent earlier and not yet listed: look before any re-send (no duplicates)."""
        e, ctx, applier = self.e, self.ctx, self.applier
        due: list[tuple[SyncState, Fields | None]] = []
        for state, local_f in ctx.pending:
            wait = e.pending_recheck * (2 ** max(0, state.attempts - 1))
            if state.pending_since is not None and ctx.now - state.pending_since < wait:
                ctx.counts["pending_create"] += 1
            else:
                due.append((state, local_f))
        found: list[Contact] = []
        existing_ones = await look_up(e, [state for state, _ in due])
        ours_deleted = e.store.deleted_here_since(None, [
            c.public_id for c in existing_ones
            if isinstance(c, Contact) and c.is_deleted and c.public_id])
        for (state, local_f), existing in zip(due, existing_ones, strict=True):
            if isinstance(existing, str):  # asked again next cycle, with the attempts as they
                # were (row_error counts one)
                applier.row_error(state.key, state.replace(attempts=state.attempts - 1),
                                  existing, keep_status=True)
            elif existing is not None and (
                    not existing.is_deleted
                    or (_created_since(existing, state.pending_since or ctx.now)
                        and existing.public_id not in ours_deleted)):
                # A deleted contact created after our add-more is ours, deleted by an agent
                # since: bound like a live one, so the deletion reaches the table as any CRM
                # deletion does (not undone by a re-send). An older one, or one crm-sync
                # deleted itself (a row an app deleted, then inserted again with its refId, a
                # few minutes on: within the clock's allowance), is another contact that
                # once had this refId: the create is sent again.
                found.append(existing)
            elif state.attempts >= MAX_CREATE_ATTEMPTS:  # given up: a row in error, once
                applier.row_error(state.key, state.replace(attempts=state.attempts - 1),
                                  f"the CRM has not shown this contact after "
                                  f"{state.attempts} add-more attempts")
            elif local_f is not None:
                ctx.creates.append((state.key, local_f, state))
        if found:
            await Pull(e, ctx, applier).chunk(found)
