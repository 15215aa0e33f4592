"""Step 1 of a cycle: the CRM's listing, page by page, planned chunk by chunk.

A quick cycle skips, undecoded, a listed contact whose JSON and row are both as last agreed
(`AgreedRows`, from the SQL pass before the listing). The others are gathered in chunks of
CHUNK. For each chunk the local rows and the bookkeeping are loaded (a first import, which
starts with neither, loads none), every contact is planned three ways by the pure merge, and
the applier writes the chunk (apply.py). Contacts found later (a pending create confirmed, a
contact that only shifted between pages) are planned here too, through `Pull.chunk`.

A long first import hands its chunks to worker processes instead (pooled_import.py), which
send back what the applier would write; what they do not cover comes back to `Pull.chunk`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sync.api.adapter import Listed
from sync.apply import ChunkItem
from sync.convert import RowError
from sync.cycle import CycleContext
from sync.import_pool import ImportPool
from sync.lookup import look_up
from sync.merge import Policy, plan_contact
from sync.pooled_import import PooledImport
from sync.prepare import ImportSetup, contact_key
from sync.record import Contact, Fields
from sync.store.local import Row
from sync.store.state import AGREED_STATUSES, AgreedRows, SyncState

if TYPE_CHECKING:
    from sync.apply import Applier
    from sync.engine import SyncEngine

CHUNK = 500
# A contact crm-sync deleted in the CRM that the listing shows within this time is taken for
# the listing lagging the delete, not for a new contact to pull back; after it, it is one.
LISTING_LAG = timedelta(hours=1)


class Pull:
    def __init__(self, engine: SyncEngine, ctx: CycleContext, applier: Applier):
        self.e, self.ctx, self.applier = engine, ctx, applier
        self._pooled: PooledImport | None = None  # a long first import's workers

    async def run(self, agreed: AgreedRows | None) -> None:
        """The whole listing; `agreed`: a quick cycle's pass (None: every contact is planned)."""
        ctx = self.ctx
        deleted: set[str] = set()  # listed with is_deleted [assumed] 19
        try:
            total = await self._listing(agreed, deleted)
        finally:
            if self._pooled is not None:
                self._pooled.close()
        await self._strangers()
        ctx.listing_complete = True
        shown = len(ctx.seen_public) + len(deleted)
        if total is not None and total - shown > max(10, total // 100):
            # Items shift while the list changes, but not by this much: a server that orders
            # or pages in a way the listing cannot follow. Said, as nothing else would show it.
            ctx.notes.append(f"the listing showed {shown} of the {total} contacts the CRM "
                             "counts: new CRM contacts it missed wait for a listing that shows "
                             "them")

    async def _listing(self, agreed: AgreedRows | None, deleted: set[str]) -> int | None:
        e, ctx = self.e, self.ctx
        buf: list[Listed] = []
        total: int | None = None
        # nothing agreed yet (a first import): no digest to look up, none computed
        known = agreed.agreed_as if agreed is not None and agreed.keys else None
        async for page in e.client.iter_pages(e.page_size, concurrency=e.concurrency,
                                              known=known):
            if total is None:
                self._pooled = self._pool_for(page.total_items)
            total = page.total_items
            seen, seen_keys, skipped = ctx.seen_public, ctx.seen_keys, 0
            for x in page.listed:
                if x.is_deleted:
                    deleted.add(x.public_id)
                    continue
                # Items shift between pages while the list changes: a contact seen twice is
                # processed once.
                if x.public_id in seen:
                    continue
                seen.add(x.public_id)
                # Neither side changed since this contact was agreed: the CRM serves the very
                # JSON it served then, and the row still has its agreed fingerprint.
                if (key := x.agreed_key) is not None and key not in seen_keys:
                    seen_keys.add(key)
                    skipped += 1
                else:
                    buf.append(x)
            ctx.counts["pulled"] += skipped
            ctx.counts["unchanged"] += skipped
            if len(buf) >= CHUNK:
                await self._listed(buf)
                buf = []
                e.analyze_after_bulk(ctx, final=False)
            if e.progress:
                e.progress(len(ctx.seen_public), total)
        if buf:
            await self._listed(buf)
        if self._pooled is not None:
            await self._pooled.finish()
        return total

    def _pool_for(self, total: int) -> PooledImport | None:
        """Worker processes for a long first import (neither side's bookkeeping nor rows yet,
        so each contact's writes follow from its listed item alone), if configured; a short
        one would spend more starting them than they save."""
        e, ctx = self.e, self.ctx
        if (e.import_workers < 1 or total < e.import_min_contacts or ctx.options.dry_run
                or not (ctx.no_states and ctx.no_rows)):
            return None
        setup = ImportSetup(e.conv.spec, e.policy, e.directions, e.read_only_table,
                            e.conv.scales)
        return PooledImport(self, ImportPool(setup, e.import_workers))

    async def _listed(self, items: list[Listed]) -> None:
        if self._pooled is not None:
            await self._pooled.add(items)
        else:
            await self.chunk([x.contact() for x in items])

    async def chunk(self, contacts: list[Contact], *, follow_any: bool = False) -> None:
        """Plan these CRM contacts against their rows and bookkeeping, and apply the plan.

        A key whose agreed contact is none of those listed under it (another contact with its
        refId, which an agent made) waits for the end of the listing (`_strangers`), unless
        `follow_any`: the row follows another contact only once its own is gone."""
        e, ctx, applier = self.e, self.ctx, self.applier
        groups: dict[str, list[Contact]] = {}
        for c in contacts:
            groups.setdefault(contact_key(c), []).append(c)
        keys = [k for k in groups if k not in ctx.seen_keys]
        for k in groups.keys() - set(keys):  # the key was already handled this cycle
            ctx.counts["duplicates_in_crm"] += len(groups[k])
        states = {} if ctx.no_states else e.store.load(keys)
        rows: dict[str, Row] = {}
        prints: dict[str, str] = {}
        if not ctx.no_rows:
            with e.db.connect() as conn:
                rows, prints = e.local.load_fingerprinted(conn, keys, e.image)
        # new to both sides, but deleted here a moment ago: the CRM's listing lags the delete
        fresh = [c.public_id for k in keys if k not in states and k not in rows
                 for c in groups[k] if c.public_id] if not ctx.no_states else []
        gone = e.store.deleted_here_since(ctx.now - LISTING_LAG, fresh) if fresh else set()
        items: list[ChunkItem] = []
        for key in keys:
            state, row = states.get(key), rows.get(key)
            if gone and state is None and row is None and any(
                    c.public_id in gone for c in groups[key]):
                ctx.seen_keys.add(key)
                ctx.counts["listed_after_delete"] += 1
                continue
            if (not follow_any and state is not None and state.public_id is not None
                    and all(c.public_id != state.public_id for c in groups[key])):
                ctx.strangers.setdefault(key, []).extend(groups[key])
                continue
            remote = self._pick(groups[key], state)
            ctx.seen_keys.add(key)
            ctx.counts["pulled"] += 1
            row_hash = prints.get(key)
            try:
                if row is None:
                    local_f = None
                elif state is not None and state.base is not None \
                        and row_hash is not None and state.local_hash == row_hash:
                    local_f = state.base  # the row is as it was when it matched this base
                else:
                    local_f = e.conv.row_fields(row)
                    applier.row_read(key, row)
                superseded = self._superseded(state, remote)
                if superseded is not None:  # the listing lags an update of ours
                    remote, remote_f = superseded
                else:
                    remote_f = self._remote_fields(remote, state, local_f)
            except RowError as exc:  # a value one side cannot hold: this contact only
                applier.row_error(key, state, str(exc), public_id=remote.public_id)
                continue
            if state is not None:
                state = self._sent_shown(e.rebased(state), remote_f)
            base = state.base if state and state.base is not None else None
            if (base is not None and local_f == base and remote_f == base and state is not None
                    and state.status in AGREED_STATUSES
                    and state.public_id == remote.public_id):
                col = e.conv.spec.crm_id_column
                fix_id = row is not None and col is not None and row.get(col) != remote.public_id
                if fix_id:  # the row is about to change: its fingerprint is the next cycle's
                    row_hash = None
                if superseded is not None:  # the CRM's copy is the one recorded
                    if state.local_hash != row_hash:
                        applier.refresh(state, None, row_hash)
                elif (state.remote_updated_ms != remote.updated_ms
                      or state.local_hash != row_hash or state.remote_hash != remote.digest
                      or (state.status == "read_only" and state.last_error is not None)):
                    # unmapped CRM data moved on / the row's fingerprint for next time / a
                    # read-only contact's unsent edit undone (its error no longer holds)
                    applier.refresh(state, remote, row_hash)
                if fix_id:
                    items.append(ChunkItem(key, remote, state, row, local_f, remote_f, None))
                continue
            plan = plan_contact(
                key, base, local_f, remote_f, policy=e.policy, directions=e.directions,
                local_is_newer=self._local_is_newer(row, remote), read_only=remote.ref_id is None
                or e.read_only_table, unagreed=() if base is None else e.conv.unagreed(base))
            items.append(ChunkItem(key, remote, state, row, local_f, remote_f, plan))
        await applier.apply_chunk(items)

    async def _strangers(self) -> None:
        """Keys listed only with contacts other than the one agreed. Where the agreed one was
        listed too, the others are duplicates in the CRM (reported, never touched). Where it
        was not, it is looked up: still there (it only shifted between pages), it is planned
        as usual; gone, the row follows the contact listed under its refId now."""
        ctx = self.ctx
        strangers, ctx.strangers = ctx.strangers, {}
        unseen = [k for k in strangers if k not in ctx.seen_keys]
        for key in strangers.keys() - set(unseen):
            ctx.counts["duplicates_in_crm"] += len(strangers[key])
        if not unseen:
            return
        states = self.e.store.load(unseen)
        found = await look_up(self.e, [states[k] for k in unseen])
        ours: list[Contact] = []
        others: list[Contact] = []
        for key, again in zip(unseen, found, strict=True):
            state = states[key]
            if isinstance(again, str):  # unconfirmed: this contact waits, the others go on
                self.applier.row_error(key, state, again, keep_status=True)
                ctx.seen_keys.add(key)  # not looked up again this cycle (as vanished, say)
            elif again is not None and again.public_id == state.public_id:
                ours.append(again)
                ctx.counts["duplicates_in_crm"] += len(strangers[key])
            elif again is not None:  # the agreed contact is gone: another holds the refId
                others.extend(strangers[key])
        if ours:
            await self.chunk(ours)
        if others:
            await self.chunk(others, follow_any=True)

    def _sent_shown(self, state: SyncState, remote_f: Fields) -> SyncState:
        """A version we sent and have not seen land, kept in `remote`: a push cut short
        (`pushing`, the update sent), or a create sent more than once (`pending_create`, the
        send before the last, which the CRM may show late; Creates._earlier). A field where
        the CRM shows that version's value, not the base's, is ours, so agreed, not an agent's
        edit: the base takes it, and the row's value is pushed, not the old one pulled over
        the app's edits."""
        if (state.status not in ("pushing", "pending_create") or state.base is None
                or state.remote is None):
            return state
        sent = self._as_sent(state.remote, state.base)
        if sent is None:
            return state
        return state.replace(base={k: (remote_f[k] if k in remote_f and remote_f[k] != v
                                       and remote_f[k] == sent.get(k) else v)
                                   for k, v in state.base.items()})

    def _superseded(self, state: SyncState | None, remote: Contact
                    ) -> tuple[Contact, Fields] | None:
        """A contact listed with the very bytes an update of ours was made against (a listing
        that lags the update): the CRM's copy, as we know it, and its fields. Else None.

        After the update (synced): the version sent. While its outcome is unknown (`pushing`:
        the answer lost, or the process killed before it came): the version agreed before it,
        so that what the row changed since is sent again, against that version (an update
        sends only what differs from the copy it is made against).

        An agent's edit changes the bytes, so only that lag is read this way; a full cycle
        reads every contact as listed, so a CRM that never applied an update is found there.
        (Otherwise the recorded bytes are those of the recorded copy itself, as listed.)"""
        if (state is None or self.ctx.options.full or state.remote_updated_ms is not None
                or state.remote_hash is None or state.remote_hash != remote.digest
                or state.remote is None or state.base is None):
            return None
        if state.status in AGREED_STATUSES or state.status == "error":
            # in error after the update (a later push the CRM did not take in full, say): the
            # version sent is still the one the CRM holds
            known = state.remote
        elif state.status == "pushing":
            known = self.e.conv.to_contact(state.ref_id or remote.ref_id, state.base,
                                           state.remote)
        else:
            return None
        fields = self._as_sent(known, state.base)
        if fields is None:
            return None
        return replace(known, digest=remote.digest, public_id=remote.public_id), fields

    def _remote_fields(self, remote: Contact, state: SyncState | None,
                       local_f: Fields | None) -> Fields:
        """The CRM's side. A value its column cannot hold (an agent's `abc` in an integer
        field) is a row error, unless the row changed that field since it was agreed: the
        row's value is then the fix, so the CRM's is taken as the agreed one and the row's
        pushed over it."""
        conv = self.e.conv
        try:
            return conv.remote_fields(remote)
        except RowError:
            base = state.base if state is not None else None
            if base is None or local_f is None:
                raise
            unfit: list[str] = []
            remote_f = conv.remote_fields(remote, fallback=base, unfit=unfit)
            if not unfit or any(local_f.get(k) == base.get(k) for k in unfit):
                raise
            return remote_f

    def _as_sent(self, sent: Contact, base: Fields) -> Fields | None:
        """A version we sent, as the merge compares it. A value the mapping can no longer
        read from it (its column retyped since) counts as not sent: the base's is taken, or,
        if the base has none, nothing is taken for ours."""
        try:
            return self.e.conv.remote_fields(sent, fallback=base)
        except RowError:
            return None

    def _pick(self, candidates: list[Contact], state: SyncState | None) -> Contact:
        """Two CRM contacts with one refId (a duplicate someone created): follow the one we
        know; else the oldest. The other is reported, never deleted: it may hold an agent's
        work."""
        if len(candidates) == 1:
            return candidates[0]
        self.ctx.counts["duplicates_in_crm"] += len(candidates) - 1
        known = state.public_id if state else None
        for c in candidates:
            if c.public_id == known:
                return c
        return min(candidates, key=lambda c: (c.created_ms or 0, c.public_id or ""))

    def _local_is_newer(self, row: Row | None, remote: Contact) -> bool | None:
        col = self.e.conv.spec.updated_at_column
        if self.e.policy is not Policy.NEWEST_WINS or not col or row is None:
            return None
        stamp = row.get(col)
        if not isinstance(stamp, datetime) or remote.updated_ms is None:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp() * 1000 > remote.updated_ms
