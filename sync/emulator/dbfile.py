"""The emulator's optional SQLite file (`EmulatorConfig.db_path`, `crm-sync emulator --db`).

Only the contacts live in the file: one table, `contacts(public_id, seq, data)`, `data` the JSON
of a `StoredContact`'s fields except its cached response. Tokens, pending add-more items, notes
and stats stay in memory. Imported only when a path is configured, so the in-memory emulator
never pays for `sqlite3`.

One connection (check_same_thread=False) serves every thread; `Emulator.lock` serialises its use,
as every change already runs under it. WAL mode, synchronous=NORMAL: a commit per change costs no
fsync, and a crashed emulator loses nothing it acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from sync.emulator.model import StoredContact

_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StoredContact) if f.name != "cached_json")
_values = attrgetter(*_FIELDS)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one, reused
_UPSERT = ("INSERT INTO contacts (public_id, seq, data) VALUES (?, ?, ?) "
           "ON CONFLICT (public_id) DO UPDATE SET seq = excluded.seq, data = excluded.data")


def _row(c: StoredContact) -> tuple[str, int, str]:
    return c.public_id, c.seq, _encode(dict(zip(_FIELDS, _values(c), strict=True)))


def _contact(data: str) -> StoredContact:
    d: dict[str, Any] = json.loads(data)
    # JSON has no tuples: put back the ones StoredContact holds.
    d["phones"] = tuple(tuple(p) for p in d["phones"])
    d["emails"] = tuple(tuple(e) for e in d["emails"])
    d["tags"] = tuple(d["tags"])
    d["custom"] = tuple(tuple(x) for x in d["custom"])
    d["dynamic"] = {code: tuple(values) for code, values in d["dynamic"].items()}
    return StoredContact(**d)


class ContactFile:
    """The contacts table of one SQLite file. ValueError (naming the path) if it cannot be used."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"emulator database {path}: directory {parent} does not exist")
        try:
            self._db = sqlite3.connect(Path(path).expanduser(), check_same_thread=False)
        except sqlite3.Error as exc:
            raise ValueError(f"emulator database {path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS contacts (public_id TEXT PRIMARY KEY,"
                             " seq INTEGER NOT NULL, data TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.Error as exc:
            self._db.close()
            raise ValueError(f"emulator database {path}: {exc}") from None

    def load(self) -> list[StoredContact]:
        """Every stored contact, in seq (creation) order."""
        try:
            rows = self._db.execute("SELECT data FROM contacts ORDER BY seq").fetchall()
            return [_contact(data) for (data,) in rows]
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"emulator database {self.path}: unreadable contacts: {exc}") from None

    def write_all(self, contacts: Iterable[StoredContact]) -> None:
        """Write many contacts in one transaction (seeding)."""
        with self._db:
            self._db.executemany(_UPSERT, map(_row, contacts))

    def upsert(self, contact: StoredContact) -> None:
        """Write one changed contact through, committed."""
        with self._db:
            self._db.execute(_UPSERT, _row(contact))

    def close(self) -> None:
        self._db.close()
