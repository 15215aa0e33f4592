"""The converter, case by case: typed custom and dynamic columns, value maps, defaults, the JSON
column of unmapped custom fields, what a push keeps, and the base seen through a new mapping."""

from __future__ import annotations

from datetime import date

import pytest

from sync.convert import EXTRA_PREFIX, MAPPING_KEY, Converter, RowError, validate_for_push
from sync.mapping_file import load_mapping, parse_mapping
from sync.merge import PullUpdate, PushUpdate, plan_contact
from sync.record import Contact, CustomEntry, DynamicValue, Item
from sync.scalars import round_to_scale

from .conftest import ERP

erp = Converter(load_mapping(ERP))


def crm(**kw: object) -> Contact:
    base: dict[str, object] = {"ref_id": "KH-1", "full_name": "Nguyễn Thị Ánh Tuyết"}
    return Contact(**{**base, **kw})  # type: ignore[arg-type]


def one(entry: str, **top: str) -> Converter:
    head = "".join(f"{k}: {v}\n" for k, v in top.items())
    return Converter(parse_mapping(f"{head}fields:\n  - {entry}\n"))


def test_erp_columns_from_a_crm_contact() -> None:
    c = crm(phones=(Item("0393123456", "personal"), Item("0281234567", "office")),
            gender="female", birthday=date(1990, 5, 17), tags=frozenset({"VIP", "Khách lẻ"}),
            custom=(CustomEntry("Điểm", "90"), CustomEntry("Màu sắc yêu thích", "Vàng"),
                    CustomEntry("Kênh", "Zalo")),
            dynamic={"vWabCEBkqM": DynamicValue("single_text", ("1250",)),
                     "hTqLmZpXcR": DynamicValue("select", ("Kim cương",)),
                     "nBdYkWsEfJ": DynamicValue("date", ("01/02/2025",))})
    row = erp.row_values(erp.remote_fields(c))
    assert row == row | {
        "ho_ten": "Nguyễn Thị Ánh Tuyết", "dien_thoai": "+84393123456", "gioi_tinh": "Nữ",
        "ngay_sinh": "17/05/1990", "nhom_kh": "Khách lẻ;VIP", "diem": 90, "kenh": "Zalo",
        "hang": "KC", "ngay_mua_gan_nhat": date(2025, 2, 1), "diem_thuong": 1250,
        "thong_tin_khac": {"Màu sắc yêu thích": "Vàng"}}


@pytest.mark.parametrize(("entry", "contact", "words"), [
    ("{custom: Điểm, column: d, type: integer}", crm(custom=(CustomEntry("Điểm", "90.5"),)),
     "custom field 'Điểm' ('90.5') does not fit column 'd'"),
    ("{custom: Ngày, column: d, type: date}", crm(custom=(CustomEntry("Ngày", "hôm qua"),)),
     "not a date"),
    ("{custom: VIP, column: d, type: boolean}", crm(custom=(CustomEntry("VIP", "có lẽ"),)),
     "not a yes/no value"),
    ("{dynamic: x, field_type: single_text, column: d, type: number}",
     crm(dynamic={"x": DynamicValue("single_text", ("1e999",))}), "not a finite number"),
    ("{dynamic: x, field_type: number, column: d, type: integer}",  # "." is the decimal point
     crm(dynamic={"x": DynamicValue("number", ("1.250",))}), "'1.250' is not an integer"),
    ("{field: tags, column: d, format: delimited}", crm(tags=frozenset({"Hà Nội, HCM"})),
     "contains the separator ','"),
    ("{dynamic: x, field_type: select, column: d, type: integer, values: {1: Vàng}}",
     crm(dynamic={"x": DynamicValue("select", ("Bạc",))}), "'Bạc' is not an integer"),
])
def test_a_crm_value_the_column_cannot_take_is_a_row_error(entry: str, contact: Contact,
                                                           words: str) -> None:
    with pytest.raises(RowError, match="does not fit column 'd'") as info:
        one(entry).remote_fields(contact)
    assert words in str(info.value)


@pytest.mark.parametrize(("entry", "row", "words"), [
    ("{custom: Điểm, column: d, type: integer}", {"d": "chín mươi"}, "not an integer"),
    ("{field: birthday, column: d, type: text, date_format: dd/MM/yyyy}",
     {"d": "1990-05-17"}, "not a date in the format 'dd/MM/yyyy'"),
    ("{field: tags, column: d}", {"d": "[1, "}, "not valid JSON"),
    ("{field: tags, column: d}", {"d": '{"a": 1}'}, "not a JSON array"),
    ("{field: full_name, column: d}", {"d": "Ánh".encode()}, "holds bytes (a BLOB)"),
    ("{custom: Điểm, column: d, type: integer}", {"d": b"9"}, "holds bytes (a BLOB)"),
    ("{field: tags, column: d}", {"d": bytearray(b"[]")}, "holds bytes (a BLOB)"),
])
def test_a_local_value_that_does_not_fit_is_a_row_error_naming_the_column(
        entry: str, row: dict[str, object], words: str) -> None:
    with pytest.raises(RowError, match=r"column 'd': ") as info:
        one(entry).row_fields(row)
    assert words in str(info.value)


