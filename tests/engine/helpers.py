"""The engine tests' harness: one emulator, one Runtime, and the app's hands on the table.

The field-for-field comparison is written here from architecture.md and omicall-api.md alone,
without the engine's converter, so that a converter that misreads the contract fails it.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from sync.cycle import CycleOptions, CycleResult
from sync.emulator import Emulator, EmulatorServer
from sync.runtime import Runtime, build_runtime
from sync.settings import Settings
from sync.store.schema import conflicts, sync_runs, sync_state, tombstones
from sync.store.state import SyncState

# Client call counters that write to the CRM (CycleResult.api_calls / emulator stats).
WRITE_ENDPOINTS = ("add", "add_more", "update", "delete", "add_note")
BOOKKEEPING = (sync_state, sync_runs, conflicts, tombstones)


@dataclass(frozen=True)
class Db:
    kind: str  # sqlite | postgresql
    url: str


def write_calls(calls: Mapping[str, int]) -> dict[str, int]:
    """The write endpoints among per-endpoint call counts (zero counts left out)."""
    return {k: v for k, v in calls.items() if k in WRITE_ENDPOINTS and v}


# --- the contract's canonical view, written independently of sync.convert --------------------

def national_phone(value: str | None) -> str | None:
    """`+84 393 123 456`, `84393123456`, `0393123456` -> `0393123456`."""
    if value is None:
        return None
    digits = re.sub(r"[^\d+]", "", value)
    if digits.startswith("+84"):
        return "0" + digits[3:]
    if digits.startswith("84") and len(digits) == 11:
        return "0" + digits[2:]
    return digits or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    out = re.sub(r"\s+", " ", unicodedata.normalize("NFC", str(value))).strip()
    return out or None


def _lower(value: Any) -> str | None:
    t = _text(value)
    return t.lower() if t else None


def _date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise AssertionError(f"not a date: {value!r}")


def attrs(wire: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """field_code -> its value list, from a wire contact's attribute_structure."""
    return {a["field_code"]: a["value"] for a in wire["attribute_structure"]}


def first(wire: Mapping[str, Any], code: str) -> str | None:
    values = attrs(wire).get(code) or []
    return values[0]["display_value"] if values else None


def wire_key(wire: Mapping[str, Any]) -> str:
    return wire["ref_id"] or f"crm:{wire['public_id']}"


def expected_row(wire: Mapping[str, Any]) -> dict[str, Any]:
    """What the default mapping's row must hold for a CRM contact, canonically."""
    a = attrs(wire)
    return {
        "ref_id": wire_key(wire),
        "ref_code": _text(wire["ref_code"]),
        "crm_id": wire["public_id"],
        "full_name": _text(first(wire, "full_name")),
        "phone": national_phone(first(wire, "phone_number")),
        "email": _lower(first(wire, "mail")),
        "gender": _text(first(wire, "gender")),
        "birthday": _date(first(wire, "birthday")),
        "address": _text(first(wire, "address")),
        "job_title": _text(first(wire, "job_title")),
        "passport": _text(first(wire, "passport")),
        "note": _text(first(wire, "note")),
        "tags": {_text(t) for t in wire["tags"]},
        "owner_email": _lower(first(wire, "contact_owner")),
        "custom_fields": {v["value_type"]: v["display_value"]
                          for v in a.get("more_infomation", [])},
    }


