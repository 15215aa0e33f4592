"""Hypothesis strategies for the round-trip tests: values as the CRM holds them (given to the
emulator's agent interface) and as a local column holds them, for any mapped field.

Vietnamese text throughout: precomposed and decomposed diacritics, đ, stray spaces.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import date
from typing import Any

from hypothesis import strategies as st

from sync.mapping import FieldMap, MappingSpec
from sync.scalars import canon_value

VIET = ("aăâbcdđeêghiklmnoôơpqrstuưvxyàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữự"
        "ỳýỷỹỵAĂÂĐÊÔƠƯÀÁẢÃẠỄỆỘỨ")
ALPHABET = VIET + "  0123456789.,-'/()&"  # no ; or | : the separators the mappings use
GENDER_WORDS = ("male", "female", "other", "Nam", "Nữ", "Khác", "MALE")
BOOL_WORDS = ("true", "false", "1", "0", "có", "Không", "yes", "NO")
LAYOUT: list[dict[str, Any]] = [
    {"field_code": "dSingle", "field_name": "Điểm thưởng", "field_type": "single_text"},
    {"field_code": "dMulti", "field_name": "Ghi chú thêm", "field_type": "multi_text"},
    {"field_code": "dNumber", "field_name": "Số lần mua", "field_type": "number"},
    {"field_code": "dDate", "field_name": "Ngày mua", "field_type": "date"},
    {"field_code": "dRadio", "field_name": "Đã xác minh", "field_type": "radio",
     "options": ["Có", "Không"]},
    {"field_code": "dSelect", "field_name": "Hạng", "field_type": "select",
     "options": ["Đồng", "Bạc", "Vàng", "Kim cương"]},
    {"field_code": "dCheck", "field_name": "Sở thích", "field_type": "checkbox",
     "options": ["Thể thao", "Du lịch", "Ẩm thực", "Đọc sách"]},
    {"field_code": "vWabCEBkqM", "field_name": "Điểm thưởng (mặc định)",
     "field_type": "single_text"},
    {"field_code": "hTqLmZpXcR", "field_name": "Hạng thành viên", "field_type": "select",
     "options": ["Đồng", "Bạc", "Vàng", "Kim cương"]},
    {"field_code": "nBdYkWsEfJ", "field_name": "Ngày mua gần nhất", "field_type": "date"},
]
OPTIONS = {f["field_code"]: f.get("options", []) for f in LAYOUT}


def _maybe_nfd(text: str) -> st.SearchStrategy[str]:
    return st.sampled_from([text, unicodedata.normalize("NFD", text), f" {text}  "])


text = st.text(ALPHABET, min_size=1, max_size=30).filter(str.strip).flatmap(_maybe_nfd)
lines = st.lists(text, min_size=1, max_size=3).map("\n".join)
dates = st.dates(date(1900, 1, 1), date(2100, 12, 31))
ints = st.integers(-10**15, 10**15)
floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
mobiles = st.integers(10**8, 10**9 - 1).map(lambda n: f"09{n % 10**8:08d}")
phone_forms = mobiles.flatmap(lambda p: st.sampled_from(
    [p, "84" + p[1:], f"+84 {p[1:4]} {p[4:7]} {p[7:]}", f"{p[:4]}.{p[4:7]}.{p[7:]}"]))
emails = st.tuples(st.from_regex(r"[a-z][a-z0-9.]{0,10}", fullmatch=True),
                   st.sampled_from(["gmail.com", "Vnpt.VN", "cong-ty.vn"])).map(
    lambda t: f"{t[0]}@{t[1]}").flatmap(lambda e: st.sampled_from([e, e.upper()]))
tags = st.frozensets(text, max_size=4)


def _none_or(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), s)


# --- the CRM side: kwargs of Emulator.agent_create ---------------------------------------------

def crm_scalar(f: FieldMap) -> st.SearchStrategy[Any]:
    """A value the CRM may hold for a custom field or a single-valued dynamic attribute, that
    the field's column can take."""
    if f.values:
        if f.dynamic is not None and OPTIONS[f.dynamic]:
            return st.sampled_from(list(f.values.values()))  # the options, exactly
        words = list(f.values.values()) + list(f.values)  # local words too: read as mapped
        return st.sampled_from(words).flatmap(
            lambda w: st.sampled_from([w, w.upper(), w.lower(), f" {w} "]))
    if f.dynamic is not None and OPTIONS[f.dynamic]:
        return st.sampled_from(OPTIONS[f.dynamic])
    kind = f.kind
    if kind == "integer":
        return ints.flatmap(lambda n: st.sampled_from([str(n), f" {n} ", f"{n}.0", f"{n},00"]))
    if kind == "number":
        return st.one_of(floats.map(repr), ints.map(str), st.just("1,5"))
    if kind == "date":
        fmts = ["%d/%m/%Y"] if f.dynamic is not None else ["%d/%m/%Y", "%Y-%m-%d"]
        return st.tuples(dates, st.sampled_from(fmts)).map(lambda t: t[0].strftime(t[1]))
    if kind == "boolean":
        return st.sampled_from(BOOL_WORDS)
    return lines if kind == "multiline" else text


