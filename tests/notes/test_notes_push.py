"""The notes outbox against the emulator over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from sync.api.adapter import NoteIn
from sync.api.client import OmiClient
from sync.emulator import EmulatorServer
from sync.errors import ConfigError, RemoteError, StoreError
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import default_mapping_file

from .conftest import Setup, client_for, make_setup

AGENTS = ("lan.nguyen@shop.vn", "minh.tran@shop.vn", None)


def phone_forms(i: int) -> tuple[str, str]:
    """(as an app may write it, the national form the CRM gets)."""
    national = f"0393{i:06d}"
    forms = (f"+84 393 {i:06d}", f"84393{i:06d}", national, f"0393.{i // 1000:03d}.{i % 1000:03d}")
    return forms[i % len(forms)], national


def seed(s: Setup, n: int = 50) -> dict[str, tuple[str, str | None]]:
    """n/2 contacts with notes by ref_id, n/2 notes by phone; content -> (phone, author)."""
    half = n // 2
    s.add_contacts([{"ref_id": f"KH{i:04d}", "full_name": f"Nguyễn Văn {i}",
                     "phone": phone_forms(i)[0]} for i in range(half)])
    expected: dict[str, tuple[str, str | None]] = {}
    rows: list[dict[str, Any]] = []
    for i in range(n):
        content = f"Đơn hàng #{i}: đã giao, khách hài lòng"
        by = AGENTS[i % len(AGENTS)]
        if i < half:
            rows.append({"ref_id": f"KH{i:04d}", "content": content, "note_by": by})
            expected[content] = (phone_forms(i)[1], by)
        else:
            raw, national = phone_forms(1000 + i)
            rows.append({"phone": raw, "content": content, "note_by": by})
            expected[content] = (national, by)
    # interleave the two kinds in id order
    s.add_notes(rows[0::2] + rows[1::2])
    return expected


def arrived(server: EmulatorServer) -> Counter[str]:
    return Counter(n["content"] for n in server.emulator.notes)


class Wrapped:
    """A client whose add_notes can fail before or after really sending."""

    def __init__(self, real: OmiClient, *, before: BaseException | None = None,
                 after: BaseException | None = None, times: int = 1) -> None:
        self.real, self.before, self.after, self.times = real, before, after, times

    async def add_notes(self, notes: Sequence[NoteIn]) -> None:
        if self.times > 0 and self.before is not None:
            self.times -= 1
            raise self.before
        await self.real.add_notes(notes)
        if self.times > 0 and self.after is not None:
            self.times -= 1
            raise self.after


class Crash(BaseException):
    """Stands for the process dying right after the call."""


async def test_fifty_notes_arrive_exactly_once(setup: Setup, server: EmulatorServer) -> None:
    expected = seed(setup)
    bad = setup.add_notes([
        {"ref_id": "KH-UNKNOWN", "content": "Khách hỏi bảo hành"},
        {"phone": "0393000001", "content": "   "},
        {"content": "Không có số điện thoại"},
        {"phone": "không rõ", "content": "Số điện thoại sai"},
    ])
    setup.add_contacts([{"ref_id": "KH-NOPHONE", "full_name": "Trần Thị B"}])
    bad += setup.add_notes([{"ref_id": "KH-NOPHONE", "content": "Gọi lại sau"}])
    async with client_for(server.url) as client:
        counts = await setup.outbox.push(client, batch_size=12)
    assert counts == Counter(notes_sent=50, notes_failed=5)
    got = {n["content"]: (n["phone"], n["note_by"]) for n in server.emulator.notes}
    assert arrived(server) == Counter(list(expected))  # each exactly once, nothing else
    assert got == expected
    assert setup.outbox.counts() == {"pending": 0, "in_flight": 0, "sent": 50, "failed": 5,
                                     "unknown": 0}
    rows = setup.outbox_rows()
    reasons = [rows[i]["last_error"] for i in bad]
    assert "KH-UNKNOWN" in reasons[0] and "no such contact" in reasons[0]
    assert reasons[1] == "empty content"
    assert "neither phone nor ref_id" in reasons[2]
    assert "not a phone number" in reasons[3]
    assert "KH-NOPHONE" in reasons[4] and "no phone" in reasons[4]
    assert all(rows[i]["status"] == "failed" and rows[i]["attempts"] == 0 for i in bad)
    sent = [r for r in rows.values() if r["status"] == "sent"]
    assert all(r["sent_at"] is not None and r["attempts"] == 1 for r in sent)
    assert {p["note_id"] for p in setup.outbox.problems()} == set(bad)
    # a second cycle sends nothing again; a note added later goes alone
    new = setup.add_notes([{"ref_id": "KH0003", "content": "Khiếu nại giao chậm"}])
    async with client_for(server.url) as client:
        assert await setup.outbox.push(client) == Counter(notes_sent=1)
        assert await setup.outbox.push(client) == Counter()
    assert server.emulator.notes[-1]["phone"] == "0393000003"
    assert setup.outbox_rows()[new[0]]["phone"] == "0393000003"
    assert server.emulator.stats().get("add_note", 0) == 6  # 5 batches of <=12 sendable + 1


async def test_dry_run_writes_and_sends_nothing(setup: Setup, server: EmulatorServer) -> None:
    seed(setup, 10)
    setup.add_notes([{"ref_id": "nobody", "content": "x"}])
    async with client_for(server.url) as client:
        counts = await setup.outbox.push(client, batch_size=3, dry_run=True)
    assert counts == Counter(notes_to_send=10, notes_to_fail=1)
    assert server.emulator.notes == [] and setup.outbox_rows() == {}
    assert setup.outbox.counts()["pending"] == 11


async def test_not_sent_stays_pending(setup: Setup, server: EmulatorServer) -> None:
    """A connection refused: certainly not delivered, so pending, and sent by the next push."""
    expected = seed(setup, 10)
    closed = EmulatorServer()  # bound, never started, then closed: connection refused
    dead_url = closed.url
    closed.stop()
    async with client_for(dead_url) as client:
        counts = await setup.outbox.push(client, batch_size=4)
    assert counts == Counter(notes_deferred=4)  # the first batch; the rest waits untouched
    rows = setup.outbox_rows()
    assert len(rows) == 4 and all(r["status"] == "pending" for r in rows.values())
    assert all("NotSent" in r["last_error"] for r in rows.values())
    assert setup.outbox.counts()["pending"] == 10
    async with client_for(server.url) as client:
        assert await setup.outbox.push(client, batch_size=4) == Counter(notes_sent=10)
    assert arrived(server) == Counter(list(expected))
    assert {r["attempts"] for i, r in setup.outbox_rows().items() if i in rows} == {2}


async def test_server_error_makes_unknown_never_resent_until_resend(
        setup: Setup, server: EmulatorServer) -> None:
    seed(setup, 10)
    async with client_for(server.url) as client:
        await client.authenticate()
        server.emulator.configure(error_500_rate=1.0)
        counts = await setup.outbox.push(client, batch_size=4)
        assert counts == Counter(notes_unknown=4)  # and stops: the server is in trouble
        server.emulator.configure(error_500_rate=0.0)
        assert setup.outbox.recover() == 0
        assert await setup.outbox.push(client, batch_size=4) == Counter(notes_sent=6)
        assert await setup.outbox.push(client) == Counter()  # unknown is not re-sent
        c = setup.outbox.counts()
        assert (c["unknown"], c["sent"], c["pending"]) == (4, 6, 0)
        unknown = sorted(i for i, r in setup.outbox_rows().items() if r["status"] == "unknown")
        assert setup.outbox.resend_unknown(dry_run=True) == unknown
        assert setup.outbox.counts()["unknown"] == 4
        assert setup.outbox.resend_unknown(dry_run=False, ids=unknown[:1]) == unknown[:1]
        assert setup.outbox.counts()["unknown"] == 3
        assert setup.outbox.resend_unknown(dry_run=False) == unknown[1:]
        assert setup.outbox.resend_unknown(dry_run=False) == []
        assert await setup.outbox.push(client) == Counter(notes_sent=4)
    assert len(server.emulator.notes) == 10  # the 500 changed nothing in the emulator


async def test_crash_after_the_call_is_unknown_never_duplicated(
        setup: Setup, server: EmulatorServer) -> None:
    expected = seed(setup, 10)
    async with client_for(server.url) as real:
        with pytest.raises(Crash):
            await setup.outbox.push(Wrapped(real, after=Crash()), batch_size=4)  # type: ignore[arg-type]
        assert setup.outbox.counts()["unknown"] == 4
        assert len(server.emulator.notes) == 4  # they did arrive
        assert setup.outbox.recover() == 0
        assert await setup.outbox.push(real, batch_size=4) == Counter(notes_sent=6)
    assert arrived(server) == Counter(list(expected))  # exactly once each
    assert all("Crash" in p["last_error"] for p in setup.outbox.problems())


async def test_remote_refusal_fails_the_batch_and_the_rest_goes(
        setup: Setup, server: EmulatorServer) -> None:
    seed(setup, 10)
    async with client_for(server.url) as real:
        wrapped = Wrapped(real, before=RemoteError("request_invalid", endpoint="add_note"))
        counts = await setup.outbox.push(wrapped, batch_size=4)  # type: ignore[arg-type]
    assert counts == Counter(notes_failed=4, notes_sent=6)
    assert len(server.emulator.notes) == 6
    failed = [p for p in setup.outbox.problems() if p["status"] == "failed"]
    assert len(failed) == 4 and all("request_invalid" in p["last_error"] for p in failed)


async def test_in_flight_rows_become_unknown_on_recover(setup: Setup) -> None:
    """What a crash between the in_flight commit and the answer leaves behind."""
    ids = setup.add_notes([{"phone": "0901234567", "content": "Đã gửi báo giá"}] * 3)

    class Dies:
        async def add_notes(self, notes: Sequence[NoteIn]) -> None:
            # the rows are committed in_flight before the call
            assert setup.outbox.counts()["in_flight"] == 3
            raise SystemExit(9)

    with pytest.raises(SystemExit):
        await setup.outbox.push(Dies())  # type: ignore[arg-type]
    # the handler records unknown at once; a real kill leaves in_flight: simulate that
    from sync.store.schema import note_outbox
    with setup.db.begin() as conn:
        conn.execute(note_outbox.update().where(note_outbox.c.tenant == setup.tenant)
                     .values(status="in_flight"))
    other = NotesOutbox(setup.db, "another-tenant", setup.spec, setup.local)
    assert other.recover() == 0  # tenants are apart
    assert setup.outbox.recover() == 3
    assert setup.outbox.recover() == 0
    rows = setup.outbox_rows()
    assert [rows[i]["status"] for i in ids] == ["unknown"] * 3
    assert "may or may not" in rows[ids[0]]["last_error"]


async def test_notes_wait_for_a_create_not_confirmed_yet(setup: Setup,
                                                         server: EmulatorServer) -> None:
    """add-more is asynchronous: a note for a contact the CRM may not have yet waits."""
    from sync.store.state import StateStore, SyncState

    setup.add_contacts([{"ref_id": "KH-NEW", "full_name": "Phạm Thị D", "phone": "0912345678"}])
    store = StateStore(setup.db, setup.tenant)
    with setup.db.begin() as conn:
        store.save(conn, [SyncState("KH-NEW", ref_id="KH-NEW", status="pending_create")])
    ids = setup.add_notes([{"ref_id": "KH-NEW", "content": "Đặt hàng lần đầu"},
                           {"phone": "0912345678", "content": "Theo số điện thoại"}])
    async with client_for(server.url) as client:
        assert await setup.outbox.push(client) == Counter(notes_sent=1, notes_waiting=1)
        assert ids[0] not in setup.outbox_rows() and setup.outbox.counts()["pending"] == 1
        with setup.db.begin() as conn:
            store.save(conn, [SyncState("KH-NEW", ref_id="KH-NEW", public_id="p1",
                                        status="synced")])
        assert await setup.outbox.push(client) == Counter(notes_sent=1)
    assert [n["phone"] for n in server.emulator.notes] == ["0912345678"] * 2


async def test_tenants_are_apart(setup: Setup, server: EmulatorServer) -> None:
    seed(setup, 4)
    other = NotesOutbox(setup.db, "t-other", setup.spec, setup.local)
    async with client_for(server.url) as client:
        assert await setup.outbox.push(client) == Counter(notes_sent=4)
        assert other.counts()["pending"] == 4  # each tenant's outbox is its own
        assert await other.push(client) == Counter(notes_sent=4)


def test_a_row_taken_by_another_push_aborts_the_batch(setup: Setup) -> None:
    """The outbox's primary key stops a second taker (two pushes for one tenant)."""
    ids = setup.add_notes([{"phone": "0901234567", "content": "a"}])
    with setup.db.begin() as conn:
        rows = setup.outbox._candidates(conn, 0, 10)
        good, bad = setup.outbox._resolve(conn, rows)
    with setup.db.begin() as conn:
        setup.outbox._take(conn, rows, good, bad)
    with pytest.raises(sa.exc.IntegrityError), setup.db.begin() as conn:
        setup.outbox._take(conn, rows, good, bad)
    with setup.db.begin() as conn:  # a pending row someone else already moved
        conn.execute(sa.text("UPDATE note_outbox SET status = 'pending'"))
        rows = setup.outbox._candidates(conn, 0, 10)
    with setup.db.begin() as conn:
        conn.execute(sa.text("UPDATE note_outbox SET status = 'in_flight'"))
    with pytest.raises(StoreError, match="another push"), setup.db.begin() as conn:
        setup.outbox._take(conn, rows, good, bad)
    assert setup.outbox_rows()[ids[0]]["attempts"] == 1


