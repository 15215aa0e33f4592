"""The emulator's state: contacts, tokens, the add-more queue, counters, and the agent's hands.

One `Emulator` backs one fake tenant. Tests drive it directly (agent_create, flush_pending,
stats...) or over HTTP (admin routes); the /api routes call `operations`. Everything goes
through one re-entrant lock because `EmulatorServer` serves from its own thread while the test
thread mutates contacts. Pending add-more items are applied lazily, whenever anything looks at
the data, so no background task is needed and the in-process ASGI transport behaves like HTTP.

With `config.db_path` the contacts are kept in that SQLite file as well (`dbfile.ContactFile`):
loaded at start if it holds any (no seeding then), else seeded and written in one transaction;
every change afterwards is written through. Tokens, pending add-more items, notes and stats stay
in memory. `close()` releases the file.
"""

from __future__ import annotations

import gc
import heapq
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sync.emulator.config import EmulatorConfig, checked_knobs
from sync.emulator.faults import FaultInjector
from sync.emulator.model import AGENT_USER, API_USER, StoredContact, to_wire, wire_json
from sync.emulator.parse import Patch, agent_patch
from sync.emulator.seed import generate
from sync.emulator.store import ContactStore

ENDPOINTS: tuple[str, ...] = (
    "auth", "list", "add", "add_more", "update", "delete", "add_note", "get", "details", "layout",
)
# The looks of a real token (a JWT) without pretending to be one.
_TOKEN_PREFIX = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9."


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building (or writing) all the contacts at once: it would rescan
    the growing heap over and over (~30% of the time at 100k contacts), and contacts hold no
    reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Emulator:
    """In-memory OMICall tenant. `clock` (monotonic seconds) drives token expiry and add-more
    due times; `wall` (epoch seconds) stamps created_date / last_updated_date."""

    def __init__(self, config: EmulatorConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.clock, self.wall = clock, wall
        self.lock = threading.RLock()
        self.store = ContactStore()
        self.notes: list[dict[str, Any]] = []
        self.faults = FaultInjector(self.config.seed)
        self.rng = random.Random(f"data:{self.config.seed}")  # drops, random list order
        self.closing = threading.Event()  # set on server shutdown: cuts fault hangs short
        self._ids = random.Random(f"ids:{self.config.seed}")
        self._tokens: dict[str, float] = {}  # token -> issue time (clock)
        self._pending: list[tuple[float, int, Patch]] = []  # heap of (due, seq, patch)
        self._pending_seq = 0
        self._stats = dict.fromkeys(ENDPOINTS, 0)
        self._custom_keys: dict[str, str] = {}  # more_infomation label -> internal key
        self._last_ms = 0
        self._set_layout()
        if self.config.db_path is None:
            self._seed_contacts()
        else:
            self._open_file(self.config.db_path)

    def _open_file(self, path: str) -> None:
        from sync.emulator.dbfile import ContactFile  # only here: no sqlite3 in memory-only runs

        file = ContactFile(path)
        try:
            with _gc_paused(), self.lock:
                stored = file.load()
                if stored:
                    self.store.load(stored)
                    for contact in stored:  # the tenant's custom labels keep their keys
                        for label, _, key in contact.custom:
                            self._custom_keys.setdefault(label, key)
                        self._last_ms = max(self._last_ms, contact.updated_ms)
                else:
                    self._seed_contacts()
                    file.write_all(self.store.by_id.values())
                self.store.file = file
        except BaseException:
            file.close()
            raise

    def close(self) -> None:
        """Release the SQLite file, if any (idempotent); changes after this fail."""
        with self.lock:
            if self.store.file is not None:
                self.store.file.close()

    def _seed_contacts(self) -> None:
        # Generated fields are already in patch form and valid: no re-validation.
        with _gc_paused(), self.lock:
            for s in generate(self.config.contacts, self.config.seed, self.layout()):
                self.create(s.fields, by_agent=s.by_agent, created_ms=s.created_ms,
                            updated_ms=s.updated_ms)

    # -- configuration ----------------------------------------------------------------------

    def configure(self, **knobs: Any) -> None:
        """Change knobs at runtime (validated as a whole first; ValueError names the bad one)."""
        with self.lock:
            checked = checked_knobs(self.config, knobs)
            for name in knobs:
                setattr(self.config, name, getattr(checked, name))
            if "seed" in knobs:
                self.faults.reseed(self.config.seed)
                self.rng = random.Random(f"data:{self.config.seed}")
            if "layout" in knobs:
                self._set_layout()
                self.store.invalidate_wire()

    def layout(self) -> list[dict[str, Any]]:
        """The dynamic attribute layout as `GET /api/source_contact_layout/get` serves it."""
        return [dict(f, options=list(f["options"])) for f in self.layout_by_code.values()]

    def _set_layout(self) -> None:
        self.layout_by_code = {f["field_code"]: f for f in self.config.effective_layout()}
        self.field_types = {code: f["field_type"] for code, f in self.layout_by_code.items()}

    # -- counters and tokens ----------------------------------------------------------------

    def count(self, endpoint: str) -> None:
        with self.lock:
            self._stats[endpoint] += 1

    def stats(self) -> dict[str, int]:
        """Requests received per /api endpoint, faulted ones included."""
        with self.lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self.lock:
            self._stats = dict.fromkeys(ENDPOINTS, 0)

    def fault_counts(self) -> dict[str, int]:
        """Faults injected so far, per kind."""
        with self.lock:
            return dict(self.faults.counts)

    def issue_token(self) -> str:
        with self.lock:
            token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
            self._tokens[token] = self.clock()
            return token

    def token_problem(self, token: str | None) -> str | None:
        """None if the token is good, else the 401 message: unauthorized or token_expired."""
        with self.lock:
            issued = self._tokens.get(token) if token else None
            if issued is None:
                return "unauthorized"
            if self.clock() - issued >= self.config.token_ttl:  # the current ttl, so a test
                return "token_expired"  # can expire live tokens by configure(token_ttl=0)
            return None

    def revoke_tokens(self) -> None:
        """Forget every access token: the next call with one answers 401 unauthorized."""
        with self.lock:
            self._tokens.clear()

    # -- contacts: creation, edits, the add-more queue --------------------------------------

    def now_ms(self) -> int:
        """Epoch ms, strictly increasing, so every edit moves last_updated_date forward."""
        self._last_ms = max(int(self.wall() * 1000), self._last_ms + 1)
        return self._last_ms

    def new_public_id(self) -> str:
        while True:
            candidate = f"{self._ids.getrandbits(96):024x}"
            if candidate not in self.store.by_id:
                return candidate

    def create(self, patch: Patch, *, by_agent: bool, created_ms: int | None = None,
               updated_ms: int | None = None) -> StoredContact:
        """Store a new contact from a validated patch (full_name present)."""
        with self.lock:
            created = created_ms if created_ms is not None else self.now_ms()
            user = AGENT_USER if by_agent else API_USER
            contact = StoredContact(
                public_id=self.new_public_id(), seq=self.store.next_seq(), created_ms=created,
                updated_ms=updated_ms if updated_ms is not None else created,
                create_by=user, last_update_by=user, full_name=patch["full_name"])
            self._apply(contact, patch)
            self.store.insert(contact)
            return contact

    def edit(self, contact: StoredContact, patch: Patch, *, by_agent: bool) -> None:
        """Apply a patch as an edit: bumps last_updated_date and last_update_by."""
        with self.lock:
            def change(c: StoredContact) -> None:
                self._apply(c, patch)
                c.updated_ms = max(self.now_ms(), c.updated_ms + 1)
                c.last_update_by = AGENT_USER if by_agent else API_USER
            self.store.edit(contact, change)

    def delete(self, contact: StoredContact, *, by_agent: bool) -> None:
        with self.lock:
            def change(c: StoredContact) -> None:
                c.is_deleted = True
                c.updated_ms = max(self.now_ms(), c.updated_ms + 1)
                c.last_update_by = AGENT_USER if by_agent else API_USER
            self.store.edit(contact, change)

    def _apply(self, c: StoredContact, patch: Patch) -> None:
        for name, value in patch.items():
            if name == "custom":  # API: a list replaces all; agent: a mapping merges per label
                entries = {} if isinstance(value, list) else {lb: v for lb, v, _ in c.custom}
                entries.update(value)
                c.custom = tuple((lb, v, self._custom_key(lb)) for lb, v in entries.items() if v)
            elif name == "dynamic":  # per field_code; an empty list clears that field
                merged = {**c.dynamic, **value}
                c.dynamic = {code: tuple(vals) for code, vals in merged.items() if vals}
            elif name in ("phones", "emails", "tags"):
                setattr(c, name, tuple(value))
            else:
                setattr(c, name, value)

    def _custom_key(self, label: str) -> str:
        # The tenant registers each custom label once; its key is what data_type shows.
        if label not in self._custom_keys:
            n, used = len(self._custom_keys) + 1, set(self._custom_keys.values())
            while f"label{n}" in used:  # only after a reload from a file that lost a label
                n += 1
            self._custom_keys[label] = f"label{n}"
        return self._custom_keys[label]

    def enqueue(self, patch: Patch) -> None:
        """Queue an add-more item; it appears after add_more_delay, unless the drop rate hits."""
        with self.lock:
            if self.rng.random() < self.config.add_more_drop_rate:
                return
            self._pending_seq += 1
            due = self.clock() + self.config.add_more_delay
            heapq.heappush(self._pending, (due, self._pending_seq, patch))

    @property
    def pending(self) -> int:
        """Add-more items queued and not yet applied."""
        return len(self._pending)

    def apply_due(self, *, everything: bool = False) -> int:
        """Create the queued add-more items whose time has come (all of them if `everything`)."""
        with self.lock:
            applied, now = 0, self.clock()
            while self._pending and (everything or self._pending[0][0] <= now):
                _, _, patch = heapq.heappop(self._pending)
                ref = patch.get("ref_id")
                if ref and not self.config.duplicate_on_resend and self.store.find("ref_id", ref):
                    continue  # the resend is ignored: the first contact stands
                self.create(patch, by_agent=False)
                applied += 1
            return applied

    def flush_pending(self) -> int:
        """Apply every queued add-more item now; returns how many were created."""
        return self.apply_due(everything=True)

    # -- the agent's side (the CRM's own interface) -----------------------------------------

    def agent_create(self, **fields: Any) -> str:
        """Create a contact as an agent would: no ref_id unless given. Returns its public_id."""
        patch = agent_patch(fields, self.layout_by_code)
        if not patch.get("full_name"):
            raise ValueError("full_name is required")
        return self.create(patch, by_agent=True).public_id

    def agent_update(self, public_id: str, **fields: Any) -> None:
        """Edit a live contact (KeyError if unknown or deleted); custom/dynamic merge per key."""
        with self.lock:
            self.edit(self._live(public_id), agent_patch(fields, self.layout_by_code),
                      by_agent=True)

    def agent_delete(self, public_id: str) -> None:
        with self.lock:
            self.delete(self._live(public_id), by_agent=True)

    def _live(self, public_id: str) -> StoredContact:
        contact = self.store.by_id.get(public_id)
        if contact is None or contact.is_deleted:
            raise KeyError(public_id)
        return contact

    # -- inspection (wire-shaped copies: mutating them changes nothing) ---------------------

    def wire(self, contact: StoredContact) -> bytes:
        return wire_json(contact, self.field_types)

    def _wire_dicts(self, contacts: list[StoredContact]) -> list[dict[str, Any]]:
        # Fresh dicts (not the cached JSON, which would cost a parse): callers may mutate them.
        return [to_wire(c, self.field_types) for c in contacts]

    def contacts(self) -> list[dict[str, Any]]:
        """Every live contact as the API would serve it, oldest first."""
        with self.lock:
            self.apply_due()
            return self._wire_dicts(self.store.ordered("created"))

    def contact(self, public_id: str) -> dict[str, Any] | None:
        """One contact by public_id, deleted ones included (is_deleted true)."""
        with self.lock:
            self.apply_due()
            found = self.store.by_id.get(public_id)
            return self._wire_dicts([found])[0] if found else None

    def find_by_ref_id(self, ref_id: str) -> list[dict[str, Any]]:
        """Live contacts with this ref_id (more than one after a duplicated add-more)."""
        with self.lock:
            self.apply_due()
            return self._wire_dicts(self.store.find("ref_id", ref_id))
