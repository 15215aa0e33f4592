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