async def test_mapping_without_phone_names_why(db_url: str, server: EmulatorServer) -> None:
    spec = load_mapping(default_mapping_file())
    spec = spec.model_copy(update={"fields": tuple(f for f in spec.fields if f.field != "phone")})
    s = make_setup(db_url, spec)
    try:
        s.add_contacts([{"ref_id": "KH1", "full_name": "Lê Văn C"}])
        ids = s.add_notes([{"ref_id": "KH1", "content": "a"},
                           {"phone": "0393123456", "content": "b"}])
        async with client_for(server.url) as client:
            assert await s.outbox.push(client) == Counter(notes_sent=1, notes_failed=1)
        assert "maps no column to the `phone` field" in s.outbox_rows()[ids[0]]["last_error"]
    finally:
        s.db.dispose()


async def test_notes_disabled(db_url: str, server: EmulatorServer) -> None:
    spec = load_mapping(default_mapping_file()).model_copy(update={"notes_table": None})
    s = make_setup(db_url, spec)
    try:
        assert not s.outbox.enabled
        assert not sa.inspect(s.db).has_table("contact_notes")
        async with client_for(server.url) as client:
            assert await s.outbox.push(client) == Counter()
        assert s.outbox.recover() == 0
        assert s.outbox.counts() == dict.fromkeys(
            ("pending", "in_flight", "sent", "failed", "unknown"), 0)
        assert s.outbox.resend_unknown(dry_run=False) == []
    finally:
        s.db.dispose()


def test_existing_table_is_checked(db_url: str) -> None:
    s = make_setup(db_url, load_mapping(default_mapping_file()).model_copy(
        update={"notes_table": "app_notes"}))
    try:
        s.outbox.ensure_table()  # the one it made: fine
        with s.db.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bad_notes (id INTEGER PRIMARY KEY, body TEXT)"))
        spec = s.spec.model_copy(update={"notes_table": "bad_notes"})
        with pytest.raises(ConfigError, match=r"lacks column.*content"):
            NotesOutbox(s.db, s.tenant, spec, s.local).ensure_table()
    finally:
        s.db.dispose()


def test_sqlite_never_reuses_a_note_id(tmp_path: Any) -> None:
    s = make_setup(f"sqlite:///{tmp_path}/ids.db")
    try:
        first = s.add_notes([{"phone": "0901234567", "content": "a"}])[0]
        assert s.outbox.table is not None
        with s.db.begin() as conn:
            conn.execute(s.outbox.table.delete())
        assert s.add_notes([{"phone": "0901234567", "content": "b"}])[0] > first
    finally:
        s.db.dispose()
