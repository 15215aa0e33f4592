"""A first import with its per-contact work done by worker processes (`import_pool.py`).

Pull hands this the listed items chunk by chunk. Each chunk goes to the pool at once; the
oldest is written once the pool holds as many as its window, so the workers prepare the next
chunks while this process fetches pages and writes. What a worker sends back is written here
exactly as the applier writes a pull-create (one transaction per chunk: the rows, then their
bookkeeping with the fingerprints the insert returned); everything else in the chunk goes
through `Pull.chunk`, the usual path:

- an item the worker did not prepare (a row error, a plan other than the plain create);
- every item of a key seen twice in the chunk, or already handled this cycle (a duplicate in
  the CRM: the usual path picks which one to follow and counts the others);
- a whole chunk with an item that cannot be read, so that the cycle fails on it as it would
  have, before any of the chunk is written;
- a chunk whose worker died, and every later one (the pool is closed, with a warning).

Into an empty `sync_state` (no tenant's rows), its secondary indexes are set aside until the
import ends (`store/deferred_indexes.py`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import structlog

from sync.api.adapter import Listed
from sync.errors import RowsRefused
from sync.import_pool import ImportPool, WorkerLost
from sync.prepare import Prepared
from sync.store import deferred_indexes

if TYPE_CHECKING:
    from sync.pull import Pull

log = structlog.get_logger("crm_sync.import")


class PooledImport:
    def __init__(self, pull: Pull, pool: ImportPool):
        self.pull, self.pool = pull, pool
        self._closed = False
        with pull.e.store.begin() as conn:
            deferred_indexes.set_aside(pull.e.store, conn)

    async def add(self, items: list[Listed]) -> None:
        """Send a chunk to the workers; write the oldest chunks the window no longer holds."""
        if self._closed:
            await self._usual(items)
            return
        self.pool.submit(items)
        while self.pool.full:
            await self._write_next()

    async def finish(self) -> None:
        """Write every chunk still with the workers."""
        while len(self.pool):
            await self._write_next()
        self.pool.end_input()  # the workers exit while the indexes are built (30 ms at 20k)
        self._restore_indexes()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            log.info("import.pool", **self.pool.stats())
            self.pool.close()
        try:
            self._restore_indexes()
        except Exception as exc:  # the import's own failure, if any, is the one to report
            log.warning("import.indexes_not_restored", error=f"{type(exc).__name__}: {exc}",
                        detail="the next cycle puts them back")

    def _restore_indexes(self) -> None:
        deferred_indexes.restore_if_aside(self.pull.e.store)

    async def _write_next(self) -> None:
        try:
            items, results = await self.pool.next()
        except WorkerLost as exc:
            log.warning("import.worker_lost", error=str(exc),
                        detail="this chunk and the rest of the import run in this process")
            pending = [exc.items]
            while len(self.pool):  # the pool is broken: take back what it still held
                try:
                    pending.append((await self.pool.next())[0])
                except WorkerLost as later:
                    pending.append(later.items)
            self.close()
            for items in pending:
                await self._usual(items)
            return
        if any(r is None for r in results):  # unreadable: fail as the usual path fails
            await self._usual(items)
            return
        keys = Counter(r.key if isinstance(r, Prepared) else r for r in results)
        seen = self.pull.ctx.seen_keys
        ready: list[Prepared] = []
        usual: list[Listed] = []
        ready_items: list[Listed] = []
        for item, r in zip(items, results, strict=True):
            if isinstance(r, Prepared) and keys[r.key] == 1 and r.key not in seen:
                ready.append(r)
                ready_items.append(item)
            else:
                usual.append(item)
        if ready and not self._write(ready):
            usual = ready_items + usual  # the usual path finds the rows the database refuses
        if usual:
            await self._usual(usual)

    async def _usual(self, items: list[Listed]) -> None:
        await self.pull.chunk([x.contact() for x in items])

    def _write(self, ready: list[Prepared]) -> bool:
        """What `Applier.apply_chunk` writes for contacts whose plan is a pull-create; False
        when the database refused some row (nothing written)."""
        pull = self.pull
        e, ctx = pull.e, pull.ctx
        queued = pull.applier.queued_mark()
        try:
            with e.store.begin() as conn:
                created = e.local.insert_new(conn, [p.row for p in ready], e.image)
                unprinted = [k for k, v in created.items() if v is None]
                prints = dict(created)
                if unprinted and e.image is not None:
                    prints.update(e.local.fingerprints(conn, unprinted, e.image))
                # in FRESH_COLUMNS' order
                e.store.save_fresh(conn, [(p.key, p.ref_id, p.public_id, p.status, p.base,
                                           p.base_hash, prints.get(p.key), p.remote, p.digest,
                                           p.updated_ms) for p in ready])
                pull.applier.flush_queued(conn)
        except RowsRefused:
            pull.applier.requeue(queued)
            return False
        ctx.seen_keys.update(p.key for p in ready)
        # A key an app inserted meanwhile keeps the app's row, not as agreed: the next cycle
        # takes its values for the app's, written last (as apply_chunk does).
        taken = sum(1 for p in ready if p.key not in created)
        ctx.counts["pulled"] += len(ready)
        ctx.counts["created_local"] += len(ready) - taken
        ctx.counts["skipped_changed_during_cycle"] += taken
        return True