def canonical_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A local row of the default mapping in the same canonical view."""
    return {
        "ref_id": row["ref_id"],
        "ref_code": _text(row["ref_code"]),
        "crm_id": row["crm_id"],
        "full_name": _text(row["full_name"]),
        "phone": national_phone(_text(row["phone"])),
        "email": _lower(row["email"]),
        "gender": _text(row["gender"]),
        "birthday": _date(row["birthday"]),
        "address": _text(row["address"]),
        "job_title": _text(row["job_title"]),
        "passport": _text(row["passport"]),
        "note": _text(row["note"]),
        "tags": {_text(t) for t in (row["tags"] or [])},
        "owner_email": _lower(row["owner_email"]),
        "custom_fields": dict(row["custom_fields"] or {}),
    }


def assert_mirrored(h: Harness) -> None:
    """The table mirrors the CRM field for field; one CRM contact per ref_id."""
    crm = h.emulator.contacts()
    dups = {r: n for r, n in Counter(w["ref_id"] for w in crm if w["ref_id"]).items() if n > 1}
    assert not dups, f"duplicate CRM contacts per ref_id: {dups}"
    expected = {wire_key(w): expected_row(w) for w in crm}
    actual = {k: canonical_row(r) for k, r in h.rows().items()}
    assert actual.keys() == expected.keys()
    diffs = {k: {f: (actual[k][f], expected[k][f]) for f in expected[k]
                 if actual[k][f] != expected[k][f]} for k in expected}
    diffs = {k: d for k, d in diffs.items() if d}
    assert not diffs, f"local (left) vs CRM (right): {diffs}"


# --- the harness ----------------------------------------------------------------------------

@dataclass
class Harness:
    server: EmulatorServer
    db: Db
    rt: Runtime
    results: list[CycleResult] = field(default_factory=list)

    @classmethod
    def build(cls, server: EmulatorServer, db: Db, settings: Settings, **kw: Any) -> Harness:
        return cls(server, db, build_runtime(settings, **kw))

    def close(self) -> None:
        self.rt.close()
        self.server.stop()

    def restart(self) -> None:
        """A new process on the same database: nothing survives but what was committed."""
        self.rt.close()
        self.rt = build_runtime(self.rt.settings, transport=self.rt.transport)

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    @property
    def table(self) -> sa.Table:
        return self.rt.local.table

    # cycles --------------------------------------------------------------------------------

    async def cycle(self, *, full: bool = False, dry_run: bool = False,
                    kind: str | None = None) -> CycleResult:
        kind = kind or ("dry_run" if dry_run else "full" if full else "sync")
        result = await self.rt.cycle(CycleOptions(full=full, dry_run=dry_run, kind=kind))
        self.results.append(result)
        return result

    async def settle(self, *, full: bool = False, max_cycles: int = 40, pause: float = 0.05,
                     statuses: tuple[str, ...] = ("ok",)) -> list[CycleResult]:
        """Cycles until a fixpoint: a cycle that ends in `statuses`, writes nothing to the
        CRM, changes neither the table nor the bookkeeping, and leaves no create pending."""
        out: list[CycleResult] = []
        for _ in range(max_cycles):
            before = self.fingerprint()
            r = await self.cycle(full=full)
            out.append(r)
            if (r.status in statuses and not write_calls(r.api_calls)
                    and self.fingerprint() == before
                    and not self.rt.store.keys_by_status("pending_create")
                    and self.emulator.pending == 0):
                return out
            await asyncio.sleep(pause)
        raise AssertionError(f"no convergence in {max_cycles} cycles; last: {out[-1]}")

    def fingerprint(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The table and the bookkeeping (a row in error counts its failed cycles: left out)."""
        states = {k: {n: v for n, v in s.as_dict().items() if n != "attempts"}
                  for k, s in self.states().items()}
        return self.rows(), states

    # the app's side: plain SQL on the table ------------------------------------------------

    def rows(self) -> dict[str, dict[str, Any]]:
        with self.rt.db.connect() as conn:
            return {r["ref_id"]: dict(r) for r in conn.execute(sa.select(self.table)).mappings()}

    def row(self, key: str) -> dict[str, Any] | None:
        return self.rows().get(key)

    def insert(self, *rows: Mapping[str, Any]) -> None:
        with self.rt.db.begin() as conn:
            for r in rows:
                conn.execute(self.table.insert().values(**r))

    def update(self, key: str, **values: Any) -> None:
        with self.rt.db.begin() as conn:
            n = conn.execute(self.table.update().where(self.table.c.ref_id == key)
                             .values(**values)).rowcount
        assert n == 1, f"no row {key}"

    def delete(self, *keys: str) -> None:
        with self.rt.db.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.ref_id.in_(keys)))

    def execute(self, sql: str, **params: Any) -> None:
        with self.rt.db.begin() as conn:
            conn.execute(sa.text(sql), params)

    # bookkeeping ---------------------------------------------------------------------------

    def states(self) -> dict[str, SyncState]:
        return {s.key: s for chunk in self.rt.store.iter_all() for s in chunk}

    def conflicts(self) -> list[dict[str, Any]]:
        """Every conflict of this tenant (open or resolved), values decoded."""
        from sync.store.journal import _value_of

        q = (sa.select(conflicts).where(conflicts.c.tenant == self.rt.store.tenant)
             .order_by(conflicts.c.id))
        with self.rt.db.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            for name in ("base_value", "local_value", "remote_value"):
                r[name] = _value_of(r[name])
        return rows

    def tombstones(self) -> list[dict[str, Any]]:
        return self.rt.store.last_tombstones(limit=10_000)

    def snapshot(self) -> dict[str, Any]:
        """Everything a dry run must leave alone: table, bookkeeping, the CRM and its counters."""
        out: dict[str, Any] = {"rows": self.rows()}
        with self.rt.db.connect() as conn:
            for t in BOOKKEEPING:
                q = sa.select(t).where(t.c.tenant == self.rt.store.tenant)
                out[t.name] = sorted(tuple(map(repr, r)) for r in conn.execute(q))
        out["crm"] = self.emulator.contacts()
        out["writes"] = write_calls(self.emulator.stats())
        out["pending"] = self.emulator.pending
        return out

    # the CRM's side ------------------------------------------------------------------------

    def crm(self) -> dict[str, dict[str, Any]]:
        """Live CRM contacts by their local key."""
        return {wire_key(w): w for w in self.emulator.contacts()}

    def crm_by_ref(self, ref_id: str) -> list[dict[str, Any]]:
        return self.emulator.find_by_ref_id(ref_id)


