"""Deletions on either side of a cycle: found, confirmed, guarded, then carried out.

- a row the app deleted (its bookkeeping has no row any more) is deleted in the CRM;
- a contact a complete listing no longer shows is looked up, contact by contact (items shift
  between pages while the list changes; `concurrency` lookups at a time), and only a
  confirmed deletion reaches the local table;
- the guard refuses, per side, more than CRM_SYNC_MAX_DELETE_FRACTION of the known contacts in
  one cycle (an API hiccup answering an empty list must not wipe the table);
- every deletion leaves a tombstone with the last values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from sync.cycle import CycleContext, PendingDelete
from sync.errors import RemoteError, RowsRefused, row_failure
from sync.lookup import look_up
from sync.merge import (
    LocalDelete,
    PushCreate,
    PushDelete,
    RecordConflicts,
    deletions_allowed,
    plan_contact,
)
from sync.prepare import contact_key
from sync.pull import Pull
from sync.record import Contact, Fields
from sync.store.state import AgreedRows

if TYPE_CHECKING:
    from sync.apply import Applier
    from sync.engine import SyncEngine

log = structlog.get_logger("crm_sync.deletions")


class Deletions:
    def __init__(self, engine: SyncEngine, ctx: CycleContext, applier: Applier):
        self.e, self.ctx, self.applier = engine, ctx, applier

    # --- 3. bookkeeping whose local row is gone --------------------------------------------

    def orphans(self, agreed: AgreedRows | None = None) -> None:
        """`agreed`: a quick cycle's pass, which counted them: none, no search."""
        if agreed is not None and agreed.orphaned <= 0:
            return
        ctx = self.ctx
        for st in self.e.store.missing_from(self.e.local.key):
            if st.key in ctx.seen_keys:
                continue  # listed: the pull already planned it with its row absent
            # the app deleted the row: delete in the CRM (or just forget, if never created)
            ctx.deletes.append(PendingDelete(st.key, st.public_id, st, None, None, "local"))

    # --- 4. contacts the complete listing no longer shows ----------------------------------

    async def confirm_vanished(self) -> None:
        ctx, e = self.ctx, self.e
        found = await look_up(e, [state for state, _, _ in ctx.vanished])
        back: list[Contact] = []
        for (state, row, local_f), again in zip(ctx.vanished, found, strict=True):
            if isinstance(again, str):  # unconfirmed: nothing deleted, the others go on
                self.applier.row_error(state.key, state, again, keep_status=True)
                continue
            live = again if again is not None and not again.is_deleted else None
            now_key = contact_key(live) if live is not None else None
            if live is not None and now_key == state.key:
                back.append(live)  # it only shifted between pages
                continue
            # Gone; or the contact now has another key (an agent gave a contact made in the
            # CRM a refId): that key's row is its row now. Either way this row goes, with a
            # tombstone.
            ctx.deletes.append(PendingDelete(state.key, state.public_id, state, row, local_f,
                                             "remote", live, replaced_by=now_key))
            if live is not None:
                ctx.counts["rekeyed"] += 1
                if now_key not in ctx.seen_keys:
                    back.append(live)
        if back:
            await Pull(e, ctx, self.applier).chunk(back, follow_any=True)  # look_up chose

    # --- 5. the delete guard ------------------------------------------------------------------

    def guard(self) -> None:
        """Refuse, per side, deletions beyond the configured fraction; the rest goes on."""
        ctx = self.ctx
        real = [d for d in ctx.deletes
                if (d.public_id or d.side == "remote") and d.replaced_by is None]
        known = sum(self.e.store.counts().values())
        for side in ("local", "remote"):
            n = sum(1 for d in real if d.side == side)
            if deletions_allowed(n, known, self.e.max_delete_fraction):
                continue
            where = "the local table" if side == "local" else "the CRM"
            ctx.deletes = [d for d in ctx.deletes if d.side != side or d.replaced_by]
            ctx.refused = True
            ctx.notes.append(
                f"refused: {n} of {known} contacts disappeared from {where} in one cycle, more "
                f"than CRM_SYNC_MAX_DELETE_FRACTION={self.e.max_delete_fraction}; none of them "
                "was deleted. First check that CRM_SYNC_DATABASE_URL, the mapping's table "
                "and CRM_SYNC_TENANT name the table and CRM this tenant synced before (a "
                "wrong one looks like a mass deletion); if the deletions are intended, raise "
                "the fraction for one run.")
            log.warning("guard.refused", side=side, deletions=n, known=known)

    # --- 6. carried out (after the guard) ------------------------------------------------------

    async def apply(self) -> None:
        ctx, e = self.ctx, self.e
        for d in ctx.deletes:
            if d.side == "local":
                await self._delete_remote(d)
                continue
            base = (e.conv.rebase(d.state.base) if d.state and d.state.base is not None
                    else None)
            plan = plan_contact(d.key, base, d.local, None, policy=e.policy,
                                directions=e.directions,
                                read_only=e.read_only_table
                                or bool(d.state and not d.state.ref_id))
            if ctx.options.dry_run:
                ctx.plan.extend(plan.actions)
                continue
            for a in plan.actions:
                if isinstance(a, LocalDelete):
                    self._delete_local(d)
                elif isinstance(a, PushCreate):
                    ctx.creates.append((d.key, a.fields, None))
                elif isinstance(a, RecordConflicts):
                    rows = self.applier.conflict_rows(d.key, a.conflicts)
                    with e.store.begin() as conn:
                        e.store.add_conflicts(conn, rows)
                    ctx.counts["conflicts"] += len(a.conflicts)

    async def _delete_remote(self, d: PendingDelete) -> None:
        ctx, e = self.ctx, self.e
        if ctx.options.dry_run:
            if d.public_id:
                ctx.plan.append(PushDelete(d.key))
            return
        public_id = d.public_id
        if public_id is None and d.state is not None and d.state.status == "pending_create":
            found, = await look_up(e, [d.state])  # created meanwhile? then delete it too
            if isinstance(found, str):  # unknown for now: the next cycle asks again
                self.applier.row_error(d.key, d.state, found, keep_status=True)
                return
            public_id = found.public_id if found and not found.is_deleted else None
            since = d.state.pending_since or ctx.now
            if public_id is None and ctx.now - since < e.pending_recheck * 2 ** 5:
                return  # add-more may still create it: keep the state; the pull deletes it
        if public_id:
            try:
                await e.client.delete(public_id)  # False means already gone: fine
            except RemoteError as exc:  # refused, and the contact is still there: next cycle
                self.applier.row_error(d.key, d.state, row_failure("delete", exc),
                                       public_id=public_id)
                return
            ctx.counts["deleted_remote"] += 1
        # the CRM's last version: what the delete erased there
        values: Contact | Fields | None = d.remote
        if values is None and d.state is not None:
            # a create not yet seen keeps only an earlier send in `remote`: its base is what
            # was sent last
            values = (d.state.remote if d.state.public_id else None) or d.state.base
        with e.store.begin() as conn:
            if public_id:
                e.store.add_tombstones(conn, [dict(key=d.key, public_id=public_id, side="local",
                                                   values=values, run_id=ctx.run_id)])
            e.store.delete(conn, [d.key])

    def _delete_local(self, d: PendingDelete) -> None:
        ctx, e = self.ctx, self.e
        try:
            with e.store.begin() as conn:
                now_row = e.local.load(conn, [d.key], lock=True).get(d.key)
                if now_row is not None and d.local is not None:
                    try:
                        same = e.conv.row_fields(now_row) == d.local
                    except ValueError:
                        same = False
                    if not same:
                        ctx.counts["skipped_changed_during_cycle"] += 1
                        return
                # the whole row, the app's own columns too: nothing of it is lost (the mapped
                # ones as their types read them: a JSON column as JSON, a date as a date)
                whole = e.local.whole_row(conn, d.key)
                values = ({**whole, **now_row} if whole and now_row else None) \
                    or d.row or d.local
                e.local.delete(conn, [d.key])
                e.store.add_tombstones(conn, [dict(key=d.key, public_id=d.public_id,
                                                   side="remote", values=values,
                                                   run_id=ctx.run_id)])
                e.store.delete(conn, [d.key])
        except RowsRefused as exc:  # e.g. an app's table refers to the row: kept, reported
            self.applier.row_error(d.key, d.state, f"the database refused to delete the row: "
                                   f"{exc}", keep_status=True)
            return
        ctx.counts["deleted_local"] += 1