def test_the_json_column_must_hold_an_object_of_plain_values() -> None:
    conv = one("{field: full_name, column: ho_ten}")
    with pytest.raises(RowError, match="column 'custom_fields': not a JSON object"):
        conv.row_fields({"custom_fields": "[1]"})
    with pytest.raises(RowError, match="'Màu' holds a list"):
        conv.row_fields({"custom_fields": {"Màu": ["Đỏ"]}})
    assert conv.row_fields({"custom_fields": {"Điểm": 90, "VIP": True}}) == {
        MAPPING_KEY: conv.signature, "full_name": None, "ref_code": None,
        EXTRA_PREFIX + "Điểm": "90", EXTRA_PREFIX + "VIP": "true"}


def test_value_maps_match_loosely_and_write_the_maps_spelling() -> None:
    conv = one("{custom: Kênh, column: k, values: {web: Website, zalo: Zalo OA}}")
    for word in ("Website", "website", " WEBSITE ", "web"):  # "web": a local word in the CRM
        assert conv.remote_fields(crm(custom=(CustomEntry("Kênh", word),)))["custom:Kênh"] == \
            "Website"
    assert conv.row_values({"custom:Kênh": "Website"}) == {"k": "web"}
    assert conv.row_fields({"k": "ZALO"})["custom:Kênh"] == "Zalo OA"
    # a value the map does not know passes through unchanged, both ways
    assert conv.row_fields({"k": "Cửa hàng"})["custom:Kênh"] == "Cửa hàng"
    assert conv.row_values({"custom:Kênh": "Cửa hàng"}) == {"k": "Cửa hàng"}


def test_gender_words_without_a_map() -> None:
    conv = one("{field: gender, column: g}")
    assert [conv.row_fields({"g": w})["gender"] for w in ("Nam", "nữ", "KHÁC", "Male")] == [
        "male", "female", "other", "male"]
    assert validate_for_push({"full_name": "A", "gender": "trai"}) == [
        "gender 'trai' is not male, female or other (map the column's words with `values:` in "
        "the mapping)"]


def test_a_default_is_what_the_column_holds_for_no_value() -> None:
    conv = one("{custom: Điểm, column: diem, type: integer, default: 0}")
    assert conv.remote_fields(crm())["custom:Điểm"] is None
    assert conv.row_values({"custom:Điểm": None}) == {"diem": 0}
    assert conv.row_fields({"diem": 0})["custom:Điểm"] is None  # 0 is "no value": not pushed
    assert conv.row_fields({"diem": None})["custom:Điểm"] is None
    zero = crm(custom=(CustomEntry("Điểm", "0"),))  # ...and a CRM "0" is no change either
    assert conv.remote_fields(zero)["custom:Điểm"] is None
    assert conv.row_fields({"diem": 7})["custom:Điểm"] == 7


def test_phone_format_and_lists() -> None:
    conv = one("{field: phones, column: p, phone_format: e164}")
    fields = conv.remote_fields(crm(phones=(Item("0393123456"), Item("84281234567"))))
    assert fields["phones"] == ("0393123456", "0281234567")
    assert conv.row_values(fields)["p"] == ["+84393123456", "+84281234567"]
    assert conv.row_fields({"p": '["+84 393 123 456", "0393123456"]'})["phones"] == (
        "0393123456",)
    assert conv.remote_fields(crm())["phones"] is None  # no value is None, lists too


def test_an_agent_edit_of_one_unmapped_custom_field_keeps_the_others_in_the_row() -> None:
    conv = one("{field: full_name, column: ho_ten}")
    row = {"ho_ten": "A", "custom_fields": {"Màu": "Đỏ", "Kênh": "Zalo", "Nguồn": "Web"}}
    changes = {EXTRA_PREFIX + "Màu": "Xanh", EXTRA_PREFIX + "Nguồn": None}
    assert conv.row_values(changes, row) == {"custom_fields": {"Kênh": "Zalo", "Màu": "Xanh"}}
    # a whole record (it carries the mapping's fingerprint) replaces the object
    assert conv.row_values({MAPPING_KEY: conv.signature, EXTRA_PREFIX + "A": "1"}, row) == {
        "custom_fields": {"A": "1"}}


