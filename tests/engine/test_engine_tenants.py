"""Two tenants in one database: each needs a table of its own. A tenant with no bookkeeping
yet over a table another tenant syncs (a second CRM pointed at the same mapping, or a tenant
renamed) would merge two CRMs' contacts and push each to the other: refused, naming both,
with nothing written on either side; `crm-sync check` refuses it too."""

from __future__ import annotations

import pytest

from sync.checks import run_checks
from sync.errors import ConfigError

from .conftest import MakeHarness
from .helpers import write_calls


async def test_a_second_tenant_on_a_table_another_tenant_syncs_is_refused(
        make_harness: MakeHarness) -> None:
    a = make_harness({"contacts": 12, "seed": 31})
    assert (await a.cycle()).status == "ok"
    rows_a = a.rows()
    b = make_harness({"contacts": 8, "seed": 32})  # another CRM, the same database and mapping
    crm_b = b.crm()

    r = await b.cycle()
    assert r.status == "failed" and r.exit_code == 2  # the configuration is wrong
    message = " ".join(r.notes)
    tenant_a = a.rt.settings.tenant_id
    assert f"holds 12 rows that tenant {tenant_a!r} syncs" in message
    assert f"CRM_SYNC_TENANT={tenant_a}" in message
    assert not write_calls(r.api_calls) and b.crm() == crm_b
    assert a.rows() == rows_a and b.states() == {}
    with pytest.raises(ConfigError, match=f"tenant {tenant_a!r} syncs"):
        run_checks(b.rt.settings)
    assert (await a.cycle()).exit_code == 0  # the first tenant goes on as before


async def test_a_tenant_over_a_table_of_its_own_rows_is_not_refused(
        make_harness: MakeHarness) -> None:
    """Rows an app wrote before the first cycle are not another tenant's: they are created in
    the CRM as usual."""
    h = make_harness({"contacts": 3, "seed": 33})
    h.insert({"ref_id": "APP-1", "full_name": "Phạm Thị Hoa", "phone": "0912345678"})
    r = await h.cycle()
    assert r.status == "ok" and r.counts["created_remote"] == 1
    assert run_checks(h.rt.settings)


async def test_a_second_tenant_on_the_notes_table_another_tenant_sends_is_refused(
        make_harness: MakeHarness) -> None:
    """README: several tenants may share a database, "each with a table (and notes table) of
    its own". A second CRM's mapping copied from the first with only `table:` changed keeps
    `notes_table: contact_notes`: its first cycle sent every note the first tenant had already
    sent (and each later one) to its own CRM, to whichever of its contacts has the same refId,
    another customer; `crm-sync check` passed it."""
    from sync.settings import default_mapping_file

    a = make_harness({"contacts": 5, "seed": 31})
    assert (await a.cycle()).status == "ok"
    key = next(k for k in a.rows() if not k.startswith("crm:"))
    a.execute("INSERT INTO contact_notes (ref_id, content, note_by) "
              "VALUES (:k, 'Chỉ cho CRM A', 'lan@shop.vn')", k=key)
    assert (await a.cycle()).status == "ok"
    assert len(a.emulator.notes) == 1

    mapping_b = default_mapping_file().read_text(encoding="utf-8").replace(
        "table: contacts ", "table: contacts_b ", 1)
    assert "table: contacts_b" in mapping_b and "notes_table: contact_notes" in mapping_b
    b = make_harness({"contacts": 5, "seed": 32}, mapping=mapping_b)
    assert key in b.crm()  # the same refId, another customer of another CRM
    r = await b.cycle()
    assert b.emulator.notes == [], "CRM A's note was sent to CRM B"
    assert r.status == "failed" and r.exit_code == 2, (r.status, r.notes)
    with pytest.raises(ConfigError, match="contact_notes"):
        run_checks(b.rt.settings)
