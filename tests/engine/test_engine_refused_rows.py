"""Rows the database refuses: an adopted table's own constraints and types (UNIQUE, a length)
refuse some CRM value. Each such row is that row's error, nothing of it half-applied, and the
other rows sync (before: every cycle failed on it, and nothing synced at all)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from .conftest import MakeHarness
from .helpers import Db, Harness, assert_mirrored, write_calls

EMAIL = "trung.vu@example.vn"


def adopt(db: Db, *, email: str = "TEXT", extra: str = "") -> None:
    """The default mapping's table as an app made it before crm-sync, with constraints."""
    json = "JSON" if db.kind == "sqlite" else "JSONB"
    cols = ["ref_id VARCHAR(255) PRIMARY KEY", "ref_code TEXT", "crm_id TEXT", "full_name TEXT",
            "phone TEXT", f"email {email}", "gender TEXT", "birthday DATE", "address TEXT",
            "job_title TEXT", "passport TEXT", "note TEXT", f"tags {json}", "owner_email TEXT",
            f"custom_fields {json}"]
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE contacts ({', '.join(cols)}{extra})"))
    engine.dispose()


def refused(h: Harness) -> list[str]:
    """Keys the CRM lists that the table does not hold."""
    return sorted(h.crm().keys() - h.rows().keys())


@pytest.mark.parametrize("pooled", [False, True], ids=["in-process", "pooled-import"])
async def test_a_new_contact_the_table_refuses_is_a_row_error_and_the_others_sync(
        make_harness: MakeHarness, db: Db, pooled: bool) -> None:
    adopt(db, extra=", CONSTRAINT uq_email UNIQUE (email)")
    workers = {"import_workers": 1, "import_min_contacts": 1} if pooled else {}
    h = make_harness({"contacts": 40, "seed": 91}, **workers)
    h.emulator.agent_create(full_name="Vũ Đình Trung", ref_id="KH-DUP-1", emails=[EMAIL])
    h.emulator.agent_create(full_name="Vũ Trung", ref_id="KH-DUP-2", emails=[EMAIL.upper()])
    for _ in range(2):  # and again: reported each cycle, never written half
        r = await h.cycle()
        assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
        assert r.counts["errors"] == 1 and write_calls(r.api_calls) == {}, r.counts
        assert refused(h) == ["KH-DUP-2"]  # the first of the two listed is in
        state = h.states()["KH-DUP-2"]  # in `status`, without the CRM id: no "app delete"
        assert (state.status, state.public_id, state.base) == ("error", None, None), state
        assert r.rows_in_error == 1 and "refused the row" in (state.last_error or "")
    assert len(h.rows()) == 41

    h.emulator.agent_update(h.crm()["KH-DUP-2"]["public_id"], emails=["trung.vu2@example.vn"])
    r = await h.cycle()
    assert r.exit_code == 0, (r.notes, r.counts)
    assert_mirrored(h)


async def test_a_crm_edit_the_table_refuses_keeps_the_row_as_it_was(
        make_harness: MakeHarness, db: Db) -> None:
    adopt(db, extra=", CONSTRAINT uq_email UNIQUE (email)")
    h = make_harness({"contacts": 40, "seed": 92})
    await h.cycle()
    crm = h.crm()
    a, b, c = sorted(k for k in crm if not k.startswith("crm:"))[:3]
    h.update(a, email=EMAIL)  # pushed: the CRM and the table agree on a's email
    await h.cycle()
    before = h.row(b)
    h.emulator.agent_update(crm[b]["public_id"], emails=[EMAIL])  # the table refuses this one
    h.emulator.agent_update(crm[c]["public_id"], full_name="Trần Thị Sửa")

    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 1, (r.notes, r.counts)
    assert h.row(b) == before and h.row(c)["full_name"] == "Trần Thị Sửa"
    state = h.states()[b]
    assert "the database refused the row" in (state.last_error or ""), state
    assert write_calls(r.api_calls) == {}  # b's old email is not pushed back either

    h.emulator.agent_update(crm[b]["public_id"], emails=["b.moi@example.vn"])
    r = await h.cycle()
    assert r.exit_code == 0 and h.row(b)["email"] == "b.moi@example.vn", (r.notes, r.counts)
    assert_mirrored(h)