def crm_contact(spec: MappingSpec, ref_id: str) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "full_name": text, "ref_id": st.just(ref_id), "ref_code": _none_or(text),
        "phones": st.lists(st.tuples(phone_forms, st.sampled_from(["home", "personal",
                                                                    "office"])), max_size=3),
        "emails": st.lists(emails, max_size=2), "tags": tags.map(sorted),
        "gender": _none_or(st.sampled_from(["male", "female", "other"])),
        "birthday": _none_or(dates), "address": _none_or(text), "job_title": _none_or(text),
        "passport": _none_or(text), "note": _none_or(lines), "owner_email": _none_or(emails)}
    custom: dict[str, st.SearchStrategy[Any]] = {}
    dynamic: dict[str, st.SearchStrategy[Any]] = {}
    for f in spec.fields:
        if f.custom is not None:
            custom[f.custom] = _none_or(crm_scalar(f))
        elif f.dynamic is not None and f.field_type == "checkbox":
            dynamic[f.dynamic] = st.lists(st.sampled_from(OPTIONS[f.dynamic]), unique=True,
                                          max_size=3)
        elif f.dynamic is not None:
            dynamic[f.dynamic] = _none_or(crm_scalar(f))
        if f.field == "tags" and f.values:
            fields["tags"] = st.lists(st.sampled_from(list(f.values.values())), unique=True)
    extra = st.dictionaries(st.sampled_from(["Màu sắc yêu thích", "Sở thích", "Nguồn"]), text,
                            max_size=3)
    return st.fixed_dictionaries({
        **fields, "custom": st.tuples(st.fixed_dictionaries(custom), extra).map(
            lambda t: {**t[1], **t[0]}),
        "dynamic": st.fixed_dictionaries(dynamic)})


# --- the local side: a row of the mapped table -------------------------------------------------

def column_value(f: FieldMap) -> st.SearchStrategy[Any]:
    """A value an app may write into the field's column, that the CRM accepts."""
    if f.values:  # the map's local words, as the column types them
        col = f.column_type
        return st.sampled_from([k if col == "text" else canon_value(col, k) for k in f.values])
    if f.dynamic is not None and OPTIONS[f.dynamic]:
        one = st.sampled_from(OPTIONS[f.dynamic])
        if f.is_list:
            many = st.lists(one, unique=True, min_size=1, max_size=3)
            return many.map(f.separator.join) if f.format == "delimited" else many
        return one
    kind, col = f.kind, f.column_type
    if kind in ("set", "phones", "emails"):
        item = {"set": text, "phones": phone_forms, "emails": emails}[kind]
        many = st.lists(item, min_size=1, max_size=4)
        if f.format == "delimited":
            return many.map(f.separator.join)
        return many.map(json.dumps) if col == "text" else many  # JSON in a text column
    if kind == "date":
        return dates.map(lambda d: d.strftime(f.strftime)) if col == "text" else dates
    simple: dict[str, st.SearchStrategy[Any]] = {
        "integer": ints, "number": floats, "boolean": st.booleans(), "phone": phone_forms,
        "email": emails, "gender": st.sampled_from(GENDER_WORDS), "multiline": lines}
    s = simple.get(kind, text)
    if col == "text" and kind == "number":
        s = floats.map(repr)
    return s


def local_row(spec: MappingSpec, key: str) -> st.SearchStrategy[dict[str, Any]]:
    cols: dict[str, st.SearchStrategy[Any]] = {spec.key_column: st.just(key)}
    for f in spec.fields:
        s = column_value(f)
        cols[f.column] = s if f.field == "full_name" else _none_or(s)
    if spec.ref_code_column:
        cols[spec.ref_code_column] = _none_or(text)
    if spec.custom_fields_column:
        claimed = spec.claimed_custom
        labels = [lb for lb in ("Màu sắc yêu thích", "Sở thích", "Nguồn") if lb not in claimed]
        cols[spec.custom_fields_column] = _none_or(st.dictionaries(st.sampled_from(labels),
                                                                   text, max_size=3))
    return st.fixed_dictionaries(cols)