def app_rows(prefix: str, n: int, start: int = 1) -> list[dict[str, Any]]:
    """n rows as an app would insert them: phones and emails in the forms people type."""
    out = []
    for i in range(start, start + n):
        national = f"0912{i:06d}"
        rest = national[1:]
        phone = (national, f"+84 {rest[:3]} {rest[3:6]} {rest[6:]}", "84" + rest)[i % 3]
        out.append({
            "ref_id": f"{prefix}-{i:04d}", "ref_code": f"R{i}",
            "full_name": f"Nguyễn Thị Ánh {i}", "phone": phone,
            "email": f"Khach.{i}@Example.VN" if i % 2 else None,
            "gender": ("male", "female", "other")[i % 3],
            "birthday": date(1980 + i % 20, 1 + i % 12, 1 + i % 28),
            "address": f"{i} Lý Thường Kiệt, Hoàn Kiếm, Hà Nội",
            "job_title": "Kế toán" if i % 2 else None,
            "note": f"Khách số {i}\nGọi sau 17h" if i % 4 == 0 else None,
            "tags": ["Khách lẻ", "Đã gọi"] if i % 2 else ["VIP"],
            "owner_email": "lan.nguyen@cskh.example.vn" if i % 3 == 0 else None,
            "custom_fields": {"Kênh": "Zalo", "Điểm": str(i)} if i % 2 else None,
        })
    return out


# --- a transport that sees every request: to record them and to inject crashes --------------

@dataclass
class Exchange:
    """One request as sent and what came back (None: no answer reached the client)."""

    method: str
    path: str
    params: dict[str, str]
    body: Any
    status: int | None = None
    payload: Any = None


class Hooked(httpx.AsyncBaseTransport):
    """Real HTTP (a fresh AsyncHTTPTransport per client) with hooks around each request.

    `hook(exchange, send)` may replace the round trip: `await send()` performs it and returns the
    response; raising simulates what the client would see (a lost answer, a crash).
    """

    def __init__(self, hook: Hook | None = None) -> None:
        self.hook = hook
        self.log: list[Exchange] = []
        self._inner: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = httpx.AsyncHTTPTransport()
        inner = self._inner
        raw = request.content
        ex = Exchange(request.method, request.url.path, dict(request.url.params),
                      json.loads(raw) if raw else None)
        self.log.append(ex)

        async def send() -> httpx.Response:
            response = await inner.handle_async_request(request)
            content = await response.aread()
            ex.status = response.status_code
            try:
                ex.payload = json.loads(content).get("payload")
            except (ValueError, AttributeError):
                ex.payload = None
            return httpx.Response(response.status_code, headers=response.headers,
                                  content=content, request=request)

        if self.hook is None:
            return await send()
        return await self.hook(ex, send)

    async def aclose(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.aclose()

    def calls(self, path_part: str) -> list[Exchange]:
        return [e for e in self.log if path_part in e.path]


Send = Callable[[], Awaitable[httpx.Response]]
Hook = Callable[[Exchange, Send], Awaitable[httpx.Response]]
