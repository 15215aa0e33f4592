"""One stored contact and its wire forms, written from omicall-api.md alone.

The emulator is an independent party: it never imports the client's adapter, so a client that
misreads the contract fails against it. Responses are snake_case contact objects with an
`attribute_structure`; the update endpoint answers a camelCase summary.

A contact's response JSON is built once and cached (`wire_json`) until the contact changes, so
paging 100k contacts costs one serialisation per contact, not one per request.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _esc  # JSON string literal, UTF-8 kept
from typing import Any

KIND_LABELS: dict[str, str] = {"home": "Nhà", "personal": "Cá nhân", "office": "Công ty"}
LABEL_KINDS: dict[str, str] = {label: kind for kind, label in KIND_LABELS.items()}
GENDERS: frozenset[str] = frozenset({"male", "female", "other"})
_NON_DIGITS = re.compile(r"\D")

# What the CRM shows as creator/editor for the two ways a contact can change.
API_USER = "OMI API"
AGENT_USER = "Nhân viên CSKH"

# (value, kind) for phones and emails; (label, value, internal key) for more_infomation.
Item = tuple[str, str]
Custom = tuple[str, str, str]


@dataclass(slots=True)
class StoredContact:
    """The emulator's record of one contact: values exactly as sent (phones not normalised)."""

    public_id: str
    seq: int  # insertion order == creation order; the "created" list order
    created_ms: int
    updated_ms: int
    create_by: str
    last_update_by: str
    full_name: str
    ref_id: str | None = None
    ref_code: str | None = None
    job_title: str | None = None
    gender: str | None = None
    address: str | None = None
    passport: str | None = None
    note: str | None = None
    birthday: str | None = None  # dd/MM/yyyy, validated on the way in
    owner_email: str | None = None
    # Tuples, replaced whole on every edit: immutable, smaller than lists, () is shared.
    phones: tuple[Item, ...] = ()
    emails: tuple[Item, ...] = ()
    tags: tuple[str, ...] = ()
    custom: tuple[Custom, ...] = ()
    dynamic: dict[str, tuple[str, ...]] = field(default_factory=dict)
    is_deleted: bool = False
    cached_json: bytes | None = None  # dropped by every change (ContactStore.edit)


def national_phone(raw: str) -> str:
    """`0393123456`, `84393123456` and `+84 393 123 456` all give `0393123456`.

    Used only to match (get?phone=, keyword search, notes): stored values stay as sent.
    """
    digits = raw if raw.isdigit() else _NON_DIGITS.sub("", raw)
    if digits.startswith("84") and len(digits) >= 11:
        return "0" + digits[2:]
    return digits


def unsigned(text: str) -> str:
    """Lower-case text without Vietnamese diacritics, for keyword search ("tuyet" finds "Tuyết")."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _values(*entries: tuple[str, str | None, str | None]) -> list[dict[str, Any]]:
    return [{"display_value": d, "data_type": t, "value_type": v} for d, t, v in entries]


def _attr(code: str, ftype: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {"identify": False, "field_code": code, "field_type": ftype, "value": values}


def attribute_structure(c: StoredContact, field_types: dict[str, str]) -> list[dict[str, Any]]:
    """The contact's fields as the API lists them; fields without a value are left out."""
    out = [_attr("full_name", "single_text", _values((c.full_name, None, None)))]
    singles = (("job_title", "single_text", c.job_title), ("gender", "radio", c.gender))
    out += [_attr(code, ft, _values((v, None, None))) for code, ft, v in singles if v]
    if c.phones:
        out.append(_attr("phone_number", "phone",
                         _values(*((n, k, KIND_LABELS[k]) for n, k in c.phones))))
    if c.emails:
        out.append(_attr("mail", "email", _values(*((e, k, KIND_LABELS[k]) for e, k in c.emails))))
    later = (("address", "single_text", c.address), ("passport", "single_text", c.passport),
             ("note", "multi_text", c.note), ("birthday", "date", c.birthday),
             ("contact_owner", "single_text", c.owner_email))
    out += [_attr(code, ft, _values((v, None, None))) for code, ft, v in later if v]
    if c.custom:
        out.append(_attr("more_infomation", "customize",
                         _values(*((value, key, label) for label, value, key in c.custom))))
    for code, values in c.dynamic.items():
        if values and code in field_types:  # a field removed from the layout is no longer shown
            out.append(_attr(code, field_types[code], _values(*((v, None, None) for v in values))))
    return out