@pytest.mark.postgres
async def test_a_value_too_long_for_its_column_is_that_rows_error(
        make_harness: MakeHarness, db: Db) -> None:
    if db.kind != "postgresql":
        pytest.skip("SQLite does not enforce a VARCHAR's length")
    adopt(db, email="VARCHAR(30)")
    h = make_harness({"contacts": 20, "seed": 93})
    h.emulator.agent_create(full_name="Nguyễn Văn Dài", ref_id="KH-LONG",
                            emails=["nguyen.van.dai.rat.dai@congty-example.vn"])
    r = await h.cycle()
    assert r.exit_code == 3 and r.counts["errors"] == 1, (r.notes, r.counts)
    assert refused(h) == ["KH-LONG"] and len(h.rows()) == 20


async def test_a_crm_deletion_keeps_the_apps_own_columns_in_the_tombstone(
        make_harness: MakeHarness, db: Db) -> None:
    adopt(db, extra=", so_don_hang INTEGER, ghi_chu_noi_bo TEXT")
    h = make_harness({"contacts": 30, "seed": 94})
    await h.cycle()
    key = sorted(k for k in h.crm() if not k.startswith("crm:"))[5]
    h.execute("UPDATE contacts SET so_don_hang = 7, ghi_chu_noi_bo = 'khách quen' "
              "WHERE ref_id = :k", k=key)
    h.emulator.agent_delete(h.crm()[key]["public_id"])
    r = await h.cycle(full=True)
    assert r.exit_code == 0 and r.counts["deleted_local"] == 1, (r.notes, r.counts)
    tomb, = h.tombstones()
    values = tomb["values"]
    assert (values["so_don_hang"], values["ghi_chu_noi_bo"]) == (7, "khách quen"), values
    assert values["ref_id"] == key and values["full_name"]
    # the mapped columns as their types read them, on SQLite too (not as the driver's text):
    # a date kept as a date ({"$date": ...}), a JSON column as JSON
    assert values["birthday"] is None or set(values["birthday"]) == {"$date"}, values
    assert values["tags"] is None or isinstance(values["tags"], list), values


async def test_a_row_an_apps_table_refers_to_is_kept_and_the_other_deletions_go_on(
        make_harness: MakeHarness, db: Db) -> None:
    adopt(db)
    h = make_harness({"contacts": 30, "seed": 95})
    await h.cycle()
    h.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, "
              "ref_id VARCHAR(255) REFERENCES contacts (ref_id))")
    kept, gone = sorted(k for k in h.crm() if not k.startswith("crm:"))[2:4]
    h.execute("INSERT INTO orders (id, ref_id) VALUES (1, :k)", k=kept)
    for k in (kept, gone):
        h.emulator.agent_delete(h.crm()[k]["public_id"])
    r = await h.cycle(full=True)
    assert r.exit_code == 3 and r.counts["deleted_local"] == 1, (r.notes, r.counts)
    assert kept in h.rows() and gone not in h.rows()
    assert "refused to delete the row" in (h.states()[kept].last_error or "")

    h.execute("DELETE FROM orders")
    r = await h.cycle(full=True)
    assert r.exit_code == 0 and kept not in h.rows(), (r.notes, r.counts)


async def test_a_key_longer_than_the_bookkeeping_holds_is_that_rows_error(
        make_harness: MakeHarness, db: Db) -> None:
    # sync_state.key holds 255 characters: on PostgreSQL such a row failed every cycle, and
    # no other new row was sent (its error state too would fail every save: none is kept)
    adopt(db)
    if db.kind == "postgresql":
        engine = sa.create_engine(db.url)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE contacts ALTER COLUMN ref_id TYPE TEXT"))
        engine.dispose()
    h = make_harness({"contacts": 5, "seed": 3, "add_more_delay": 0.0})
    await h.cycle()
    long_key = "KH-" + "9" * 300
    h.insert({"ref_id": long_key, "full_name": "Khách khóa dài", "phone": "0912345678"},
             {"ref_id": "KH-NEW-1", "full_name": "Khách mới", "phone": "0912345679"})
    for _ in range(2):
        r = await h.cycle()
        assert r.exit_code == 3 and r.counts["errors"] == 1, (r.status, r.notes, r.counts)
    assert len(h.crm_by_ref("KH-NEW-1")) == 1 and not h.crm_by_ref(long_key)
    assert long_key not in h.states()