def test_a_push_keeps_what_the_mapping_does_not_cover() -> None:
    previous = crm(
        phones=(Item("0393123456", "personal"), Item("0281234567", "office")),
        custom=(CustomEntry("Điểm", "90", "label1"), CustomEntry("Ghi chú", "x", "label2"),
                CustomEntry("Ghi chú", "y", "label2"), CustomEntry("Màu sắc yêu thích", "Đỏ")),
        dynamic={"vWabCEBkqM": DynamicValue("single_text", ("10",)),
                 "zzOther": DynamicValue("checkbox", ("A", "B"))})
    local = erp.remote_fields(previous) | {"phone": "0909000111", "custom:Điểm": 95,
                                           "dynamic:vWabCEBkqM": 11,
                                           EXTRA_PREFIX + "Màu sắc yêu thích": None}
    sent = erp.to_contact("KH-1", local, previous)
    assert sent.phones == (Item("0909000111", "personal"), Item("0281234567", "office"))
    assert sent.custom == (CustomEntry("Điểm", "95", "label1"), CustomEntry("Ghi chú", "x",
                           "label2"), CustomEntry("Ghi chú", "y", "label2"))
    assert sent.dynamic["vWabCEBkqM"] == DynamicValue("single_text", ("11",))
    assert sent.dynamic["zzOther"] == DynamicValue("checkbox", ("A", "B"))
    assert sent.dynamic["hTqLmZpXcR"] == DynamicValue("select", ())  # mapped, empty: cleared


def test_without_a_json_column_unmapped_custom_fields_are_left_alone() -> None:
    conv = one("{custom: Điểm, column: d}", custom_fields_column="null")
    previous = crm(custom=(CustomEntry("Điểm", "1"), CustomEntry("Màu", "Đỏ")))
    fields = conv.remote_fields(previous)
    assert not any(k.startswith(EXTRA_PREFIX) for k in fields)
    sent = conv.to_contact("KH-1", fields | {"custom:Điểm": "2"}, previous)
    assert sent.custom == (CustomEntry("Điểm", "2"), CustomEntry("Màu", "Đỏ"))


def _cycle(old: Converter, new: Converter, contact: Contact, row: dict[str, object]
           ) -> tuple[PullUpdate | None, PushUpdate | None]:
    """One contact synced under `old`, then planned under `new` with a row the operator's
    ALTER TABLE just gave its new, empty columns."""
    base = old.remote_fields(contact)
    plan = plan_contact("KH-1", new.rebase(base), new.row_fields(row),
                        new.remote_fields(contact))
    pull = next((a for a in plan.actions if isinstance(a, PullUpdate)), None)
    push = next((a for a in plan.actions if isinstance(a, PushUpdate)), None)
    return pull, push


OLD = "table: t\nfields:\n  - {field: full_name, column: ten}\n"


@pytest.mark.parametrize(("new", "row", "pulled"), [
    # a new standard field, a new custom column, a new dynamic column, new list columns
    ("  - {field: job_title, column: cv}\n", {}, {"job_title": "Kế toán"}),
    ("  - {custom: Kênh, column: kenh}\n", {}, {"custom:Kênh": "Zalo"}),
    ("  - {dynamic: dS, field_type: single_text, column: ds, type: integer}\n", {},
     {"dynamic:dS": 7}),
    ("  - {field: tags, column: nhom}\n", {}, {"tags": frozenset({"VIP"})}),
])
def test_a_new_column_is_pulled_never_pushed_empty(new: str, row: dict[str, object],
                                                   pulled: dict[str, object]) -> None:
    contact = crm(job_title="Kế toán", tags=frozenset({"VIP"}),
                  custom=(CustomEntry("Kênh", "Zalo"),),
                  dynamic={"dS": DynamicValue("single_text", ("7",))})
    old = Converter(parse_mapping(OLD))
    pull, push = _cycle(old, Converter(parse_mapping(OLD + new)), contact,
                        {"ten": contact.full_name, "custom_fields": {"Kênh": "Zalo"}} | row)
    assert push is None
    assert pull is not None and pull.changes == pulled


def test_a_re_pointed_column_is_pulled_once_rebase_sees_the_mapping_changed() -> None:
    contact = crm(custom=(CustomEntry("Kênh", "Zalo"),))
    old = Converter(parse_mapping(OLD + "  - {custom: Kênh, column: kenh}\n"))
    new = Converter(parse_mapping(OLD + "  - {custom: Kênh, column: kenh_moi}\n"))
    pull, push = _cycle(old, new, contact, {"ten": contact.full_name, "kenh": "Zalo"})
    assert push is None and pull is not None and pull.changes == {"custom:Kênh": "Zalo"}
    # without the rebase, the engine would push the new, empty column: what rebase prevents
    plan = plan_contact("KH-1", old.remote_fields(contact), new.row_fields({"ten": "x"}),
                        new.remote_fields(contact))
    assert any(isinstance(a, PushUpdate) for a in plan.actions)


