"""The record of what happened: sync runs, conflicts and tombstones (mixed into StateStore).

Runs are written in their own short transactions (a failed cycle still leaves its run row);
conflicts and tombstones take the caller's Connection so they commit with the change they
describe.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, func, literal_column, select

from sync.codec import contact_to_json, dumps, loads, value_from_json, value_to_json
from sync.errors import StoreError
from sync.record import Contact
from sync.store.schema import (
    CONFLICT_RESOLUTIONS,
    RUN_COUNT_COLUMNS,
    RUN_KINDS,
    RUN_STATUSES,
    TOMBSTONE_SIDES,
    conflicts,
    sync_runs,
    tombstones,
    utcnow,
)

__all__ = ["ABANDONED_RUN", "Journal", "jsonable"]


def _check(what: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {allowed}")


def jsonable(value: Any) -> Any:
    """Any value as JSON data, for tombstones and conflicts: never fails; field values are
    encoded as `sync.codec` does, so they decode back to themselves."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return value_to_json(value)
    if isinstance(value, tuple):
        return {"$list": [jsonable(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {"$set": sorted((jsonable(v) for v in value), key=dumps)}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Contact):
        return contact_to_json(value)
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    return str(value)


def _value_text(value: Any) -> str:
    return dumps(jsonable(value))


def _value_of(text: str | None) -> Any:
    if text is None:
        return None
    data = loads(text)
    try:
        return value_from_json(data)
    except (ValueError, TypeError):
        return data


ABANDONED_RUN = "abandoned: its process stopped before the cycle finished"
log = structlog.get_logger("crm_sync.store")


class Journal:
    """sync_runs, conflicts and tombstones of one tenant."""

    engine: Engine
    tenant: str

    # --- runs ----------------------------------------------------------------------------

    def start_run(self, kind: str) -> int:
        """Record a run as started (status `running`); returns its id."""
        _check("run kind", kind, RUN_KINDS)
        with self.engine.begin() as conn:
            result = conn.execute(sync_runs.insert().values(
                tenant=self.tenant, kind=kind, started_at=utcnow(), status="running"))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def finish_run(self, run_id: int, *, status: str, counts: Mapping[str, int],
                   api_calls: Mapping[str, int], message: str | None = None,
                   details: Mapping[str, int] | None = None) -> None:
        """Close a run: its status, counts (keys from RUN_COUNT_COLUMNS), API calls per
        endpoint; `details`: its other counts (the non-zero ones are kept)."""
        _check("run status", status, RUN_STATUSES)
        unknown = set(counts) - set(RUN_COUNT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run counts {sorted(unknown)}; known: {RUN_COUNT_COLUMNS}")
        values: dict[str, Any] = {name: int(n) for name, n in counts.items()}
        kept = {k: int(v) for k, v in (details or {}).items() if v}
        values.update(
            status=status, finished_at=utcnow(), message=message,
            api_calls=sum(api_calls.values()),
            api_calls_by_endpoint=dumps({k: int(v) for k, v in api_calls.items()}),
            details=dumps(kept) if kept else None)
        with self.engine.begin() as conn:
            result = conn.execute(sync_runs.update().where(
                sync_runs.c.tenant == self.tenant, sync_runs.c.id == run_id).values(values))
            if result.rowcount != 1:
                raise StoreError(f"no sync run {run_id} for tenant {self.tenant!r}")

    def close_abandoned_runs(self) -> list[int]:
        """Close every run of this tenant still `running` as failed (ABANDONED_RUN); their
        ids. Only while holding the tenant's lock: then no cycle of it can be running, so such
        a run is one whose process died (kill -9, power loss) or was cancelled."""
        # the status as a literal, as the partial index's WHERE has it: SQLite uses a partial
        # index only for a query whose WHERE spells its condition
        query = select(sync_runs.c.id).where(sync_runs.c.tenant == self.tenant,
                                              sync_runs.c.status == literal_column("'running'"))
        with self.engine.connect() as conn:
            ids = [int(i) for i in conn.execute(query.order_by(sync_runs.c.id)).scalars()]
        for run_id in ids:
            self.finish_run(run_id, status="failed", counts={}, api_calls={},
                            message=ABANDONED_RUN)
            log.warning("run.abandoned_closed", abandoned_run_id=run_id)
        return ids

    def last_runs(self, n: int = 10) -> list[dict[str, Any]]:
        """The newest runs first, as dicts of their columns (api_calls_by_endpoint and
        details decoded)."""
        query = (select(sync_runs).where(sync_runs.c.tenant == self.tenant)
                 .order_by(sync_runs.c.id.desc()).limit(n))
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            for name in ("api_calls_by_endpoint", "details"):
                row[name] = loads(row[name]) if row[name] else {}
        return rows

    # --- conflicts -------------------------------------------------------------------------

    def add_conflicts(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Record conflicts. Each row: key, field, base_value, local_value, remote_value (field
        values), policy, resolution (local|remote|manual), run_id; optional created_at and
        resolved_at (default: open when the resolution is `manual`, else resolved now)."""
        now = utcnow()
        records = []
        for row in rows:
            _check("conflict resolution", row["resolution"], CONFLICT_RESOLUTIONS)
            created = row.get("created_at") or now
            resolved = row.get("resolved_at",
                               None if row["resolution"] == "manual" else created)
            records.append({
                "tenant": self.tenant, "key": row["key"], "field": row["field"],
                "base_value": _value_text(row.get("base_value")),
                "local_value": _value_text(row.get("local_value")),
                "remote_value": _value_text(row.get("remote_value")),
                "policy": row["policy"], "resolution": row["resolution"],
                "run_id": row.get("run_id"), "created_at": created, "resolved_at": resolved,
            })
        if records:
            conn.execute(conflicts.insert(), records)

    def _open(self) -> Any:
        return conflicts.c.tenant == self.tenant, conflicts.c.resolved_at.is_(None)

    def open_conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Unresolved conflicts, oldest first, with their values decoded."""
        query = select(conflicts).where(*self._open()).order_by(conflicts.c.id).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            for name in ("base_value", "local_value", "remote_value"):
                row[name] = _value_of(row[name])
        return rows

    def count_open_conflicts(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(conflicts)
                                   .where(*self._open())) or 0)

    def resolve_conflicts(self, conn: Connection, ids: Iterable[int], resolution: str) -> int:
        """Mark open conflicts resolved (e.g. after an operator's decision); returns how many."""
        _check("conflict resolution", resolution, CONFLICT_RESOLUTIONS)
        return self._close(conn, conflicts.c.id.in_(list(ids)), resolution=resolution)

    def close_conflicts(self, conn: Connection, keys: Collection[str]) -> int:
        """Close the open conflicts of these contacts, which the merge no longer finds (both
        sides agree again, or a policy now decides): resolved now, by hand as recorded."""
        return self._close(conn, conflicts.c.key.in_(list(keys))) if keys else 0

    def _close(self, conn: Connection, which: Any, **values: Any) -> int:
        result = conn.execute(conflicts.update().where(*self._open(), which)
                              .values(resolved_at=utcnow(), **values))
        return result.rowcount

    # --- tombstones ------------------------------------------------------------------------

    def add_tombstones(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Keep deleted contacts' last values. Each row: key, public_id, side (local|remote:
        which side deleted it), values (a row mapping, Fields or a Contact), run_id; optional
        deleted_at."""
        now = utcnow()
        records = []
        for row in rows:
            _check("tombstone side", row["side"], TOMBSTONE_SIDES)
            records.append({
                "tenant": self.tenant, "key": row["key"], "public_id": row.get("public_id"),
                "side": row["side"], "values": _value_text(row.get("values") or {}),
                "run_id": row.get("run_id"), "deleted_at": row.get("deleted_at") or now,
            })
        if records:
            conn.execute(tombstones.insert(), records)

    def deleted_here_since(self, since: datetime | None, public_ids: Collection[str]
                           ) -> set[str]:
        """Of these CRM ids, those of contacts crm-sync deleted in the CRM (their row deleted
        by an app) since `since` (None: ever)."""
        if not public_ids:
            return set()
        query = select(tombstones.c.public_id).where(
            tombstones.c.tenant == self.tenant, tombstones.c.side == "local",
            tombstones.c.public_id.in_(list(public_ids)))
        if since is not None:
            query = query.where(tombstones.c.deleted_at >= since)
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def last_tombstones(self, limit: int = 100, key: str | None = None) -> list[dict[str, Any]]:
        """The newest tombstones first (of one key if given), `values` as decoded JSON data."""
        query = select(tombstones).where(tombstones.c.tenant == self.tenant)
        if key is not None:
            query = query.where(tombstones.c.key == key)
        query = query.order_by(tombstones.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row["values"] = loads(row["values"])
        return rows
