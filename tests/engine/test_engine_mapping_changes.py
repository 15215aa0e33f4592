"""The mapping file changed between cycles (a field removed, then mapped again), with edits
made in the CRM while the field was not mapped.

README ("Changing a mapping"): a field added or whose mapping changed "is taken from the CRM at
the next sync, like a new one"; "the next sync fills the column from the CRM for every contact".
A column that was unmapped for a while holds what it held when it was unmapped: stale. It must
not be sent over what agents did in the CRM meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.runtime import build_runtime
from sync.settings import default_mapping_file

from .conftest import MakeHarness
from .helpers import Harness, first, write_calls

DEFAULT = default_mapping_file().read_text(encoding="utf-8")
WITHOUT_JOB_TITLE = DEFAULT.replace("  - {field: job_title, column: job_title}\n", "")


def use_mapping(h: Harness, text: str, tmp_path: Path, name: str) -> None:
    """The operator edits the mapping file and restarts crm-sync."""
    assert text != DEFAULT or name == "default"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    settings = h.rt.settings.model_copy(update={"mapping_file": path})
    h.rt.close()
    h.rt = build_runtime(settings, transport=h.rt.transport)


def job_title(h: Harness, key: str) -> str | None:
    """The column as the app reads it, mapped or not."""
    with h.rt.db.connect() as conn:
        return conn.execute(sa.text("SELECT job_title FROM contacts WHERE ref_id = :k"),
                            {"k": key}).scalar_one()


@pytest.mark.parametrize("policy,agent_value", [("remote_wins", None),
                                                ("local_wins", None),
                                                ("local_wins", "Kế toán trưởng")],
                         ids=["remote_wins-cleared", "local_wins-cleared", "local_wins-edited"])
async def test_a_field_mapped_again_is_taken_from_the_crm_not_from_its_stale_column(
        make_harness: MakeHarness, tmp_path: Path, policy: str,
        agent_value: str | None) -> None:
    assert WITHOUT_JOB_TITLE != DEFAULT
    h = make_harness({"contacts": 0}, conflict_policy=policy)
    pid = h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1",
                                  job_title="Kế toán", note="n1")
    r = await h.cycle()
    assert r.status == "ok" and job_title(h, "KH-1") == "Kế toán"

    # job_title is taken out of the mapping for a while
    use_mapping(h, WITHOUT_JOB_TITLE, tmp_path, "without-job-title")
    # meanwhile an agent changes (or clears) the job title
    h.emulator.agent_update(pid, job_title=agent_value)
    r = await h.cycle()
    assert r.status == "ok", r.notes
    assert job_title(h, "KH-1") == "Kế toán"  # not mapped: left alone (README)

    # job_title is mapped again: the next sync fills the column from the CRM
    use_mapping(h, DEFAULT, tmp_path, "default")
    r = await h.cycle()
    wire = h.crm()["KH-1"]
    assert first(wire, "job_title") == agent_value, (
        "the stale column overwrote the agent's job title in the CRM", r.api_calls)
    assert job_title(h, "KH-1") == agent_value
    assert not write_calls(r.api_calls), r.api_calls


WITH_KENH = DEFAULT.replace("  - {field: owner_email, column: owner_email}\n",
                            "  - {field: owner_email, column: owner_email}\n"
                            "  - {custom: Kênh, column: kenh}\n")


async def test_a_custom_field_moved_to_a_column_the_app_filled_first_is_not_stuck(
        make_harness: MakeHarness, tmp_path: Path) -> None:
    """README, "Changing a mapping": moving a custom field from the JSON column to a column of
    its own works like adding a field. An engineer who fills the new column from the JSON
    first (so that the app sees the values at once) leaves the rows as agreed: no action, so
    the agreed base keeps `custom_fields:Kênh`, which the row no longer gives (a claimed label
    is ignored in the JSON). The next time the contact changes in the CRM, the row read as the
    base no longer matches the row re-read under lock: "changed by an app during the cycle",
    every cycle, and the agent's edit never reaches the table."""
    assert WITH_KENH != DEFAULT
    h = make_harness({"contacts": 0})
    pid = h.emulator.agent_create(full_name="Nguyễn Văn An", ref_id="KH-1", note="n1",
                                  custom={"Kênh": "Zalo"})
    r = await h.cycle()
    assert r.status == "ok" and h.row("KH-1")["custom_fields"] == {"Kênh": "Zalo"}

    # the operator adds the column, fills it from the JSON, and maps the label to it
    h.execute("ALTER TABLE contacts ADD COLUMN kenh TEXT")
    h.execute("UPDATE contacts SET kenh = 'Zalo' WHERE ref_id = 'KH-1'")
    use_mapping(h, WITH_KENH, tmp_path, "with-kenh")
    r = await h.cycle()
    assert r.status == "ok" and not write_calls(r.api_calls), (r.notes, r.api_calls)

    # an agent edits the contact's note: it reaches the table within a few cycles
    h.emulator.agent_update(pid, note="n2")
    for _ in range(3):
        r = await h.cycle()
    assert r.counts.get("skipped_changed_during_cycle", 0) == 0, r.counts
    assert h.row("KH-1")["note"] == "n2"


