"""Bad local rows (an invalid email, an invalid phone, an unreadable birthday, a missing name)
are recorded as row errors (state `error`, last_error naming the column or field) while every
other row syncs; the cycle completes `partial` with exit code 3, and the bad rows never reach
the CRM. For new rows (creates; the birthday kept as dd/MM/yyyy text, so that any text can be
written), for rows already synced (updates), and for text an app wrote into a SQLite DATE
column."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.settings import default_mapping_file

from .conftest import Figures
from .helpers import API_KEY, Ledger, make_runtime, mirror, settle, settled, synced_keys, wire_key

pytestmark = pytest.mark.reliability

# birthday kept as dd/MM/yyyy text, as a legacy app might: an unreadable one is possible anywhere
TEXT_BIRTHDAY = default_mapping_file().read_text(encoding="utf-8").replace(
    "{field: birthday, column: birthday}",
    "{field: birthday, column: birthday, type: text, date_format: '%d/%m/%Y'}")
assert default_mapping_file().read_text(encoding="utf-8") != TEXT_BIRTHDAY

# key -> (the bad values, a word the row's last_error must contain)
BAD_NEW: dict[str, tuple[dict[str, Any], str]] = {
    "BAD-EMAIL": ({"email": "khong-phai-email"}, "email"),
    "BAD-EMAIL-2": ({"email": "an@@example..vn"}, "email"),
    "BAD-PHONE": ({"phone": "09123"}, "phone"),
    "BAD-PHONE-2": ({"phone": "0912 345 678 901 234 567"}, "phone"),
    "BAD-BIRTHDAY": ({"birthday": "31/02/2000"}, "birthday"),
    "BAD-BIRTHDAY-2": ({"birthday": "1990-05-17"}, "birthday"),  # not the mapping's format
    "BAD-NAME": ({"full_name": None}, "full_name"),
    "BAD-NAME-2": ({"full_name": "   "}, "full_name"),
}


def good_row(key: str, i: int) -> dict[str, Any]:
    return {"ref_id": key, "full_name": f"Hồ Thị Tốt {i}", "phone": f"0977{i:06d}",
            "email": f"tot.{i}@example.vn", "birthday": f"{1 + i % 28:02d}/05/1990"}


def _kind(url: str) -> str:
    return sa.engine.make_url(url).get_backend_name()


def _errors(rt: Any) -> dict[str, str]:
    return {s.key: s.last_error or "" for c in rt.store.iter_all() for s in c
            if s.status == "error"}


async def test_bad_new_rows_are_row_errors_while_the_others_sync(
        db_url: str, tmp_path: Path, figures: Figures) -> None:
    started = time.monotonic()
    mapping = tmp_path / "text-birthday.yaml"
    mapping.write_text(TEXT_BIRTHDAY, encoding="utf-8")
    config = EmulatorConfig(api_key=API_KEY, contacts=40, seed=51, add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        async with settled(server, db_url, mapping_file=mapping) as rt:
            ledger = Ledger()
            good = [good_row(f"GOOD-{i}", i) for i in range(6)]
            bad = [good_row(key, 100 + i) | values
                   for i, (key, (values, _)) in enumerate(BAD_NEW.items())]
            table = rt.local.table
            with rt.db.begin() as conn:
                conn.execute(sa.insert(table), good)
                conn.execute(sa.insert(table), bad)
            for row in good:
                ledger.create(row["ref_id"], full_name=row["full_name"], phone=row["phone"],
                              email=row["email"])
            # and an agent edit that must come through in the same cycle
            live = {wire_key(w): w["public_id"] for w in emu.contacts()}
            agent_key = sorted(k for k in live if not k.startswith("crm:"))[3]
            emu.agent_update(live[agent_key], job_title="Thu ngân")
            ledger.wrote(agent_key, job_title="Thu ngân")

            r = await rt.cycle()
            assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
            assert r.counts["errors"] == len(BAD_NEW) and r.rows_in_error == len(BAD_NEW)
            assert r.counts["created_remote"] == len(good)
            errors = _errors(rt)
            assert errors.keys() == BAD_NEW.keys()
            unnamed = {k: errors[k] for k, (_, word) in BAD_NEW.items() if word not in errors[k]}
            assert not unnamed, unnamed

            final = await settle(rt, emu, ok=("partial",))
            assert all(emu.find_by_ref_id(k) == [] for k in BAD_NEW)  # never sent
            m = mirror(rt, emu, skip=BAD_NEW)
            lost = ledger.lost(m, emu)
            assert m.converged, m.summary()
            assert not lost, lost
            figures.record(
                f"bad new rows ({_kind(db_url)})", runs=1 + len(final), good_rows=len(good),
                bad_rows=len(bad), row_errors=r.counts["errors"],
                errors_naming_the_field=len(BAD_NEW) - len(unnamed),
                good_rows_created_once=sum(len(emu.find_by_ref_id(g["ref_id"])) == 1
                                           for g in good),
                bad_rows_sent=sum(len(emu.find_by_ref_id(k)) for k in BAD_NEW),
                status=r.status, exit_code=int(r.exit_code), lost=len(lost),
                seconds=round(time.monotonic() - started, 1))


async def _edit_synced_rows(sqlite_url: str, bad: dict[int, dict[str, Any]]
                            ) -> tuple[Any, dict[str, str], Any, list[str]]:
    """Sync 40 contacts, make the rows at these indexes bad, edit a good row and let an agent
    edit another, run one cycle: (result, row errors, lost edits, bad keys)."""
    config = EmulatorConfig(api_key=API_KEY, contacts=40, seed=52, add_more_delay=0.05)
    with EmulatorServer(config) as server:
        emu = server.emulator
        async with settled(server, sqlite_url) as rt:
            keys = synced_keys(rt)
            table, ledger = rt.local.table, Ledger()
            with rt.db.begin() as conn:
                for i, values in bad.items():
                    conn.execute(table.update().where(table.c.ref_id == keys[i])
                                 .values(**values))
                conn.execute(table.update().where(table.c.ref_id == keys[5])
                             .values(job_title="Thủ kho"))
            ledger.wrote(keys[5], job_title="Thủ kho")
            live = {wire_key(w): w["public_id"] for w in emu.contacts()}
            emu.agent_update(live[keys[6]], note="Agent ghi chú")
            ledger.wrote(keys[6], note="Agent ghi chú")
            r = await rt.cycle()
            bad_keys = [keys[i] for i in bad]
            m = mirror(rt, emu, skip=bad_keys)
            return r, _errors(rt), ledger.lost(m, emu), bad_keys


BAD_EDITS = {0: {"email": "khong-phai-email"}, 1: {"phone": "09123"}}


async def test_bad_edits_of_synced_rows_are_row_errors_while_the_others_sync(
        sqlite_url: str, figures: Figures) -> None:
    r, errors, lost, bad = await _edit_synced_rows(sqlite_url, BAD_EDITS)
    named = zip(bad, ("email", "phone"), strict=True)
    figures.record("bad edits of synced rows: email, phone (sqlite)", runs=1,
                   bad_rows=len(bad), row_errors=r.counts["errors"], status=r.status,
                   exit_code=int(r.exit_code), lost=len(lost),
                   errors_naming_the_field=sum(w in errors.get(k, "") for k, w in named),
                   last_errors=sorted(set(errors.values())))
    assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
    assert sorted(errors) == sorted(bad)
    assert "email" in errors[bad[0]] and "phone" in errors[bad[1]], errors  # named
    assert not lost, lost


async def test_emptied_name_of_a_synced_row_is_a_row_error(sqlite_url: str,
                                                           figures: Figures) -> None:
    r, errors, lost, bad = await _edit_synced_rows(sqlite_url, {2: {"full_name": None}})
    figures.record("bad edit of a synced row: name emptied (sqlite)", runs=1, bad_rows=1,
                   status=r.status, exit_code=int(r.exit_code), row_errors=r.counts["errors"],
                   notes=list(r.notes))
    assert r.status == "partial" and r.exit_code == 3, (r.status, r.notes)
    assert "full_name" in errors.get(bad[0], ""), errors
    assert not lost, lost


async def test_unreadable_date_in_a_sqlite_date_column(sqlite_url: str,
                                                       figures: Figures) -> None:
    """SQLite stores whatever an app writes: a DATE column may hold '31/02/2000'."""
    config = EmulatorConfig(api_key=API_KEY, contacts=20, seed=53, add_more_delay=0.05)
    with EmulatorServer(config) as server:
        rt = make_runtime(server.url, sqlite_url)
        try:
            await settle(rt, server.emulator)
            with rt.db.begin() as conn:
                conn.execute(sa.insert(rt.local.table), [good_row("SQ-GOOD", 1)
                                                         | {"birthday": None}])
                conn.execute(sa.text("INSERT INTO contacts (ref_id, full_name, birthday) "
                                     "VALUES ('SQ-BAD', 'Bùi Thị Lỗi', '31/02/2000')"))
            r = await rt.cycle()
            error = _errors(rt).get("SQ-BAD", "")
            figures.record("unreadable date in a SQLite DATE column", runs=1, bad_rows=1,
                           status=r.status, exit_code=int(r.exit_code),
                           row_errors=r.counts["errors"], created=r.counts["created_remote"],
                           last_error=error)
            assert r.status == "partial" and r.exit_code == 3, r.notes
            assert "birthday" in error
            assert r.counts["created_remote"] == 1
        finally:
            rt.close()
