"""A local row's problems, as its row error says them: every problem of the row at once (the
columns that cannot be read, and what the CRM would refuse of those that can), each named by
its column and the value as the column holds it, so that the user fixes the row once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pytest

from sync.convert import Converter, RowError, validate_for_push
from sync.mapping_file import parse_mapping
from sync.record import Contact

MAPPING = """\
fields:
  - {field: full_name, column: ho_ten}
  - {field: phone, column: sdt}
  - {field: email, column: thu}
  - {field: birthday, column: ngay_sinh, type: text, date_format: dd/MM/yyyy}
  - {field: gender, column: gt, values: {Nam: male, Nữ: female}}
"""
conv = Converter(parse_mapping(MAPPING))
GOOD: dict[str, object] = {"ho_ten": "Trần Văn Bình", "sdt": "0912 345 678",
                           "thu": "binh.tran@example.vn", "ngay_sinh": "17/05/1990", "gt": "Nam"}


def _row_error(c: Converter, row: Mapping[str, object]) -> str:
    with pytest.raises(RowError) as info:
        c.row_fields(row)
    return str(info.value)


def test_a_row_with_a_bad_date_phone_and_email_is_one_error_naming_the_three_columns() -> None:
    row = GOOD | {"ngay_sinh": "31/02/1990", "sdt": "12-34", "thu": "binh.tran(at)example.vn"}
    assert _row_error(conv, row) == (
        "column 'ngay_sinh': '31/02/1990' is not a date in the format 'dd/MM/yyyy'; "
        "column 'thu': 'binh.tran(at)example.vn' is not an email address; "
        "column 'sdt': '12-34' is not a phone number")


def test_every_column_that_cannot_be_read_is_named() -> None:
    c = Converter(parse_mapping(MAPPING + "  - {custom: Điểm, column: diem, type: integer}\n"))
    row = GOOD | {"ngay_sinh": "1990-05-17", "diem": "chín mươi", "ho_ten": b"\xff",
                  "custom_fields": {"Màu": ["Đỏ"], "Kênh": "Zalo", "Cỡ": {"áo": "M"}}}
    assert _row_error(c, row) == (
        "column 'ho_ten': holds bytes (a BLOB), not text or a number: write it as text; "
        "column 'ngay_sinh': '1990-05-17' is not a date in the format 'dd/MM/yyyy'; "
        "column 'diem': 'chín mươi' is not an integer; "
        "column 'custom_fields': 'Màu' holds a list, not a plain value; "
        "column 'custom_fields': 'Cỡ' holds a dict, not a plain value")  # no "name is empty"


def test_a_readable_rows_push_problems_name_the_column_and_what_it_holds() -> None:
    row = GOOD | {"ho_ten": "  ", "sdt": "12-34", "thu": "binh.tran(at)example.vn",
                  "gt": "Trai"}
    assert conv.push_problems(conv.row_fields(row), row) == [
        "column 'ho_ten' is empty: the CRM requires a name",
        "column 'thu': 'binh.tran(at)example.vn' is not an email address",
        "column 'sdt': '12-34' is not a phone number",
        "column 'gt': 'Trai' is not male, female or other (map the column's words with "
        "`values:` in the mapping)"]
    assert conv.push_problems(conv.row_fields(GOOD), GOOD) == []


def test_list_columns_name_the_item_as_written() -> None:
    c = Converter(parse_mapping("""\
fields:
  - {field: full_name, column: ho_ten}
  - {field: phones, column: cac_sdt}
  - {field: emails, column: cac_thu, format: delimited, separator: ";"}
"""))
    row = {"ho_ten": "A", "cac_sdt": '["0912 345 678", "12-34", "+84 (0) 99"]',
           "cac_thu": "a@example.vn; b(at)example.vn"}
    assert c.push_problems(c.row_fields(row), row) == [
        "column 'cac_thu': 'b(at)example.vn' is not an email address",
        "column 'cac_sdt': '12-34' is not a phone number",
        "column 'cac_sdt': '+84 (0) 99' is not a phone number"]


def test_a_value_the_row_does_not_hold_is_the_crms() -> None:
    # an update's fields are the merge's: a field may carry the CRM's value, not the row's
    fields = conv.row_fields(GOOD) | {"phone": "1234"}
    assert conv.push_problems(fields, GOOD) == ["the CRM's phone '1234' is not a phone number"]
    assert conv.push_problems(fields) == ["phone '1234' is not a phone number"]  # no row


def test_a_name_no_column_holds() -> None:
    c = Converter(parse_mapping("fields:\n  - {field: phone, column: sdt}\n"))
    row = {"sdt": "0912345678"}
    assert c.push_problems(c.row_fields(row), row) == [
        "full_name is empty: the CRM requires a name, and the mapping gives it no column"]
    # an update sends the CRM's own name
    assert c.push_problems(c.row_fields(row), row, Contact(ref_id="K", full_name="A")) == []
    # a row that does not read is not also said to lack the name (a create or an update?)
    assert _row_error(c, {"sdt": b"0"}) == (
        "column 'sdt': holds bytes (a BLOB), not text or a number: write it as text")


def test_a_pull_only_table_says_only_what_it_cannot_read() -> None:
    c = Converter(parse_mapping("direction: pull\n" + MAPPING))
    row = GOOD | {"ngay_sinh": "31/02/1990", "sdt": "12-34"}
    assert _row_error(c, row) == (
        "column 'ngay_sinh': '31/02/1990' is not a date in the format 'dd/MM/yyyy'")


def test_a_date_column_read_back_as_text_names_the_value() -> None:
    c = Converter(parse_mapping("fields:\n  - {field: birthday, column: ngay_sinh}\n"))
    assert _row_error(c, {"ngay_sinh": "2000-02-31"}) == (
        "column 'ngay_sinh': '2000-02-31' is not a date (yyyy-mm-dd)")
    assert c.row_fields({"ngay_sinh": "2000-02-28"})["birthday"] == date(2000, 2, 28)


def test_validate_for_push_still_names_the_fields() -> None:
    assert validate_for_push({"full_name": None, "phones": ("1234",), "emails": ("x",)}) == [
        "full_name is empty: the CRM requires a name", "email 'x' is not an email address",
        "phone '1234' is not a phone number"]
