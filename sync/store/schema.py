"""The bookkeeping tables (SQLAlchemy Core). The mapped local table lives in `store/local.py`.

Every table carries a `tenant` column so several CRM tenants can share one database. JSON is
stored as text made by `sync.codec` (deterministic, the same on SQLite and PostgreSQL).
Timestamps are timezone-aware UTC (`UtcDateTime`): PostgreSQL stores `timestamptz`; SQLite
stores UTC text, which sorts and compares correctly.

The migrations in `sync/migrations/versions/` must create exactly these tables: a test
compares them with alembic's `compare_metadata`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)

__all__ = [
    "CONFLICT_RESOLUTIONS", "NOTE_STATUSES", "RUN_COUNT_COLUMNS", "RUN_KINDS", "RUN_STATUSES",
    "STATUSES", "TABLE_NAMES", "TOMBSTONE_SIDES", "UtcDateTime", "conflicts", "metadata",
    "note_outbox", "sync_lease", "sync_runs", "sync_state", "tombstones", "utcnow",
]

STATUSES = ("synced", "pending_create", "pushing", "error", "conflict", "read_only")
RUN_KINDS = ("sync", "full", "resync", "dry_run")
RUN_STATUSES = ("running", "ok", "partial", "failed", "refused")
RUN_COUNT_COLUMNS = (
    "pulled", "created_local", "updated_local", "deleted_local", "created_remote",
    "updated_remote", "deleted_remote", "conflicts", "errors",
)
CONFLICT_RESOLUTIONS = ("local", "remote", "manual")
TOMBSTONE_SIDES = ("local", "remote")
NOTE_STATUSES = ("pending", "in_flight", "sent", "failed", "unknown")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that only accepts aware datetimes and always returns UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime (give it a timezone): {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


metadata = MetaData()


def _tenant() -> Column[str]:
    return Column("tenant", String(64), nullable=False)


def _count(name: str) -> Column[int]:
    return Column(name, Integer, nullable=False, default=0, server_default="0")


sync_state = Table(
    "sync_state", metadata,
    _tenant(),
    # the local key: the ref_id, or "crm:<public_id>" for a CRM-created contact without one
    Column("key", String(255), nullable=False),
    Column("ref_id", String(255)),
    Column("public_id", String(255)),
    Column("status", String(20), nullable=False),  # one of STATUSES
    Column("base", Text),  # codec JSON of the Fields both sides last agreed on
    Column("base_hash", String(64)),
    # the local row's fingerprint when it last held `base`, computed by the database
    # (store/local.py: an exact image on SQLite, a 64-bit hash on PostgreSQL)
    Column("local_hash", Text),
    # codec JSON of the last full Contact seen in the CRM; for a create the CRM has not shown
    # yet (public_id NULL), the earlier send, if it was sent more than once
    Column("remote", Text),
    Column("remote_hash", String(64)),  # digest of that contact's listed JSON, as served
    Column("remote_updated_ms", BigInteger),
    Column("last_error", Text),
    _count("attempts"),
    Column("pending_since", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant", "key", name="pk_sync_state"),
    Index("ix_sync_state_tenant_public_id", "tenant", "public_id"),
    Index("ix_sync_state_tenant_status", "tenant", "status"),
    # the few rows with an error that kept their status (StateStore.count_errors, each cycle)
    Index("ix_sync_state_tenant_errors", "tenant", "status",
          sqlite_where=text("last_error IS NOT NULL"),
          postgresql_where=text("last_error IS NOT NULL")),
)

sync_runs = Table(
    "sync_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _tenant(),
    Column("kind", String(20), nullable=False),  # one of RUN_KINDS
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("status", String(20), nullable=False),  # one of RUN_STATUSES
    *(_count(name) for name in RUN_COUNT_COLUMNS),
    _count("api_calls"),
    Column("api_calls_by_endpoint", Text),  # JSON object endpoint -> calls
    Column("message", Text),
    Column("details", Text),  # JSON object: the run's other non-zero counts (migration 0006)
    Index("ix_sync_runs_tenant_id", "tenant", "id"),
    # the runs still `running` (close_abandoned_runs, each cycle): runs are never pruned
    Index("ix_sync_runs_running", "tenant", sqlite_where=text("status = 'running'"),
          postgresql_where=text("status = 'running'")),
)

conflicts = Table(
    "conflicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _tenant(),
    Column("key", String(255), nullable=False),
    Column("field", String(255), nullable=False),
    Column("base_value", Text),  # codec JSON of one field value
    Column("local_value", Text),
    Column("remote_value", Text),
    Column("policy", String(20), nullable=False),
    Column("resolution", String(20), nullable=False),  # one of CONFLICT_RESOLUTIONS
    Column("run_id", Integer),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime()),  # NULL while open (policy manual)
    Index("ix_conflicts_tenant_key", "tenant", "key"),
    Index("ix_conflicts_tenant_resolved_at", "tenant", "resolved_at"),
)

tombstones = Table(
    "tombstones", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _tenant(),
    Column("key", String(255), nullable=False),
    Column("public_id", String(255)),
    Column("side", String(10), nullable=False),  # which side deleted it: TOMBSTONE_SIDES
    Column("values", Text, nullable=False),  # JSON: the last known values (row or fields)
    Column("run_id", Integer),
    Column("deleted_at", UtcDateTime(), nullable=False),
    Index("ix_tombstones_tenant_key", "tenant", "key"),
    Index("ix_tombstones_tenant_side_deleted_at", "tenant", "side", "deleted_at"),
)

sync_lease = Table(
    "sync_lease", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("acquired_at", UtcDateTime(), nullable=False),
)

# The notes outbox (sync/notes.py): one row per local note once it has been looked at.
note_outbox = Table(
    "note_outbox", metadata,
    _tenant(),
    # the local notes table the note is in: ids are only unique within one (a notes table
    # the mapping points to anew starts from 1 again); '' for rows an earlier version wrote,
    # which NotesOutbox.ensure_table gives the tenant's notes table of now
    Column("notes_table", String(255), nullable=False, server_default=""),
    Column("note_id", BigInteger, nullable=False),  # the local notes table's id
    Column("status", String(20), nullable=False),  # one of NOTE_STATUSES
    Column("phone", Text),  # the normalised phone it was (to be) sent to
    _count("attempts"),  # sends started (rows marked in_flight)
    Column("last_error", Text),
    Column("sent_at", UtcDateTime()),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant", "notes_table", "note_id", name="pk_note_outbox"),
    Index("ix_note_outbox_tenant_status", "tenant", "status"),
    # each cycle asks whether another tenant sends from its notes table (refuse_shared): an
    # index read, not a scan of every note ever sent
    Index("ix_note_outbox_notes_table_tenant", "notes_table", "tenant"),
)

TABLE_NAMES: frozenset[str] = frozenset(metadata.tables)