async def test_notes_in_a_new_notes_table_are_sent(make_harness: MakeHarness,
                                                   tmp_path: Path) -> None:
    """The mapping's `notes_table` pointed at a new table (renamed for a new app version, or
    dropped and made again: its ids start at 1 again). `note_outbox` is keyed by (tenant,
    note id) only, so the new table's notes whose ids the old table's sent notes had are
    taken as sent: never delivered, and `notes status` counts them as sent."""
    h = make_harness({"contacts": 4, "seed": 41})
    assert (await h.cycle()).status == "ok"
    key = next(k for k in h.rows() if not k.startswith("crm:"))
    for text in ("cũ 1", "cũ 2"):
        h.execute("INSERT INTO contact_notes (ref_id, content) VALUES (:k, :c)", k=key, c=text)
    await h.cycle()
    assert sorted(n["content"] for n in h.emulator.notes) == ["cũ 1", "cũ 2"]

    use_mapping(h, DEFAULT.replace("notes_table: contact_notes ", "notes_table: ghi_chu_moi "),
                tmp_path, "new-notes-table")
    await h.cycle()  # creates the new notes table
    for text in ("mới 1", "mới 2", "mới 3"):
        h.execute("INSERT INTO ghi_chu_moi (ref_id, content) VALUES (:k, :c)", k=key, c=text)
    await h.cycle()
    assert sorted(n["content"] for n in h.emulator.notes) == [
        "cũ 1", "cũ 2", "mới 1", "mới 2", "mới 3"]


async def test_a_mapped_column_dropped_while_running_fails_the_cycle_in_one_line(
        make_harness: MakeHarness) -> None:
    """A running daemon does not read the table's shape again: a mapped column dropped under
    it fails each cycle. The failure says so in one line (the database's words, the start of
    the statement, a pointer to `check`), without the statement's parameters: customers'
    data, bound in an insert or update, which goes on to logs, sync_runs and the terminal."""
    h = make_harness({"contacts": 30, "seed": 53})
    assert (await h.cycle()).status == "ok"
    key = next(k for k in h.rows() if not k.startswith("crm:"))
    h.update(key, full_name="Tên Riêng Của Ứng Dụng")
    h.execute("ALTER TABLE contacts DROP COLUMN job_title")
    r = await h.cycle()
    assert r.status == "failed"
    note = r.notes[0]
    assert "no such column" in note or "does not exist" in note, note
    assert "crm-sync check" in note and "\n" not in note and len(note) < 400, note
    assert "Tên Riêng" not in note and "parameters" not in note.lower(), note
