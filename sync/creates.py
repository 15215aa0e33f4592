"""Local inserts sent to the CRM through add-more, in batches, once the pulled chunks are done.

Safety rules that live here:
- each batch is recorded `pending_create` BEFORE add-more is called, so a crash right after the
  call never leads to a blind re-send (the create is looked up first, `local_walk.py`);
- a batch add-more refuses (-9999) is halved and each half sent, down to the contacts refused
  alone, so that one bad row holds none of the others back;
- a contact refused beside accepted ones is its own doing: it waits for its row to change; a
  batch refused whole is more likely the server's doing: sent again next cycle, the batches
  after it waiting, at most MAX_CREATE_ATTEMPTS sends in all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sync.apply import sent_fields
from sync.errors import NotSent, RemoteError
from sync.merge import PushCreate
from sync.record import Contact, Fields
from sync.store.state import SyncState

if TYPE_CHECKING:
    from sync.apply import Applier

__all__ = ["MAX_CREATE_ATTEMPTS", "Creates"]

# Sends of one create before it is given up (then sent again once the app changes its row).
MAX_CREATE_ATTEMPTS = 5


class Creates:
    """The cycle's creates (`CycleContext.creates`: key, fields, the state before), sent."""

    def __init__(self, applier: Applier):
        self.applier, self.e, self.ctx = applier, applier.e, applier.ctx

    async def run(self) -> None:
        ctx, e = self.ctx, self.e
        todo, ctx.creates = ctx.creates, []
        # rows whose create failed before go last: one the CRM keeps refusing delays no other
        todo.sort(key=lambda t: t[2] is not None and t[2].status == "error")
        for start in range(0, len(todo), e.batch_size):
            batch = todo[start:start + e.batch_size]
            if ctx.options.dry_run:
                ctx.plan.extend(PushCreate(k, f) for k, f, _ in batch)
                ctx.counts["created_remote"] += len(batch)
                continue
            # Pending from now, not from the cycle's start: a long cycle (an import, many
            # batches) must not eat into the time the CRM is given to show the create before
            # it is looked up, and maybe sent again.
            since = e.now()
            states = [self.applier.state(
                k, prev, ref_id=k, public_id=None, status="pending_create",
                base=sent_fields(f), remote=self._earlier(k, prev, f), last_error=None,
                attempts=(prev.attempts if prev else 0) + 1, pending_since=since)
                for k, f, prev in batch]
            with e.store.begin() as conn:  # recorded first: a crash after the call is safe
                e.store.save(conn, states)
                self.applier.flush_queued(conn)
            refused: list[tuple[SyncState, RemoteError]] = []
            created = 0
            try:
                created = await self._add_more(batch, states, refused)
            finally:
                # Every contact of a batch refused alone is more likely the server's doing
                # than theirs: they are sent again next cycle, and the batches after this one
                # wait for it too, not burning calls meanwhile. Otherwise the refused ones are
                # the contacts' own doing.
                everyone = bool(refused) and not created
                self._refused(refused, again=everyone)
            if everyone and start + e.batch_size < len(todo):
                ctx.notes.append(f"add-more refused every contact of a batch "
                                 f"({refused[-1][1].code}): the other new rows wait for the "
                                 "next cycle")
                break
        self.applier.save_queued()

    async def _add_more(self, batch: Sequence[tuple[str, Fields, SyncState | None]],
                        states: Sequence[SyncState],
                        refused: list[tuple[SyncState, RemoteError]]) -> int:
        """Send a batch; the number of contacts the CRM took. A -9999 refuses the whole batch
        and may be one contact's doing (a value the server will not take): the batch is
        halved and each half sent, down to the contacts refused alone (into `refused`)."""
        e = self.e
        try:
            await e.client.add_more([e.conv.to_contact(k, f, None) for k, f, _ in batch])
        except NotSent as exc:
            # Certainly never received: these rows are plain new rows again next cycle.
            with e.store.begin() as conn:
                e.store.save(conn, [st.replace(status="error", base=None, pending_since=None,
                                               last_error=f"add-more not sent: {exc}")
                                    for st in states])
            raise
        except RemoteError as exc:
            if len(batch) == 1:
                refused.append((states[0], exc))
                return 0
            half = len(batch) // 2
            return (await self._add_more(batch[:half], states[:half], refused)
                    + await self._add_more(batch[half:], states[half:], refused))
        self.ctx.counts["created_remote"] += len(batch)
        return len(batch)

    def _refused(self, refused: Sequence[tuple[SyncState, RemoteError]], *, again: bool
                 ) -> None:
        """Contacts the CRM refused alone: certainly not created ([assumed] 17), each in error
        with the server's reason. `again` (up to MAX_CREATE_ATTEMPTS sends): a new row again,
        sent next cycle; else its sent values are kept and it is sent again (looked up first)
        once the app changes its row, as a create given up is."""
        if not refused:
            return
        self.ctx.counts["errors"] += len(refused)
        states = []
        for st, exc in refused:
            retry = again and st.attempts < MAX_CREATE_ATTEMPTS
            when = "next cycle" if retry else "once the row changes"
            states.append(st.replace(
                status="error", pending_since=None, **({"base": None} if retry else {}),
                last_error=f"the CRM refused this contact (add-more: {exc.code}); it is sent "
                           f"again {when}"))
        with self.e.store.begin() as conn:
            self.e.store.save(conn, states)

    def _earlier(self, key: str, prev: SyncState | None, fields: Fields) -> Contact | None:
        """For a create sent again: the send before this one (kept in `remote`, as no CRM copy
        exists yet), so that, should the CRM show that one late, its values are known for ours
        and not taken for an agent's edits (pull._sent_shown). The latest earlier send that
        differs is kept."""
        if prev is None or prev.public_id is not None:
            return None
        if prev.base is None or prev.base == sent_fields(fields):
            return prev.remote
        return self.e.conv.to_contact(key, prev.base, None)
