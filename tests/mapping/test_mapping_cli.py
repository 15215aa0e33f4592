"""`crm-sync check [--online]` on mapping files, through the CLI: exit 0 for every shipped
mapping, exit 2 naming the file, the line and the key for a bad one, every mismatch of an
existing table listed, and a dynamic field_code the tenant does not have refused online."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from typer.testing import CliRunner, Result

from sync.cli import app
from sync.emulator import EmulatorConfig, EmulatorServer
from sync.settings import load_settings
from sync.store import make_engine
from sync.store.journal import ABANDONED_RUN
from sync.store.migrate import upgrade
from sync.store.schema import note_outbox
from sync.store.state import StateStore

from .conftest import ERP, SHIPPED

runner = CliRunner()


def check(*args: str) -> tuple[int, str]:
    try:
        result: Result = runner.invoke(app, ["check", *args])
    finally:  # the command pointed structlog at the runner's stream, now closed
        structlog.reset_defaults()
    text = re.sub(r"\s+", " ", result.output)  # stdout and stderr
    return result.exit_code, text


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(api_key="demo-key")) as srv:
        yield srv


def write(tmp: Path, text: str) -> Path:
    path = tmp / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_mapping_passes_check(name: str, clean_env: Path, server: EmulatorServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(SHIPPED[name]))
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    code, out = check("--online")
    assert code == 0, out
    assert "dynamic attribute layout" in out


def test_the_default_mapping_is_used_when_none_is_set(clean_env: Path) -> None:
    code, out = check()
    assert code == 0, out
    assert "default.yaml" in out and "'contacts'" in out


@pytest.mark.parametrize(("text", "where", "words"), [
    ("table: customers\nfields:\n  - {field: full_name, column: ho_ten\n", ":4",
     "YAML syntax error: expected ',' or '}', but got '<stream end>' (while parsing a flow "
     "mapping started at line 3)"),
    ("table: customers\n  key_column: x\n", ":2", "YAML syntax error"),
    ("table: customers\nfields:\n  - {field: full_name, column: ho_ten}\n  - custom: Điểm\n"
     "    column: diem\n    tpye: integer\n", ":6", "unknown key 'tpye'"),
    ("tabel: customers\n", ":1", "unknown key 'tabel'"),
    ("fields:\n  - {field: gender, column: g, values: {Nam: male, Nữ: male}}\n", ":2",
     "not one-to-one"),
])
def test_a_bad_mapping_exits_2_naming_file_line_and_key(
        text: str, where: str, words: str, clean_env: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(clean_env, text)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    code, out = check()
    assert code == 2, out
    assert f"{path}{where}: " in out, out
    assert words in out


def test_a_missing_mapping_file_exits_2(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(clean_env / "nope.yaml"))
    code, out = check()
    assert code == 2 and "nope.yaml" in out and "cannot read" in out


def test_check_lists_every_mismatch_of_an_existing_table(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{clean_env}/erp.db"
    db = sa.create_engine(url)
    with db.begin() as conn:  # an ERP table that predates crm-sync
        conn.execute(sa.text(
            "CREATE TABLE customers (ma_kh TEXT, ho_ten TEXT, dien_thoai TEXT, diem TEXT, "
            "ngay_mua_gan_nhat INTEGER, thong_tin_khac TEXT)"))
    db.dispose()
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", url)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(ERP))
    code, out = check()
    assert code == 2, out
    for column in ("email", "gioi_tinh", "ngay_sinh", "nhom_kh", "omicall_id", "diem_thuong",
                   "hang"):
        assert f"'{column}'" in out, column
    assert "'diem' is TEXT" in out and "'ngay_mua_gan_nhat' is INTEGER" in out
    assert "primary key or unique" in out


def test_an_adopted_table_that_fits_passes(clean_env: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{clean_env}/erp.db"
    db = sa.create_engine(url)
    cols = ", ".join(["ma_kh VARCHAR(20) PRIMARY KEY", "ma_tham_chieu TEXT", "omicall_id TEXT",
                      "ho_ten NVARCHAR(200)", "dien_thoai VARCHAR(20)", "email TEXT",
                      "gioi_tinh TEXT", "ngay_sinh CHAR(10)", "dia_chi TEXT", "nhom_kh TEXT",
                      "ghi_chu TEXT", "nv_phu_trach TEXT", "diem INTEGER", "kenh TEXT",
                      "diem_thuong BIGINT", "hang TEXT", "ngay_mua_gan_nhat DATE",
                      "thong_tin_khac JSON", "ton_kho INTEGER"])  # and a column not mapped
    with db.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE customers ({cols})"))
    db.dispose()
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", url)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(ERP))
    code, out = check()
    assert code == 0, out


def _adopted(clean_env: Path, monkeypatch: pytest.MonkeyPatch, url: str, *extra: str,
             key: str = "VARCHAR(20) UNIQUE") -> tuple[int, str]:
    """`check` on the ERP mapping's table as it fits, with these columns too."""
    db = sa.create_engine(url)
    cols = ", ".join([f"ma_kh {key}", "ma_tham_chieu TEXT", "omicall_id TEXT",
                      "ho_ten TEXT", "dien_thoai TEXT", "email TEXT", "gioi_tinh TEXT",
                      "ngay_sinh TEXT", "dia_chi TEXT", "nhom_kh TEXT", "ghi_chu TEXT",
                      "nv_phu_trach TEXT", "diem INTEGER", "kenh TEXT", "diem_thuong BIGINT",
                      "hang TEXT", "ngay_mua_gan_nhat DATE", "thong_tin_khac JSON", *extra])
    with db.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS customers"))
        conn.execute(sa.text(f"CREATE TABLE customers ({cols})"))
    db.dispose()
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", url)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(ERP))
    return check()


