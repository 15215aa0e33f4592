"""`bench.soak`'s changes to both sides between two cycles: the app's through SQL on the local
table, the CRM agents' through the emulator's admin routes. Made by the driver's process, not
the measured daemon's, so that the daemon's memory is its own."""

from __future__ import annotations

import argparse
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
    import sqlalchemy as sa


class Edits:
    """Both sides' changes between two cycles: the app's (SQL on the local table) and the CRM
    agents' (the emulator's admin routes)."""

    def __init__(self, db_url: str, emulator_url: str, opts: argparse.Namespace) -> None:
        import httpx
        import sqlalchemy as sa

        self.db: sa.Engine = sa.create_engine(db_url)
        self.http: httpx.Client = httpx.Client(base_url=emulator_url, timeout=30.0)
        self.opts, self.rng = opts, random.Random(opts.seed)
        self.totals: dict[str, int] = {}
        self.crm_deleted: set[str] = set()

    def _count(self, what: str, n: int) -> None:
        self.totals[what] = self.totals.get(what, 0) + n

    def apply(self, cycle: int) -> dict[str, int]:
        import sqlalchemy as sa

        o = self.opts
        with self.db.connect() as conn:
            synced = [(str(k), str(c)) for k, c in conn.execute(sa.text(
                "SELECT ref_id, crm_id FROM contacts WHERE crm_id IS NOT NULL ORDER BY ref_id"))]
        # Contacts deleted in the CRM stay in the table until a full cycle (a quick listing
        # does not show deletions): they are left alone meanwhile, as an edit to one is a
        # conflict (edited here, deleted there) and an agent's edit of one a 404.
        self.crm_deleted &= {c for _, c in synced}
        live = [r for r in synced if r[1] not in self.crm_deleted]
        # Rows no refId names (agents' contacts, `crm:` keys) cannot be updated through the
        # API: an app edit of one is a read-only edit, reported again every cycle, so the
        # app's edits and deletes pick rows it created (refIds), the agents' any contact.
        own = [r for r in live if not r[0].startswith("crm:")]
        app = self.rng.sample(own, min(o.app_updates + o.app_deletes, len(own)))
        picked = set(app)
        rest = [r for r in live if r not in picked]
        crm = self.rng.sample(rest, min(o.crm_updates + o.crm_deletes, len(rest)))
        app_upd, app_del = app[:o.app_updates], app[o.app_updates:]
        crm_upd, crm_del = crm[:o.crm_updates], crm[o.crm_updates:]
        self.crm_deleted.update(c for _, c in crm_del)
        done: dict[str, int] = {}
        with self.db.begin() as conn:  # one transaction, as an app's batch would be
            if app_upd:
                conn.execute(sa.text("UPDATE contacts SET job_title = :jt, note = :nt "
                                     "WHERE ref_id = :k"),
                             [{"k": k, "jt": f"Soak job {cycle}-{i}", "nt": f"Ghi chú {cycle}"}
                              for i, (k, _) in enumerate(app_upd)])
            if app_del:
                conn.execute(sa.text("DELETE FROM contacts WHERE ref_id = :k"),
                             [{"k": k} for k, _ in app_del])
            if o.app_inserts:
                conn.execute(sa.text(
                    "INSERT INTO contacts (ref_id, full_name, phone, email) "
                    "VALUES (:k, :n, :p, :e)"),
                    [{"k": f"SOAK-{cycle:05d}-{i:03d}", "n": f"Khách Soak {cycle}-{i}",
                      "p": f"039{cycle * 100 + i:07d}", "e": f"soak{cycle}-{i}@example.vn"}
                     for i in range(o.app_inserts)])
        done.update(app_updates=len(app_upd), app_deletes=len(app_del),
                    app_inserts=o.app_inserts)
        missing = 0
        for i, (_, crm_id) in enumerate(crm_upd):
            r = self.http.patch(f"/_emulator/contacts/{crm_id}", json={
                "job_title": f"CRM soak {cycle}-{i}", "note": f"Sửa trong CRM {cycle}"})
            missing += r.status_code == 404
            if r.status_code != 404:
                r.raise_for_status()
        for i in range(o.crm_creates):
            self.http.post("/_emulator/contacts", json={
                "full_name": f"Khách CRM {cycle}-{i}", "phones": [f"038{cycle * 100 + i:07d}"],
                "emails": [f"crm{cycle}-{i}@example.vn"]}).raise_for_status()
        for _, crm_id in crm_del:
            r = self.http.delete(f"/_emulator/contacts/{crm_id}")
            missing += r.status_code == 404
            if r.status_code != 404:
                r.raise_for_status()
        done.update(crm_updates=len(crm_upd), crm_creates=o.crm_creates,
                    crm_deletes=len(crm_del), crm_missing=missing)
        for k, v in done.items():
            self._count(k, v)
        return done

    def local_rows(self) -> int:
        import sqlalchemy as sa

        with self.db.connect() as conn:
            return int(conn.scalar(sa.text("SELECT count(*) FROM contacts")) or 0)

    def close(self) -> None:
        self.http.close()
        self.db.dispose()