def test_rebase_keeps_a_base_the_mapping_still_reads_the_same_way() -> None:
    base = erp.remote_fields(crm(custom=(CustomEntry("Màu sắc yêu thích", "Đỏ"),)))
    assert erp.rebase(base) == base
    legacy = {k: v for k, v in base.items() if k != MAPPING_KEY} | {"custom:Màu": "Đỏ"}
    assert erp.rebase(legacy) == {k: v for k, v in base.items() if k != MAPPING_KEY}
    assert erp.rebase(base | {EXTRA_PREFIX + "Gone": None}) == base


# --- a number column that keeps only so many decimals (an adopted NUMERIC(p,s), INTEGER) -------

SCALED = OLD + ("  - {custom: Doanh số, column: doanh_so, type: number}\n"
                "  - {dynamic: dS, field_type: single_text, column: diem, type: number}\n")


def test_a_scaled_columns_crm_value_is_read_rounded_and_kept_in_the_crm_when_unchanged(
        ) -> None:
    conv = Converter(parse_mapping(SCALED), {"doanh_so": 2, "diem": 0, "ten": 1})
    assert conv.scales == {"doanh_so": 2, "diem": 0}  # number columns only
    contact = crm(custom=(CustomEntry("Doanh số", "1234.565"),),
                  dynamic={"dS": DynamicValue("single_text", ("-2.5",))})
    fields = conv.remote_fields(contact)
    assert (fields["custom:Doanh số"], fields["dynamic:dS"]) == (1234.57, -3.0)
    assert conv.row_values(fields)["doanh_so"] == 1234.57
    # pushing another field's edit sends the CRM's own decimals back unchanged
    sent = conv.to_contact("KH-1", fields | {"full_name": "Nguyễn Ánh"}, contact)
    assert (sent.full_name, sent.custom, sent.dynamic) == (
        "Nguyễn Ánh", contact.custom, contact.dynamic)
    # an edit of the number itself is sent
    sent = conv.to_contact("KH-1", fields | {"custom:Doanh số": 20.5}, contact)
    assert sent.custom == (CustomEntry("Doanh số", "20.5"),)


def test_a_base_is_compared_as_the_scaled_column_holds_it() -> None:
    """A scale is no change of mapping: a base recorded before the scale was read, or at
    another scale, is read rounded as the column now holds it."""
    spec = parse_mapping(SCALED)
    assert Converter(spec, {"doanh_so": 2}).signature == Converter(spec).signature
    base = Converter(spec).remote_fields(crm(custom=(CustomEntry("Doanh số", "1234.567"),)))
    assert Converter(spec, {"doanh_so": 2}).rebase(base)["custom:Doanh số"] == 1234.57
    assert Converter(spec, {"doanh_so": 1}).rebase(base)["custom:Doanh số"] == 1234.6
    assert Converter(spec).rebase(base) == base


def test_a_crm_value_that_rounds_to_the_fields_default_reads_as_no_value() -> None:
    """As the column gives it back: else the row read later looks like an app's clearing of
    the field, which would erase the CRM's value."""
    conv = Converter(parse_mapping(
        OLD + "  - {custom: Điểm, column: diem, type: number, default: 0}\n"), {"diem": 0})
    contact = crm(custom=(CustomEntry("Điểm", "0.4"),))
    fields = conv.remote_fields(contact)
    assert fields["custom:Điểm"] is None
    assert conv.row_fields(conv.row_values(fields))["custom:Điểm"] is None
    assert conv.rebase(fields | {"custom:Điểm": 0.4})["custom:Điểm"] is None
    sent = conv.to_contact("KH-1", fields | {"full_name": "Ân"}, contact)
    assert sent.custom == contact.custom


@pytest.mark.parametrize(("num", "scale", "held"), [
    (1234.567, 2, 1234.57), (10.005, 2, 10.01), (-10.005, 2, -10.01), (2.5, 0, 3.0),
    (-2.5, 0, -3.0), (0.1 + 0.2, 2, 0.3), (99.5, 2, 99.5), (12.0, 0, 12.0), (1e20, 2, 1e20),
    (1234.5, -2, 1200.0), (1.005, 2, 1.01), (1.00499999, 2, 1.0), (0.0, 3, 0.0)])
def test_round_to_scale_rounds_the_decimal_a_float_stands_for_half_away_from_zero(
        num: float, scale: int, held: float) -> None:
    assert round_to_scale(num, scale) == held
    assert round_to_scale(held, scale) == held  # what a column holds reads as itself
