"""SyncState: one contact's bookkeeping, as a row of `sync_state` holds it (StateStore in
`state.py` reads and writes them).

The JSON columns are decoded lazily: a state whose `local_hash` and `remote_updated_ms` show
nothing changed never pays for parsing its base or its CRM copy, and is written back, if at
all, without re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sync import codec
from sync.record import Contact, Fields
from sync.store.schema import STATUSES

__all__ = ["PUBLIC_FIELDS", "SyncState"]

_UNSET: Any = object()
# the public fields, in the order of the columns `from_row` reads
PUBLIC_FIELDS = ("key", "ref_id", "public_id", "status", "base", "base_hash", "local_hash",
                 "remote", "remote_hash", "remote_updated_ms", "last_error", "attempts",
                 "pending_since")
# applied first by replace(): assigning them voids the fingerprint that may be given alongside
_VOIDING = {"base": 0, "remote": 1}


class SyncState:
    """One contact's bookkeeping. Behaves like a dataclass with these fields:

    key, ref_id, public_id, status, base (Fields | None), base_hash, local_hash,
    remote (Contact | None), remote_hash, remote_updated_ms, last_error, attempts, pending_since.

    `base_hash` follows `base`: assigning `base` resets it, reading it computes it when unknown.
    Replace `base` rather than mutating the dict in place. The fingerprints vouch for one
    version only: assigning `base` voids `local_hash`, assigning `remote` voids `remote_hash`.
    """

    __slots__ = ("_base", "_base_hash", "_base_raw", "_remote", "_remote_raw", "attempts",
                 "key", "last_error", "local_hash", "pending_since", "public_id", "ref_id",
                 "remote_hash", "remote_updated_ms", "status")
    key: str
    ref_id: str | None
    public_id: str | None
    status: str
    local_hash: str | None
    remote_hash: str | None
    remote_updated_ms: int | None
    last_error: str | None
    attempts: int
    pending_since: datetime | None
    _base: Any  # Fields | None, or _UNSET until _base_raw is decoded
    _base_raw: str | None
    _base_hash: str | None
    _remote: Any  # Contact | None, or _UNSET until _remote_raw is decoded
    _remote_raw: str | None

    def __init__(self, key: str, ref_id: str | None = None, public_id: str | None = None,
                 status: str = "synced", base: Fields | None = None,
                 base_hash: str | None = None, local_hash: str | None = None,
                 remote: Contact | None = None, remote_hash: str | None = None,
                 remote_updated_ms: int | None = None, last_error: str | None = None,
                 attempts: int = 0, pending_since: datetime | None = None) -> None:
        self.key, self.ref_id, self.public_id, self.status = key, ref_id, public_id, status
        self._base, self._base_raw, self._base_hash = base, None, base_hash
        self._remote, self._remote_raw = remote, None
        self.local_hash, self.remote_updated_ms = local_hash, remote_updated_ms
        self.remote_hash = (remote_hash if remote_hash is not None
                            else remote.digest if remote is not None else None)
        self.last_error, self.attempts, self.pending_since = last_error, attempts, pending_since

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SyncState:
        state = cls.__new__(cls)
        (state.key, state.ref_id, state.public_id, state.status, base, state._base_hash,
         state.local_hash, remote, state.remote_hash, state.remote_updated_ms, state.last_error,
         state.attempts, state.pending_since) = row
        state._base, state._base_raw = (None, None) if base is None else (_UNSET, base)
        state._remote, state._remote_raw = (None, None) if remote is None else (_UNSET, remote)
        return state

    @property
    def base(self) -> Fields | None:
        if self._base is _UNSET:
            self._base = codec.fields_loads(self._base_raw or "{}")
        base: Fields | None = self._base
        return base

    @base.setter
    def base(self, value: Fields | None) -> None:
        # local_hash vouches for a row against one base only: a new base voids it
        self._base, self._base_raw, self._base_hash = value, None, None
        self.local_hash = None

    @property
    def base_hash(self) -> str | None:
        if self._base_hash is None:
            if self._base_raw is not None:
                self._base_hash = codec.text_hash(self._base_raw)
            elif self._base is not None:
                self._base_hash = codec.fields_hash(self._base)
        return self._base_hash

    @base_hash.setter
    def base_hash(self, value: str | None) -> None:
        self._base_hash = value

    @property
    def remote(self) -> Contact | None:
        if self._remote is _UNSET:
            self._remote = codec.contact_loads(self._remote_raw or "{}")
        remote: Contact | None = self._remote
        return remote

    @remote.setter
    def remote(self, value: Contact | None) -> None:
        # remote_hash vouches for one CRM copy: a new copy carries its own, or none
        self._remote, self._remote_raw = value, None
        self.remote_hash = None if value is None else value.digest

    def replace(self, **changes: Any) -> SyncState:
        """A copy with some fields changed (like dataclasses.replace); undecoded JSON is shared."""
        copy = SyncState.__new__(SyncState)
        for name in SyncState.__slots__:
            setattr(copy, name, getattr(self, name))
        for name, value in sorted(changes.items(), key=lambda kv: _VOIDING.get(kv[0], 2)):
            if name not in PUBLIC_FIELDS:
                raise TypeError(f"SyncState has no field {name!r}")
            setattr(copy, name, value)
        return copy

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyncState):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in PUBLIC_FIELDS)
        return f"SyncState({inner})"

    def as_row(self, tenant: str, now: datetime) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"{self.key!r}: status {self.status!r} is not one of {STATUSES}")
        if self._base is _UNSET:
            base, base_hash = self._base_raw, self.base_hash
        else:
            base = None if self._base is None else codec.fields_dumps(self._base)
            base_hash = None if base is None else codec.text_hash(base)
        remote = (self._remote_raw if self._remote is _UNSET
                  else None if self._remote is None else codec.contact_dumps(self._remote))
        return {"tenant": tenant, "key": self.key, "ref_id": self.ref_id,
                "public_id": self.public_id, "status": self.status, "base": base,
                "base_hash": base_hash, "local_hash": self.local_hash, "remote": remote,
                "remote_hash": self.remote_hash,
                "remote_updated_ms": self.remote_updated_ms, "last_error": self.last_error,
                "attempts": self.attempts, "pending_since": self.pending_since,
                "updated_at": now}
