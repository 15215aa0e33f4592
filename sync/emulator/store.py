"""The in-memory contact table: contacts by public_id, lookup indexes, cached list orders.

Built for 100k contacts paged over HTTP: a list order is computed once (O(n log n)) and reused
until the data changes (`version`), so a page is an O(page) slice; `get` is an index lookup.
Deleted contacts stay in the table (details still shows them, with is_deleted true) but leave the
indexes and the list.

With `file` set (`EmulatorConfig.db_path`), every change is also written through to a SQLite file
(`ContactFile`): `insert` and `edit` are the only ways a contact changes, and both do it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sync.emulator.model import StoredContact, display_values, matches_keyword, national_phone

if TYPE_CHECKING:
    from sync.emulator.dbfile import ContactFile

# index name -> how a contact's keys for it are read; lookups use the same normalisation.
_INDEXED: dict[str, Callable[[StoredContact], Iterable[str]]] = {
    "ref_id": lambda c: [c.ref_id] if c.ref_id else [],
    "ref_code": lambda c: [c.ref_code] if c.ref_code else [],
    "phone": lambda c: {national_phone(n) for n, _ in c.phones},
    "email": lambda c: {e.casefold() for e, _ in c.emails},
}


def lookup_key(kind: str, value: str) -> str:
    """Normalise a lookup value the way the index stores it."""
    if kind == "phone":
        return national_phone(value)
    if kind == "email":
        return value.strip().casefold()
    return value


class ContactStore:
    """Contacts and their indexes. Not thread-safe by itself: `Emulator` holds the lock."""

    def __init__(self) -> None:
        self.by_id: dict[str, StoredContact] = {}
        self.version = 0  # bumped by every change; invalidates the cached orders
        self._seq = 0
        self._index: dict[str, dict[str, str | list[str]]] = {name: {} for name in _INDEXED}
        self._orders: dict[str, tuple[int, list[StoredContact]]] = {}
        self.file: ContactFile | None = None  # set: every change is written through

    def __len__(self) -> int:
        return len(self.by_id)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def insert(self, contact: StoredContact) -> None:
        if contact.public_id in self.by_id:
            raise ValueError(f"duplicate public_id {contact.public_id}")
        self.by_id[contact.public_id] = contact
        self._add_to_index(contact)
        self.version += 1
        if self.file is not None:
            self.file.upsert(contact)

    def load(self, contacts: list[StoredContact]) -> None:
        """Insert contacts read back from the file (seq order), not writing them again; the
        next seq continues after theirs."""
        for contact in contacts:
            self.by_id[contact.public_id] = contact
            if not contact.is_deleted:
                self._add_to_index(contact)
            self._seq = max(self._seq, contact.seq)
        self.version += 1

    def edit(self, contact: StoredContact, apply: Callable[[StoredContact], None]) -> None:
        """Change a stored contact through `apply`, keeping indexes and caches right."""
        self._remove_from_index(contact)
        apply(contact)
        contact.cached_json = None
        if not contact.is_deleted:
            self._add_to_index(contact)
        self.version += 1
        if self.file is not None:
            self.file.upsert(contact)

    def invalidate_wire(self) -> None:
        """Forget every cached response (the layout changed, so dynamic fields render anew)."""
        for contact in self.by_id.values():
            contact.cached_json = None
        self.version += 1

    def live(self) -> Iterator[StoredContact]:
        return (c for c in self.by_id.values() if not c.is_deleted)

    def find(self, kind: str, value: str) -> list[StoredContact]:
        """Live contacts whose `kind` (ref_id, ref_code, phone, email) matches, oldest first."""
        held = self._index[kind].get(lookup_key(kind, value), [])
        found = [self.by_id[i] for i in ([held] if isinstance(held, str) else held)]
        return sorted((c for c in found if not c.is_deleted), key=lambda c: c.seq)

    def ordered(self, order: str) -> list[StoredContact]:
        """Live contacts in a deterministic order, cached until the next change."""
        cached = self._orders.get(order)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        items = list(self.live())  # dict order is insertion order, i.e. "created"
        if order == "updated_desc":
            items.sort(key=lambda c: (-c.updated_ms, -c.seq))
        elif order == "public_id":
            items.sort(key=lambda c: c.public_id)
        self._orders = {order: (self.version, items)}  # keep one order: memory stays O(n)
        return items

    def page(self, order: str, offset: int, size: int, rng: random.Random,
             keyword: str | None = None,
             filters: list[tuple[str, list[str]]] | None = None,
             ) -> tuple[list[StoredContact], int]:
        """One page of live contacts and the total they were cut from.

        "random" draws a fresh permutation per call (modelled as a uniform sample of the page),
        so paging through it both repeats and misses contacts: nothing may rely on list order.
        """
        base = self.ordered("created" if order == "random" else order)
        if keyword or filters:  # searches are O(n): rare, and not on the sync's hot path
            base = [c for c in base if _selected(c, keyword, filters or [])]
        total = len(base)
        if order == "random":
            return rng.sample(base, max(0, min(size, total - offset))), total
        return base[offset:offset + size], total

    # An index maps a key to one public_id (a str: the common case costs no list) or to a list
    # of them when several contacts share the key (a duplicated add-more, a shared landline).
    def _add_to_index(self, contact: StoredContact) -> None:
        pid = contact.public_id
        for name, keys in _INDEXED.items():
            index = self._index[name]
            for key in keys(contact):
                held = index.get(key)
                if held is None:
                    index[key] = pid
                elif isinstance(held, str):
                    index[key] = [held, pid]
                else:
                    held.append(pid)

    def _remove_from_index(self, contact: StoredContact) -> None:
        pid = contact.public_id
        for name, keys in _INDEXED.items():
            index = self._index[name]
            for key in keys(contact):
                held = index.get(key)
                if held == pid:
                    del index[key]
                elif isinstance(held, list) and pid in held:
                    held.remove(pid)
                    if len(held) == 1:
                        index[key] = held[0]


def _selected(c: StoredContact, keyword: str | None,
              filters: list[tuple[str, list[str]]]) -> bool:
    if keyword and not matches_keyword(c, keyword):
        return False
    for code, wanted in filters:
        values = display_values(c, code)
        if code == "contact_owner" and not values and "unassigned" in wanted:
            continue  # [doc] "unassigned" selects contacts without an owner
        folded = {w.casefold() for w in wanted}
        if not any(v.casefold() in folded for v in values):
            return False
    return True


def parse_filters(raw: Any) -> list[tuple[str, list[str]]]:
    """The list body's `filters` [doc]; ValueError for a shape the API would refuse."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("filters must be an array")
    out: list[tuple[str, list[str]]] = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("field_code"), str):
            raise ValueError("a filter needs a field_code")
        values = entry.get("value", [])
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("a filter's value must be an array of strings")
        out.append((entry["field_code"], values))
    return out
