"""`crm-sync demo`: the emulator with sample Vietnamese contacts, real cycles over real HTTP
into a fresh SQLite file, with agent edits, app edits and one conflict in between."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from sync.cycle import CycleOptions
from sync.emulator import EmulatorConfig, EmulatorServer
from sync.merge import Policy
from sync.report import print_cycle
from sync.runtime import Runtime, build_runtime
from sync.settings import default_mapping_file, load_settings

API_KEY = "demo-key"


def run_demo(console: Console, *, contacts: int = 60, database: str = "crm-sync-demo.db") -> int:
    path = Path(database)
    for stale in (path, Path(f"{database}-wal"), Path(f"{database}-shm")):
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    config = EmulatorConfig(api_key=API_KEY, contacts=contacts, seed=7, page_size_cap=25,
                            add_more_delay=0.3)
    with EmulatorServer(config) as server:
        console.rule("[bold]crm-sync demo")
        console.print(f"OMICall emulator on {server.url} with {contacts} Vietnamese contacts "
                      f"(pages capped at 25); local database: sqlite file {path}")
        # Its own settings where they shape the script: a .env written for `sync` (another
        # mapping, another policy) is not the demo's.
        settings = load_settings(base_url=server.url, api_key=API_KEY,
                                 database_url=f"sqlite:///{path}", pending_recheck_seconds=5,
                                 max_delete_fraction=0.2, mapping_file=default_mapping_file(),
                                 tenant="demo", conflict_policy=Policy.REMOTE_WINS,
                                 page_size=1000, batch_size=100, import_workers=0)
        rt = build_runtime(settings)
        try:
            worst = _script(console, rt, server.emulator)
        finally:
            rt.close()
    console.rule(f"done in {time.monotonic() - started:.1f}s")
    console.print(f"Inspect the result: sqlite3 {path} 'select ref_id, full_name, phone, email "
                  "from contacts limit 10'")
    return worst


def _cycle(console: Console, rt: Runtime, title: str, full: bool = False) -> int:
    result = asyncio.run(rt.cycle(CycleOptions(full=full, kind="full" if full else "sync")))
    print_cycle(console, result, title)
    return int(result.exit_code)


def _script(console: Console, rt: Runtime, emu: object) -> int:
    from sync.emulator import Emulator

    assert isinstance(emu, Emulator)
    codes = [_cycle(console, rt, "1. first cycle: the CRM's contacts arrive in the table")]
    table = rt.local.table
    with rt.db.begin() as conn:
        rows = conn.execute(sa.select(table).where(table.c.ref_id.not_like("crm:%"))
                            .order_by(table.c.ref_id).limit(4)).mappings().all()
    a, b, c, d = (dict(r) for r in rows)

    console.print("\n[bold]Meanwhile[/] an agent works in the CRM and an app in the table:")
    emu.agent_update(a["crm_id"], job_title="Trưởng phòng kinh doanh")
    console.print(f"  agent: {a['full_name']} -> job title 'Trưởng phòng kinh doanh'")
    emu.agent_create(full_name="Lê Thị Hồng Nhung", phones=["+84 912 345 678"],
                     tags=["Khách lẻ"])
    console.print("  agent: new contact Lê Thị Hồng Nhung, entered in the CRM (no refId)")
    emu.agent_update(b["crm_id"], note="Khách hẹn gọi lại chiều thứ Sáu")
    console.print(f"  agent: {b['full_name']} -> note 'Khách hẹn gọi lại chiều thứ Sáu'")
    emu.agent_update(c["crm_id"], address="12 Lý Thường Kiệt, Hoàn Kiếm, Hà Nội")
    with rt.db.begin() as conn:
        conn.execute(table.update().where(table.c.ref_id == a["ref_id"])
                     .values(email="khachhang.moi@example.vn"))
        conn.execute(table.update().where(table.c.ref_id == c["ref_id"])
                     .values(address="45 Nguyễn Huệ, Quận 1, TP. Hồ Chí Minh"))
        conn.execute(table.insert().values(
            ref_id="ERP-0001", full_name="Phạm Quốc Bảo", phone="0987 654 321",
            email="Bao.Pham@Example.VN", gender="male", birthday=date(1990, 5, 17),
            tags=["Khách sỉ"]))
        conn.execute(table.delete().where(table.c.ref_id == d["ref_id"]))
        if rt.notes.table is not None:
            conn.execute(rt.notes.table.insert().values(
                ref_id=b["ref_id"], content="Đơn hàng #1234 đã giao, khách hài lòng",
                note_by="lan.nguyen@shop.vn"))
    console.print(f"  app:   {a['full_name']} -> email khachhang.moi@example.vn "
                  "(a different field than the agent's: both survive)")
    console.print(f"  app:   {c['full_name']} -> another address [yellow](conflict: the agent "
                  "changed it too; remote_wins)[/]")
    console.print("  app:   inserts ERP-0001 Phạm Quốc Bảo; deletes " + d["ref_id"])
    console.print(f"  app:   a note for {b['full_name']} in contact_notes (for the agents)")
    codes.append(_cycle(console, rt, "2. second cycle: both directions, one conflict"))

    time.sleep(0.5)  # add-more is asynchronous: the CRM shows the new contact a moment later
    codes.append(_cycle(console, rt, "3. third cycle: the create is confirmed, nothing else "
                        "to do (zero write calls)"))
    for note in emu.notes:
        console.print(f"  the CRM got the note for {note.get('phone')}: {note.get('content')!r}")
    found = emu.find_by_ref_id("ERP-0001")
    console.print(f"  the CRM has ERP-0001 {len(found)} time(s)")
    crm_a = _attrs(emu.contact(a["crm_id"]) or {})
    with rt.db.connect() as conn:
        local_a = conn.execute(sa.select(table).where(table.c.ref_id == a["ref_id"])
                               ).mappings().one()
    console.print(f"  {a['full_name']}: in the CRM job title {crm_a.get('job_title')!r}, email "
                  f"{crm_a.get('mail')!r}; in the table job title {local_a['job_title']!r}, "
                  f"email {local_a['email']!r}")
    return max(codes)


def _attrs(contact: dict[str, Any]) -> dict[str, str]:
    """First display value per field_code of a wire contact (for the account above)."""
    return {a["field_code"]: a["value"][0]["display_value"]
            for a in contact.get("attribute_structure", []) if a.get("value")}
