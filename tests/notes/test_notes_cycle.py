"""After a real sync cycle (contacts pulled from the emulator into the local table by the
engine), notes by ref_id go out with the phone the engine wrote, as the wired cycle will do."""

from __future__ import annotations

import secrets
from collections import Counter

from sync.emulator import EmulatorConfig, EmulatorServer
from sync.notes import NotesOutbox
from sync.runtime import build_runtime
from sync.settings import load_settings

from .conftest import API_KEY


async def test_notes_after_a_cycle(db_url: str) -> None:
    with EmulatorServer(EmulatorConfig(api_key=API_KEY)) as server:
        crm = server.emulator
        made = {f"erp-{i}": crm.agent_create(full_name=f"Đỗ Văn {i}", ref_id=f"erp-{i}",
                                             phones=[f"+84 98 765 43{i:02d}"])
                for i in range(25)}
        made["crm-only"] = crm.agent_create(full_name="Bùi Thị E", phones=["0977000111"])
        settings = load_settings(base_url=server.url, api_key=API_KEY, database_url=db_url,
                                 tenant=f"t-{secrets.token_hex(4)}", max_retries=0)
        rt = build_runtime(settings)
        try:
            result = await rt.cycle()
            assert result.status == "ok" and result.counts["created_local"] == 26
            outbox = NotesOutbox(rt.db, settings.tenant_id, rt.spec, rt.local)
            outbox.ensure_table()
            assert outbox.table is not None
            with rt.db.begin() as conn:
                conn.execute(outbox.table.insert(), [
                    {"ref_id": key, "content": f"Gọi lại cho {key}", "note_by": "hoa@shop.vn"}
                    for key in made if key != "crm-only"])
                conn.execute(outbox.table.insert(), [
                    {"ref_id": f"crm:{made['crm-only']}", "content": "Khách từ tổng đài",
                     "phone": None, "note_by": None}])
            async with rt.client() as client:
                assert await outbox.push(client) == Counter(notes_sent=26)
        finally:
            rt.close()
    got = {n["content"]: n for n in crm.notes}
    assert len(crm.notes) == 26
    for i in range(25):
        note = got[f"Gọi lại cho erp-{i}"]
        assert note["phone"] == f"09876543{i:02d}" and note["note_by"] == "hoa@shop.vn"
        assert note["public_id"] == made[f"erp-{i}"]  # the CRM finds the contact by phone
    assert got["Khách từ tổng đài"]["public_id"] == made["crm-only"]
