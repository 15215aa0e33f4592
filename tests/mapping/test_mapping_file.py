"""Loading and validating mapping files: every error names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.errors import MappingError
from sync.mapping_file import load_mapping, parse_mapping
from sync.merge import Direction

from .conftest import SHIPPED

HEAD = "table: customers\nkey_column: ma_kh\nfields:\n"


def error(text: str) -> MappingError:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, "m.yaml")
    return info.value


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_mappings_load(name: str) -> None:
    spec = load_mapping(SHIPPED[name])
    assert spec.fields and spec.key_column in spec.columns


def test_the_top_level_default_is_the_packaged_one() -> None:
    assert SHIPPED["top-level default"].resolve() == SHIPPED["default"].resolve()


def test_unknown_top_level_key_is_named_with_its_line() -> None:
    e = error(HEAD + "  - {field: full_name, column: ho_ten}\ncustom_field_column: x\n")
    assert (e.file, e.line, e.key) == ("m.yaml", 5, "custom_field_column")
    assert "unknown key 'custom_field_column'" in str(e)
    assert str(e).startswith("m.yaml:5: ")


def test_unknown_key_inside_a_field_entry_is_named_with_its_line() -> None:
    e = error(HEAD + "  - field: full_name\n    column: ho_ten\n  - custom: Điểm\n"
              "    column: diem\n    colunm_type: integer\n")
    assert (e.line, e.key) == (8, "fields[1].colunm_type")
    assert "unknown key 'colunm_type'" in str(e)


def test_yaml_syntax_error_names_file_and_line() -> None:
    e = error(HEAD + "  - {field: full_name, column: ho_ten\n  - {field: phone}\n")
    assert e.file == "m.yaml" and e.line in (4, 5)
    assert "YAML syntax error" in str(e)


def test_a_key_given_twice_is_refused() -> None:
    e = error(HEAD + "  - field: full_name\n    column: ho_ten\n    column: ten\n")
    assert (e.line, e.key) == (6, "column") and "given twice" in str(e)


def test_every_problem_is_listed_with_its_line() -> None:
    e = error(HEAD + "  - {field: full_name, column: ho_ten, typo: 1}\n"
              "  - {custom: Điểm, column: diem, type: integr}\n"
              "  - {dynamic: abc, column: x}\n")
    text = str(e)
    assert "unknown key 'typo'" in text.splitlines()[0]
    assert "m.yaml:5:" in text and "fields[1].type" in text
    assert "m.yaml:6:" in text and "field_type" in text


@pytest.mark.parametrize(("entry", "key", "words"), [
    ("{column: x}", "fields[0].column", "give exactly one"),
    ("{field: full_name, custom: Tên, column: x}", "fields[0].custom", "exactly one"),
    ("{field: fullname, column: x}", "fields[0].field", "unknown standard field 'fullname'"),
    ("{field: ref_code, column: x}", "fields[0].field", "ref_code_column"),
    ("{field: full_name}", "fields[0].column", "'column' is required"),
    ("{dynamic: vWabCEBkqM, column: x}", "fields[0].field_type", "needs its `field_type`"),
    ("{dynamic: vWabCEBkqM, field_type: dropdown, column: x}", "fields[0].field_type",
     "unknown field_type 'dropdown', one of: "),
    ("{dynamic: vWabCEBkqM, field_type: text, column: x}", "fields[0].field_type", "one of"),
    ("{custom: Điểm, field_type: number, column: x}", "fields[0].field_type",
     "dynamic attributes only"),
    ("{field: phone, column: x, type: integer}", "fields[0].type", "possible types: text"),
    ("{custom: Điểm, column: x, type: json}", "fields[0].type", "cannot be kept in a json"),
    ("{dynamic: d, field_type: date, column: x, type: integer}", "fields[0].type", "date, text"),
    ("{dynamic: d, field_type: select, column: x, type: boolean}", "fields[0].type", "text, "),
    ("{field: tags, column: x, type: integer}", "fields[0].type", "json, text"),
    ("{field: tags, column: x, format: delimited, separator: ''}", "fields[0].separator",
     "at least 1 character"),
    ("{field: tags, column: x, separator: ';'}", "fields[0].separator", "format: delimited"),
    ("{field: full_name, column: x, format: delimited}", "fields[0].format", "list fields"),
    ("{field: birthday, column: x, type: text, date_format: '%d/%m/%y'}",
     "fields[0].date_format", "4-digit year"),
    ("{field: birthday, column: x, type: text, date_format: dd/MM}", "fields[0].date_format",
     "the day, the month and the 4-digit year"),
    ("{field: birthday, column: x, type: text, date_format: '%d %B %Y'}",
     "fields[0].date_format", "locale"),
    ("{field: birthday, column: x, date_format: dd/MM/yyyy}", "fields[0].date_format",
     "type: text"),
    ("{field: email, column: x, phone_format: e164}", "fields[0].phone_format", "phone"),
    ("{field: gender, column: x, values: {Nam: male, Nữ: male}}", "fields[0].values",
     "not one-to-one: CRM value 'male'"),
    ("{field: gender, column: x, values: {Nam: male, nam: female}}", "fields[0].values",
     "not one-to-one: local value"),
    ("{field: gender, column: x, values: {Nam: man}}", "fields[0].values", "male, female"),
    ("{field: birthday, column: x, values: {a: b}}", "fields[0].values", "does not apply"),
    ("{field: gender, column: x, type: integer, values: {'01': male}}", "fields[0].values",
     "as '1'"),
    ("{field: gender, column: x, type: boolean, values: {có: male}}", "fields[0].values",
     "as 'true'"),
    ("{custom: Điểm, column: x, type: integer, default: nhiều}", "fields[0].default",
     "does not fit column 'x' (integer)"),
    ("{custom: Ngày, column: x, type: date, default: 31/02/2020}", "fields[0].default",
     "does not fit"),
    ("{field: tags, column: x, default: {a: 1}}", "fields[0].default", "does not fit"),
    ("{field: full_name, column: '  x'}", "fields[0].column", "not a usable"),
    ("{field: full_name, column: " + "x" * 64 + "}", "fields[0].column", "63 bytes"),
])
def test_field_entry_errors_name_the_key(entry: str, key: str, words: str) -> None:
    e = error(HEAD + f"  - {entry}\n")
    assert e.key == key, str(e)
    assert e.line == 4 and e.file == "m.yaml"
    assert words in str(e)


@pytest.mark.parametrize(("text", "key", "words"), [
    ("fields:\n  - {field: phone, column: dt}\n  - {field: email, column: dt}\n",
     "fields[1].column", "mapped twice"),
    ("fields:\n  - {custom: Điểm, column: a}\n  - {custom: 'Điểm ', column: b}\n",
     "fields[1]", "custom field 'Điểm' is mapped twice"),
    ("fields:\n  - {field: phone, column: a}\n  - {field: phones, column: b}\n",
     "fields[1]", "either phone"),
    ("fields:\n  - {field: phone, column: ref_id}\n", "fields[0].column", "key_column"),
    ("crm_id_column: ref_code\n", "crm_id_column", "already the ref_code_column"),
    ("table: erp.customers\n", "table", "schema"),
    ("notes_table: contacts\n", "notes_table", "must not be"),
    ("direction: pull\nfields:\n  - {field: phone, column: a, direction: push}\n",
     "fields[0].direction", "pull-only"),
    ("direction: sideways\n", "direction", "'both', 'pull' or 'push'"),
    ("fields: {field: phone}\n", "fields", "tuple"),
    ("- a\n- b\n", "", "top level"),
])
def test_table_level_errors_name_the_key(text: str, key: str, words: str) -> None:
    e = error(text)
    assert e.key == key, str(e)
    assert words in str(e) and e.line is not None


def test_yaml_12_scalars() -> None:
    spec = parse_mapping("fields:\n  - {custom: Có hàng, column: co_hang, "
                         "values: {yes: 'Có', no: Không, on: Bật, 010: mười}}\n")
    assert spec.fields[0].values == {"yes": "Có", "no": "Không", "on": "Bật", "10": "mười"}
    spec = parse_mapping("fields:\n  - {custom: VIP, column: vip, type: boolean, "
                         "values: {true: Có, false: Không}}\n")
    assert spec.fields[0].values == {"true": "Có", "false": "Không"}


def test_labels_are_unicode_normalised() -> None:
    nfd = "Đi\u0065\u0302\u0309m"  # "Điểm" typed with combining marks (macOS editors)
    spec = parse_mapping(f"fields:\n  - {{custom: '{nfd}', column: diem}}\n")
    assert spec.fields[0].custom == "Điểm" and spec.claimed_custom == {"Điểm"}


def test_date_format_accepts_both_notations() -> None:
    for fmt in ("dd/MM/yyyy", "'%d/%m/%Y'", "yyyy.MM.dd", "'%Y%m%d'"):
        parse_mapping(f"fields:\n  - {{field: birthday, column: b, type: text, "
                      f"date_format: {fmt}}}\n")


def test_directions_follow_the_table() -> None:
    spec = parse_mapping("direction: push\nfields:\n  - {field: phone, column: a}\n"
                         "  - {field: email, column: b, direction: pull}\n")
    d = spec.directions()
    assert d["phone"] is Direction.PUSH and d["email"] is Direction.PULL
    assert d.get("custom_fields:Màu") is Direction.PUSH  # unmapped custom fields too
    assert d["ref_code"] is Direction.PUSH


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_refused(text: str) -> None:
    # it read as a table with no field at all, which a sync then created
    with pytest.raises(MappingError, match="the mapping file is empty") as caught:
        parse_mapping(text, "m.yaml")
    # it named mappings/default.yaml, a folder a pip-installed crm-sync does not have
    start_from = str(caught.value).rsplit("start from the default mapping, ", 1)[1]
    assert Path(start_from).is_file() and start_from.endswith("default.yaml")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("fields:\n  - {custom: \xd0i\xeam, column: x}\n".encode("latin-1"))
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(bad)