def to_wire(c: StoredContact, field_types: dict[str, str]) -> dict[str, Any]:
    """The snake_case contact object of list, details, get and add."""
    return {
        "public_id": c.public_id,
        "created_date": c.created_ms,
        "last_updated_date": c.updated_ms,
        "create_by": {"name": c.create_by},
        "last_update_by": {"name": c.last_update_by},
        "contact_type": "contact",
        "is_deleted": c.is_deleted,
        "tags": list(c.tags),
        "tags_view": None,
        "ref_id": c.ref_id,
        "ref_code": c.ref_code,
        "attribute_structure": attribute_structure(c, field_types),
    }


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, diacritics unescaped like the real API's responses."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def wire_json(c: StoredContact, field_types: dict[str, str]) -> bytes:
    """`to_wire` as JSON, cached on the contact until it changes.

    Written out directly rather than through `json.dumps(to_wire(...))`: three times faster, which
    is what a first full pull of 100k contacts pays. Tests hold the two forms equal.
    """
    if c.cached_json is None:
        c.cached_json = _render(c, field_types).encode()
    return c.cached_json


def _s(value: str | None) -> str:
    return "null" if value is None else _esc(value)


def _v(display: str, data_type: str | None, value_type: str | None) -> str:
    return (f'{{"display_value":{_esc(display)},"data_type":{_s(data_type)},'
            f'"value_type":{_s(value_type)}}}')


def _a(code: str, ftype: str, values: Iterable[str]) -> str:
    return (f'{{"identify":false,"field_code":{_esc(code)},"field_type":{_esc(ftype)},'
            f'"value":[{",".join(values)}]}}')


def _render(c: StoredContact, field_types: dict[str, str]) -> str:
    out = [_a("full_name", "single_text", [_v(c.full_name, None, None)])]
    out += [_a(code, ft, [_v(v, None, None)]) for code, ft, v in
            (("job_title", "single_text", c.job_title), ("gender", "radio", c.gender)) if v]
    if c.phones:
        out.append(_a("phone_number", "phone", (_v(n, k, KIND_LABELS[k]) for n, k in c.phones)))
    if c.emails:
        out.append(_a("mail", "email", (_v(e, k, KIND_LABELS[k]) for e, k in c.emails)))
    later = (("address", "single_text", c.address), ("passport", "single_text", c.passport),
             ("note", "multi_text", c.note), ("birthday", "date", c.birthday),
             ("contact_owner", "single_text", c.owner_email))
    out += [_a(code, ft, [_v(v, None, None)]) for code, ft, v in later if v]
    if c.custom:
        out.append(_a("more_infomation", "customize",
                      (_v(value, key, label) for label, value, key in c.custom)))
    for code, values in c.dynamic.items():
        if values and code in field_types:
            out.append(_a(code, field_types[code], (_v(v, None, None) for v in values)))
    return (f'{{"public_id":{_esc(c.public_id)},"created_date":{c.created_ms},'
            f'"last_updated_date":{c.updated_ms},"create_by":{{"name":{_esc(c.create_by)}}},'
            f'"last_update_by":{{"name":{_esc(c.last_update_by)}}},"contact_type":"contact",'
            f'"is_deleted":{"true" if c.is_deleted else "false"},'
            f'"tags":[{",".join(map(_esc, c.tags))}],"tags_view":null,'
            f'"ref_id":{_s(c.ref_id)},"ref_code":{_s(c.ref_code)},'
            f'"attribute_structure":[{",".join(out)}]}}')


def summary(c: StoredContact) -> dict[str, Any]:
    """The camelCase payload of `POST /api/contacts/update` [doc]."""

    def items(values: tuple[Item, ...]) -> list[dict[str, str]]:
        return [{"data": v, "type": k, "valueType": KIND_LABELS[k]} for v, k in values]

    return {"publicId": c.public_id, "fullName": c.full_name, "displayName": c.full_name,
            "gender": c.gender, "passport": c.passport, "address": c.address, "note": c.note,
            "emails": items(c.emails), "phones": items(c.phones), "contactType": "contact"}


def display_values(c: StoredContact, field_code: str) -> list[str]:
    """Every display value of one field, for the list endpoint's generic `filters`."""
    simple = {"full_name": c.full_name, "job_title": c.job_title, "gender": c.gender,
              "address": c.address, "passport": c.passport, "note": c.note,
              "birthday": c.birthday, "contact_owner": c.owner_email,
              "ref_id": c.ref_id, "ref_code": c.ref_code}
    if field_code in simple:
        value = simple[field_code]
        return [value] if value else []
    if field_code == "phone_number":
        return [n for n, _ in c.phones]
    if field_code == "mail":
        return [e for e, _ in c.emails]
    if field_code == "tags":
        return list(c.tags)
    if field_code == "more_infomation":
        return [value for _, value, _ in c.custom]
    return list(c.dynamic.get(field_code, []))


def matches_keyword(c: StoredContact, keyword: str) -> bool:
    """The list endpoint's `keyword`: phone (any written form), email or full name [doc]."""
    needle = keyword.strip()
    if not needle:
        return True
    digits = national_phone(needle)
    if len(digits) >= 3 and re.fullmatch(r"[\d\s+().-]+", needle):
        return any(digits in national_phone(n) for n, _ in c.phones)
    folded = unsigned(needle)
    return folded in unsigned(c.full_name) or any(folded in e.casefold() for e, _ in c.emails)
