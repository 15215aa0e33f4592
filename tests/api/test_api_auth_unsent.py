"""A transient auth failure while a write waits for its token: the write never left, so it is
NotSent, which every policy retries (an add-more or add-note failed as "may have arrived",
and the notes outbox held such a note `unknown`, never re-sent on its own)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sync.api import NoteIn, NotSent
from sync.record import Contact, Item

from .omifake import FakeOmi, failure, make_client


@pytest.mark.parametrize("busy", [httpx.Response(503), failure("system_busy")],
                         ids=["auth-503", "auth-minus-9999-busy"])
async def test_a_busy_auth_during_a_renewal_does_not_fail_an_unsafe_write(
        busy: httpx.Response) -> None:
    fake = FakeOmi()
    async with make_client(fake) as c:
        await c.layout()  # a token in hand
        fake.revoke_tokens()  # it expires: the next call renews it
        fake.on("auth", busy)  # ... and the auth server is busy once
        await c.add_notes([NoteIn(content="Gọi lại sau 17h", phone="0912000001")])
    assert fake.hits["add_note"] == 2  # the one refused with 401, and the re-send


async def test_a_busy_auth_during_a_renewal_does_not_fail_an_add_more() -> None:
    fake = FakeOmi()
    async with make_client(fake) as c:
        await c.layout()
        fake.revoke_tokens()
        fake.on("auth", httpx.Response(503))
        await c.add_more([Contact(ref_id="KH-1", full_name="Khách 1",
                                  phones=(Item("0912000001"),))])
    assert fake.hits["add_more"] == 2


async def test_a_write_whose_token_never_comes_is_not_sent() -> None:
    fake = FakeOmi()
    fake.on("auth", *[httpx.Response(503)] * 10)
    async with make_client(fake, max_retries=2) as c:
        with pytest.raises(NotSent, match="not sent, no token"):
            await c.add_more([Contact(ref_id="KH-1", full_name="Khách 1")])
    assert fake.hits["add_more"] == 0 and fake.hits["auth"] == 3


async def test_a_busy_auth_during_a_renewal_leaves_no_note_unknown(tmp_path: Path) -> None:
    """The consequence in the notes outbox: the note, never sent, is held as `unknown`
    (never re-sent on its own) instead of `pending`."""
    import sqlalchemy as sa

    from sync.mapping_file import load_mapping
    from sync.notes import NotesOutbox
    from sync.settings import default_mapping_file
    from sync.store import make_engine
    from sync.store.local import LocalTable, ensure_table
    from sync.store.migrate import upgrade
    from sync.store.schema import note_outbox

    url = f"sqlite:///{tmp_path}/notes.db"
    upgrade(url)
    db = make_engine(url)
    spec = load_mapping(default_mapping_file())
    ensure_table(db, spec)
    local = LocalTable.for_spec(spec)
    outbox = NotesOutbox(db, "t-review", spec, local)
    outbox.ensure_table()
    assert outbox.table is not None
    with db.begin() as conn:
        conn.execute(local.table.insert().values(ref_id="KH0001", full_name="Nguyễn Văn A",
                                                 phone="0393000001"))
        conn.execute(outbox.table.insert().values(ref_id="KH0001",
                                                  content="Đã gọi, hẹn giao thứ Hai"))
    fake = FakeOmi()
    async with make_client(fake) as client:
        await client.layout()  # a token in hand, as after the cycle's listing
        fake.revoke_tokens()  # it expires before the notes go
        fake.on("auth", httpx.Response(503))  # and the renewal meets a busy auth once
        counts = await outbox.push(client)
    with db.connect() as conn:
        statuses = set(conn.scalars(sa.select(note_outbox.c.status)))
    db.dispose()
    assert counts["notes_unknown"] == 0 and "unknown" not in statuses, (counts, statuses)
