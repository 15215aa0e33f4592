"""A first import's per-contact work as plain data, so that it can run in another process.

On a first import (no bookkeeping, an empty local table) every listed contact is new to both
sides, and what the cycle writes for it depends on the listed item alone: the merge plans a
pull-create, and the applier inserts the mapped row and records both versions as agreed. That
work (decoding the item, reading it into the canonical Contact and Fields, planning it, making
the row's values and the bookkeeping's JSON texts) is most of an import's CPU; `prepare` does
it and returns only what the writes need, cheap to send between processes.

Pure: the same functions the in-process path runs (adapter, converter, merge, codec), no I/O.
An item this path does not cover comes back as its key, and the caller plans it the usual
way, so every unusual case (a value one side cannot hold, a plan other than the plain create)
keeps one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sync import codec
from sync.api.adapter import Listed, contact_from_json, item_digest
from sync.convert import CRM_KEY_PREFIX, Converter
from sync.mapping import MappingSpec
from sync.merge import Direction, Policy, PullCreate, SaveBase, plan_contact
from sync.record import Contact

__all__ = ["ImportSetup", "Prepared", "contact_key", "prepare", "prepare_all", "prepare_json"]


def contact_key(c: Contact) -> str:
    """The local key: the partner id, or one derived from the CRM id for UI-made contacts."""
    return c.ref_id or f"{CRM_KEY_PREFIX}{c.public_id}"


@dataclass(frozen=True)
class ImportSetup:
    """What `prepare` needs of the engine, as the engine has it; picklable, sent once to each
    worker."""

    spec: MappingSpec
    policy: Policy
    directions: Mapping[str, Direction]  # the engine's: spec.directions()
    read_only_table: bool  # the engine's: a pull-only table
    scales: Mapping[str, int] = field(default_factory=dict)  # the converter's

    def converter(self) -> Converter:
        """The engine's converter, made again (in a worker process)."""
        return Converter(self.spec, self.scales)


class Prepared(NamedTuple):
    """One listed contact, ready to write: its local row and its bookkeeping, as the applier
    would have made them from the plan (`Applier.apply_chunk`, a PullCreate and a SaveBase)."""

    key: str
    public_id: str | None
    ref_id: str | None
    created_ms: int | None
    updated_ms: int | None
    digest: str | None
    row: dict[str, Any]  # the local row to insert, key and crm id included
    status: str  # synced, or read_only (no refId, or a pull-only table)
    base: str  # codec JSON of the agreed Fields
    base_hash: str
    remote: str  # codec JSON of the Contact


def prepare(item: Listed, conv: Converter, setup: ImportSetup) -> Prepared | str | None:
    """`item` as a first import writes it; else its key (plan it the usual way), or None when
    it cannot even be read (the usual path then fails as it does on such an item)."""
    return prepare_json(item.raw, item.digest, conv, setup)


def prepare_json(raw: bytes, digest: str | None, conv: Converter, setup: ImportSetup
                 ) -> Prepared | str | None:
    """`prepare` of the listed item with this JSON (and digest, if already made): all a
    worker process is sent of an item."""
    try:
        contact = contact_from_json(raw, digest=digest or item_digest(raw))
    except Exception:  # the usual path meets it again and deals with it
        return None
    key = contact_key(contact)
    try:
        return _prepared(key, contact, conv, setup) or key
    except Exception:  # e.g. a row error, which the usual path records
        return key


def _prepared(key: str, contact: Contact, conv: Converter, setup: ImportSetup
              ) -> Prepared | None:
    fields = conv.remote_fields(contact)
    read_only = contact.ref_id is None or setup.read_only_table
    plan = plan_contact(key, None, None, fields, policy=setup.policy,
                        directions=setup.directions, read_only=read_only)
    if plan.actions != (PullCreate(key, fields), SaveBase(key, fields)):
        return None
    row = {conv.spec.key_column: key, **conv.row_values(fields)}
    if conv.spec.crm_id_column:
        row[conv.spec.crm_id_column] = contact.public_id
    base = codec.fields_dumps(fields)
    return Prepared(key, contact.public_id, contact.ref_id, contact.created_ms,
                    contact.updated_ms, contact.digest, row,
                    "read_only" if read_only else "synced", base, codec.text_hash(base),
                    codec.contact_dumps(contact))


def prepare_all(items: Sequence[Listed], conv: Converter, setup: ImportSetup
                ) -> list[Prepared | str | None]:
    return [prepare(x, conv, setup) for x in items]