def test_an_app_column_that_needs_a_value_is_refused(clean_env: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # before: check said ok, and every cycle failed on the first contact pulled
    code, out = _adopted(clean_env, monkeypatch, f"sqlite:///{clean_env}/erp.db",
                         "so_don_hang INTEGER NOT NULL", "ghi_chu_noi_bo TEXT")
    assert code == 2, out
    assert "'so_don_hang' is NOT NULL without a default" in out
    assert "ghi_chu_noi_bo" not in out


def test_app_columns_that_take_a_value_of_their_own_pass(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # and a key made unique by the column's own UNIQUE (SQLAlchemy does not reflect it on
    # SQLite: such a table was refused as having no unique key)
    code, out = _adopted(clean_env, monkeypatch, f"sqlite:///{clean_env}/erp.db",
                         "id INTEGER PRIMARY KEY", "trang_thai TEXT NOT NULL DEFAULT 'moi'",
                         "so_don_hang INTEGER")
    assert code == 0, out


def test_a_key_with_a_unique_index_of_its_own_passes(clean_env: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{clean_env}/erp.db"
    code, out = _adopted(clean_env, monkeypatch, url, key="VARCHAR(20) NOT NULL")
    assert code == 2 and "primary key or unique" in out, out
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE UNIQUE INDEX ix_ma_kh ON customers (ma_kh)"))
    code, out = check()
    assert code == 0, out


def test_a_char_key_column_on_postgresql_is_refused(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, fresh_pg_url: str) -> None:
    # PostgreSQL pads CHAR(n): every key read back differed from the CRM's refId, and the
    # next cycle sent every contact again as new (duplicates in the CRM)
    code, out = _adopted(clean_env, monkeypatch, fresh_pg_url, key="CHAR(40) UNIQUE")
    assert code == 2, out
    assert "'ma_kh' is CHAR(40), which PostgreSQL pads" in out
    code, out = _adopted(clean_env, monkeypatch, fresh_pg_url, "ma_cu CHAR(8)",
                         "id SERIAL PRIMARY KEY")  # a CHAR column that is not the key: fine
    assert code == 0, out


def test_a_number_column_that_rounds_on_postgresql_is_warned_of(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, fresh_pg_url: str) -> None:
    """PostgreSQL rounds a value to an INTEGER or NUMERIC(p,s) column's scale without a word,
    and the field is then synced at that precision (tests/engine/test_engine_number_scale.py).
    `check` says so (a warning: the table works), for number fields only, and not for a column
    that keeps every decimal."""
    db = sa.create_engine(fresh_pg_url)
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE sales (ma TEXT PRIMARY KEY, ten TEXT, "
                             "doanh_so NUMERIC(12,2), diem INTEGER, ty_le DOUBLE PRECISION, "
                             "tong NUMERIC, so_lan INTEGER)"))
    db.dispose()
    path = write(clean_env, "table: sales\nkey_column: ma\nref_code_column: null\n"
                 "crm_id_column: null\ncustom_fields_column: null\nfields:\n"
                 "  - {field: full_name, column: ten}\n"
                 "  - {custom: Doanh số, column: doanh_so, type: number}\n"
                 "  - {custom: Điểm, column: diem, type: number}\n"
                 "  - {custom: Tỷ lệ, column: ty_le, type: number}\n"
                 "  - {custom: Tổng, column: tong, type: number}\n"
                 "  - {custom: Số lần, column: so_lan, type: integer}\n")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", fresh_pg_url)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    code, out = check()
    assert code == 0, out
    assert ("warning: table 'sales': column 'doanh_so' is NUMERIC(12, 2), which keeps 2 "
            "decimals: a CRM value with more is stored rounded") in out
    assert "column 'diem' is INTEGER, which keeps no decimals" in out
    assert "'ty_le'" not in out and "'tong'" not in out and "'so_lan'" not in out


def _online(clean_env: Path, monkeypatch: pytest.MonkeyPatch, server: EmulatorServer,
            text: str) -> tuple[int, str]:
    path = write(clean_env, text)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    offline = check()
    assert offline[0] == 0, offline[1]  # only the tenant's layout can tell
    return check("--online")


@pytest.mark.parametrize(("entry", "words"), [
    ("{dynamic: zzNoSuchFld, field_type: single_text, column: x}",
     ["fields[1].dynamic", "'zzNoSuchFld' is not in the tenant's layout",
      "vWabCEBkqM (Điểm thưởng, single_text)"]),
    ("{dynamic: hTqLmZpXcR, field_type: radio, column: x}",
     ["is a select in the tenant's layout", "field_type 'radio'"]),
    ("{dynamic: hTqLmZpXcR, field_type: select, column: x, values: {G: Gold, S: Bạc}}",
     ["'Gold'", "not options of 'hTqLmZpXcR'"]),
])
def test_check_online_refuses_what_the_tenant_does_not_have(
        entry: str, words: list[str], clean_env: Path, server: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = f"fields:\n  - {{field: full_name, column: full_name}}\n  - {entry}\n"
    code, out = _online(clean_env, monkeypatch, server, text)
    assert code == 2, out
    assert "mapping.yaml:3:" in out.replace(" ", ""), out
    for w in words:
        assert w in out, w


def test_check_online_lists_the_tenants_dynamic_fields(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs promise that `check --online` lists the tenant's field codes (to copy into
    the mapping); it printed only how many there were."""
    text = ("fields:\n  - {field: full_name, column: full_name}\n"
            "  - {dynamic: hTqLmZpXcR, field_type: select, column: hang}\n")
    code, out = _online(clean_env, monkeypatch, server, text)
    assert code == 0, out
    assert ("dynamic attribute layout: 3 fields, the mapping's 1 present: "
            "vWabCEBkqM: Điểm thưởng, single_text "
            "hTqLmZpXcR: Hạng thành viên, select (options: Đồng, Bạc, Vàng, Kim cương); "
            "mapped to column 'hang' nBdYkWsEfJ: Ngày mua gần nhất, date") in out, out


def test_check_online_lists_a_layout_as_the_tenant_names_it(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout: list[dict[str, Any]] = [{"field_code": "qQ1", "field_name": "[VIP] khách",
                                     "field_type": "single_text", "is_required": True}]
    with EmulatorServer(EmulatorConfig(api_key="demo-key", layout=layout)) as srv:
        code, out = _online(clean_env, monkeypatch, srv, "fields:\n  - {field: phone, "
                            "column: phone}\n")
    assert code == 0, out
    assert ("dynamic attribute layout: 1 field, none mapped (`dynamic: <field_code>` with its "
            "`field_type` maps one): qQ1: [VIP] khách, single_text, required") in out, out
    with EmulatorServer(EmulatorConfig(api_key="demo-key", layout=[])) as srv:
        code, out = _online(clean_env, monkeypatch, srv, "fields:\n  - {field: phone, "
                            "column: phone}\n")
    assert code == 0 and "dynamic attribute layout: none" in out, out


def test_check_online_with_a_custom_layout(clean_env: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    layout: list[dict[str, Any]] = [{"field_code": "abcDEF1234", "field_name": "Sở thích",
                                     "field_type": "checkbox", "options": ["A", "B"]}]
    with EmulatorServer(EmulatorConfig(api_key="demo-key", layout=layout)) as srv:
        ok = "fields:\n  - {dynamic: abcDEF1234, field_type: checkbox, column: so_thich}\n"
        assert _online(clean_env, monkeypatch, srv, ok)[0] == 0
        erp_code, out = _online(clean_env, monkeypatch, srv, ERP.read_text(encoding="utf-8"))
    assert erp_code == 2
    assert out.count("is not in the tenant's layout") == 3


@pytest.mark.parametrize("where, code, words", [
    ("a-folder", 1, "unable to open database file"),  # SQLite cannot open a folder
    ("a-file/crm-sync.db", 2, "cannot make the SQLite file's folder"),
])
def test_a_database_that_cannot_be_opened_is_one_line_naming_the_setting(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch,
        where: str, code: int, words: str) -> None:
    """`sync` on a database it cannot open: one line naming CRM_SYNC_DATABASE_URL, no
    traceback (before: hundreds of lines of one)."""
    (clean_env / "a-folder").mkdir()
    (clean_env / "a-file").write_text("not a folder")
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{clean_env}/{where}")
    try:
        result: Result = runner.invoke(app, ["sync"])
    finally:
        structlog.reset_defaults()
    text = re.sub(r"\s+", " ", result.output)
    assert result.exit_code == code, result.output
    assert "CRM_SYNC_DATABASE_URL" in text and words in text
    assert "Traceback" not in text


def test_a_mistyped_table_is_refused_not_taken_for_an_empty_one(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a first sync, the mapping's `table:` is mistyped: the new, empty table would have
    every synced contact look deleted by the app. `check` and `sync` refuse it (exit 2), name
    the table and the setting, create nothing, and delete nothing in the CRM."""
    server = EmulatorServer(EmulatorConfig(api_key="demo-key", contacts=5)).start()
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    try:
        first = runner.invoke(app, ["sync"])
        assert first.exit_code in (0, 3), first.output
        before = len(server.emulator.contacts())
        typo = write(clean_env, SHIPPED["default"].read_text(encoding="utf-8").replace(
            "table: contacts", "table: contcats"))
        monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(typo))
        results = [runner.invoke(app, args) for args in (["check"], ["sync"])]
    finally:
        structlog.reset_defaults()
        server.stop()
    for result in results:
        text = re.sub(r"\s+", " ", result.output)
        assert result.exit_code == 2, result.output
        assert "'contcats' does not exist" in text and "CRM_SYNC_DATABASE_URL" in text
    assert not sa.inspect(sa.create_engine(f"sqlite:///{clean_env}/check.db")).has_table(
        "contcats")
    assert len(server.emulator.contacts()) == before


@pytest.mark.parametrize("env", ["", f"CRM_SYNC_MAPPING_FILE={ERP}\n"
                                     "CRM_SYNC_CONFLICT_POLICY=manual\n"
                                     "CRM_SYNC_TENANT=acme\nCRM_SYNC_PAGE_SIZE=7\n"])
def test_the_demo_runs_whatever_a_dot_env_written_for_sync_says(
        env: str, clean_env: Path) -> None:
    # README's `cp .env.example .env` may set another mapping: the demo crashed on it
    (clean_env / ".env").write_text(env, encoding="utf-8")
    try:
        result = runner.invoke(app, ["demo", "--database", str(clean_env / "demo.db")])
    finally:
        structlog.reset_defaults()
    assert result.exit_code == 0, result.output
    assert "first cycle" in result.output and "Traceback" not in result.output


def test_check_refuses_a_missing_api_key(clean_env: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # before: `check` said ok, and `sync` then refused to run (exit 2)
    monkeypatch.delenv("CRM_SYNC_API_KEY")
    code, out = check()
    assert code == 2, out
    # the reason fits the command run (before: "`sync` could not authenticate", from `check`)
    assert ("CRM_SYNC_API_KEY is not set (nor CRM_SYNC_API_KEY_FILE): `sync` and `run` need "
            "it to reach the CRM, so `check` does not pass without it") in out, out


def test_check_names_the_setting_of_a_database_url_that_is_not_one(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", "foo")  # was exit 1, an ArgumentError
    code, out = check()
    assert code == 2 and "CRM_SYNC_DATABASE_URL: not a database URL" in out, out


@pytest.mark.parametrize("command", [["check"], ["sync"], ["status"], ["db", "current"]])
@pytest.mark.parametrize("url", ["sqlite://shop.db", "sqlite://u:secretpw@shop.db"])
def test_a_sqlite_url_with_two_slashes_is_a_configuration_error(
        command: list[str], url: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sqlite://shop.db` makes shop.db a host: SQLAlchemy refused it only when the engine was
    made, and its ArgumentError reached the CLI as a failed cycle (exit 1)."""
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", url)
    try:
        result = runner.invoke(app, command)
    finally:
        structlog.reset_defaults()
    text = re.sub(r"\s+", " ", result.output)
    assert result.exit_code == 2, result.output
    assert "CRM_SYNC_DATABASE_URL: sqlite://" in text and "is not a SQLite file URL" in text
    assert "sqlite:///relative/path.db or sqlite:////absolute/path.db" in text, text
    assert "secretpw" not in text and "Traceback" not in text
    assert list(clean_env.iterdir()) == []


def test_a_url_its_dialect_refuses_names_the_setting_not_the_password(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", "postgresql+psycopg://u:secretpw@/db?port=x")
    code, out = check()
    assert code == 2, out
    assert "CRM_SYNC_DATABASE_URL: postgresql+psycopg://u:***@/db?port=x: " in out, out
    assert "non-integer port" in out and "secretpw" not in out


def test_check_shows_why_the_database_is_unreachable(clean_env: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # before: `cannot connect to ...: OperationalError`, while `sync` showed the driver's words
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", "postgresql+psycopg://u:secretpw@127.0.0.1:1/db")
    code, out = check()
    assert code == 2, out
    assert "CRM_SYNC_DATABASE_URL: cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/db: " \
        in out, out
    assert 'connection to server at "127.0.0.1", port 1 failed: Connection refused' in out, out
    assert "OperationalError" not in out and "secretpw" not in out


def test_check_says_what_failed_once_connected(clean_env: Path, fresh_pg_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after connecting was called `cannot connect` too. The driver's words, and
    the password masked even if a driver quoted it (psycopg does not: the test server
    trusts, so the password here is only there to be masked)."""
    url = sa.make_url(fresh_pg_url).set(password="secretpw")

    def refused(*_: object) -> list[str]:
        raise sa.exc.ProgrammingError("SELECT ...", {}, Exception(
            "permission denied for table contacts (as u:secretpw)\nDETAIL: more"))

    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setattr("sync.checks.check_table", refused)
    code, out = check()
    assert code == 2, out
    assert (f"CRM_SYNC_DATABASE_URL: connected to {url.render_as_string(hide_password=True)}, "
            "but reading the table 'contacts' failed: permission denied for table contacts "
            "(as u:***)") in out, out
    assert "cannot connect" not in out and "secretpw" not in out and "DETAIL" not in out


def test_an_empty_mapping_file_is_refused(clean_env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # before: taken for a table `contacts` with no field at all, and a sync created it
    path = write(clean_env, "# nothing yet\n")
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    code, out = check()
    assert code == 2 and f"{path}:1: the mapping file is empty" in out, out


def test_a_key_unique_only_through_a_partial_index_is_refused(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ON CONFLICT on the key cannot use a partial index: every insert would fail
    url = f"sqlite:///{clean_env}/erp.db"
    _adopted(clean_env, monkeypatch, url, key="VARCHAR(20) NOT NULL")
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE UNIQUE INDEX ix_ma_kh ON customers (ma_kh) "
                             "WHERE ma_kh <> ''"))
    code, out = check()
    assert code == 2 and "primary key or unique" in out, out


@pytest.mark.parametrize("pk", ["id BIGINT NOT NULL PRIMARY KEY", "id INT NOT NULL PRIMARY KEY"])
def test_an_app_primary_key_that_is_not_the_rowid_needs_a_value(
        pk: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # only a lone primary key declared exactly INTEGER is SQLite's rowid
    code, out = _adopted(clean_env, monkeypatch, f"sqlite:///{clean_env}/erp.db", pk)
    assert code == 2 and "'id' is NOT NULL without a default" in out, out


def test_an_app_primary_key_without_a_default_on_postgresql_is_refused(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, fresh_pg_url: str) -> None:
    code, out = _adopted(clean_env, monkeypatch, fresh_pg_url, "id INTEGER PRIMARY KEY")
    assert code == 2 and "'id' is NOT NULL without a default" in out, out
    code, out = _adopted(clean_env, monkeypatch, fresh_pg_url,
                         "id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    assert code == 0, out


def test_status_piped_keeps_whole_table_cells(clean_env: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # piped, rich cut the runs table at 80 columns ("2026-1…")
    try:
        assert runner.invoke(app, ["demo", "--database", str(clean_env / "d.db")]).exit_code == 0
        monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{clean_env}/d.db")
        monkeypatch.setenv("CRM_SYNC_TENANT", "demo")
        result = runner.invoke(app, ["status"])
    finally:
        structlog.reset_defaults()
    assert result.exit_code == 0, result.output
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", result.output), result.output
    assert "…" not in result.output


def test_check_warns_of_names_that_are_no_setting(clean_env: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # a misspelt setting was ignored without a word, in the environment or in .env
    monkeypatch.setenv("CRM_SYNC_INTERVAL", "30")
    (clean_env / ".env").write_text("CRM_SYNC_CONFLICT_POLCY=manual\n", encoding="utf-8")
    code, out = check()
    assert code == 0, out
    assert ("warning: CRM_SYNC_CONFLICT_POLCY is not a setting and is ignored: did you mean "
            "CRM_SYNC_CONFLICT_POLICY?") in out, out
    assert ("warning: CRM_SYNC_INTERVAL is not a setting and is ignored: did you mean "
            "CRM_SYNC_INTERVAL_SECONDS?") in out, out
    assert "CRM_SYNC_LOG_FORMAT is not" not in out  # a setting (clean_env sets it): no warning


def test_check_warns_that_a_mapping_without_the_name_cannot_create(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(clean_env, "fields:\n  - {field: phone, column: phone}\n")
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    code, out = check()
    assert code == 0 and "warning: the mapping has no full_name" in out, out


def test_a_sync_closes_the_runs_a_killed_process_left_running(
        clean_env: Path, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `sync` killed with kill -9 leaves its run `running`; only the daemon closed such runs
    (its last five), so `status` showed the one-shot's for good. The next cycle to hold the
    lock closes every one, however old; a dry run changes nothing."""
    monkeypatch.setenv("CRM_SYNC_BASE_URL", server.url)
    monkeypatch.setenv("CRM_SYNC_API_KEY", "demo-key")
    try:
        assert runner.invoke(app, ["sync"]).exit_code == 0
        settings = load_settings()
        store = StateStore(make_engine(settings.database_url), settings.tenant_id)
        killed = [store.start_run("sync") for _ in range(7)]  # older than the daemon's five
        assert runner.invoke(app, ["sync", "--dry-run"]).exit_code == 0
        assert [r["status"] for r in store.last_runs(20) if r["id"] in killed] == [
            "running"] * len(killed)
        assert runner.invoke(app, ["sync"]).exit_code == 0
    finally:
        structlog.reset_defaults()
    runs = {r["id"]: r for r in store.last_runs(20)}
    assert [(runs[i]["status"], runs[i]["message"]) for i in killed] == [
        ("failed", ABANDONED_RUN)] * len(killed)
    assert not [r for r in runs.values() if r["status"] == "running"]


@pytest.mark.parametrize(("path", "folder"), [("shopp.db", ""), ("nodir/shop.db", "nodir")])
def test_check_warns_of_a_missing_sqlite_file_and_creates_nothing(
        path: str, folder: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped path passed as `ok database` (and left an empty file, its folder too): the
    first sync then filled a new database with the whole CRM. A warning (exit 0: a first
    setup has no file yet), and nothing created."""
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{path}")
    before = sorted(clean_env.iterdir())
    code, out = check()
    assert code == 0, out
    assert (f"warning: the SQLite file {clean_env / path} does not exist: the first `sync` "
            "creates it") in out, out
    assert (f"(and its folder {clean_env / folder})" in out) == bool(folder), out
    assert "ok database" not in out
    assert sorted(clean_env.iterdir()) == before


def test_check_refuses_a_sqlite_file_under_a_file(clean_env: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "a-file").write_text("not a folder")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", f"sqlite:///{clean_env}/a-file/sub/x.db")
    code, out = check()
    assert code == 2, out
    assert f"{clean_env}/a-file is a file, not a folder" in out and "CRM_SYNC_DATABASE_URL" in out


@pytest.mark.parametrize(("table", "close"), [
    ("customer", "'customers'"), ("Customer", "'customers'"), ("zzz_unrelated", "")])
def test_check_warns_of_a_mapped_table_that_does_not_exist(
        table: str, close: str, db_url: str, clean_env: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a database whose table is `customers`, `table: customer` said `ok`, and the first
    sync made a new table and pulled the whole CRM into it. A warning listing the database's
    own tables (not crm-sync's bookkeeping, nor its notes tables), the closest one named."""
    upgrade(db_url)  # the bookkeeping tables, as after another tenant's first sync
    db = sa.create_engine(db_url)
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (ma_kh TEXT PRIMARY KEY, ho_ten TEXT)"))
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("CREATE TABLE khach (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("CREATE TABLE contact_notes (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("CREATE TABLE other_notes (id INTEGER PRIMARY KEY)"))
        now = datetime.now(UTC)  # another tenant's notes table, named by the outbox
        conn.execute(sa.insert(note_outbox).values(
            tenant="other", notes_table="other_notes", note_id=1, status="sent",
            created_at=now, updated_at=now))
    db.dispose()
    path = write(clean_env, f"table: {table}\nkey_column: ma_kh\n"
                 "fields:\n  - {field: full_name, column: ho_ten}\n")
    monkeypatch.setenv("CRM_SYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("CRM_SYNC_MAPPING_FILE", str(path))
    code, out = check()
    assert code == 0, out
    expected = (f"warning: table {table!r} does not exist: the first `sync` creates it and "
                "pulls every CRM contact into it; the database has tables: customers, khach, "
                "orders")
    assert expected + (f": did you mean {close}?" if close else " ok database") in out, out
    assert not sa.inspect(make_engine(db_url)).has_table(table)


def test_check_says_so_of_a_database_without_tables(clean_env: Path) -> None:
    sqlite3.connect(clean_env / "check.db").close()  # an empty file, as `touch` makes
    code, out = check()
    assert code == 0, out
    assert ("warning: table 'contacts' does not exist: the first `sync` creates it and pulls "
            "every CRM contact into it; the database has no tables of its own yet") in out, out


def test_status_and_db_current_create_no_database(clean_env: Path) -> None:
    try:
        status = runner.invoke(app, ["status"])
        current = runner.invoke(app, ["db", "current"])
    finally:
        structlog.reset_defaults()
    missing = f"the SQLite file {clean_env / 'check.db'} does not exist"
    assert status.exit_code == 1 and missing in re.sub(r"\s+", " ", status.output), status.output
    assert current.exit_code == 0 and missing in re.sub(r"\s+", " ", current.output)
    assert not (clean_env / "check.db").exists()
