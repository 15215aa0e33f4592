"""Request bodies (camelCase, per omicall-api.md) and agent edits turned into a field patch.

A patch is a dict holding only the fields that were given (StoredContact attribute names, with
`custom` as (label, value) pairs and `dynamic` as field_code -> values): absent means unchanged,
None or [] means cleared. The emulator is strict where the contract is (types, kinds, dd/MM/yyyy,
gender, layout options), so that a client sending the wrong shape finds out here, not in
production. An API refusal raises `Invalid(code)`; a wrong agent edit raises ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sync.emulator.config import OPTION_TYPES
from sync.emulator.model import GENDERS, KIND_LABELS, LABEL_KINDS, Item

Patch = dict[str, Any]
Layout = Mapping[str, Mapping[str, Any]]  # field_code -> layout entry

# camelCase body key -> StoredContact attribute, for the plain string fields.
_API_STRINGS: dict[str, str] = {
    "fullName": "full_name", "refId": "ref_id", "refCode": "ref_code", "job_title": "job_title",
    "note": "note", "passport": "passport", "address": "address",
    "user_owner_email": "owner_email",
}
AGENT_FIELDS: frozenset[str] = frozenset({
    "full_name", "phones", "emails", "tags", "gender", "birthday", "address", "job_title",
    "passport", "note", "owner_email", "custom", "dynamic", "ref_id", "ref_code",
})
_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")
_PHONE = re.compile(r"\+?[\d\s().-]{8,20}")


class Invalid(Exception):
    """The API refuses the request: status_code -9999 with `code` as message."""

    def __init__(self, code: str = "request_invalid", detail: str = "") -> None:
        super().__init__(detail or code)
        self.code = code


def api_patch(body: Any, layout: Layout, *, require_name: bool = True) -> Patch:
    """The fields of an add / add-more item / update body. Raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid(detail="a contact must be a JSON object")
    try:
        patch: Patch = {}
        for key, attr in _API_STRINGS.items():
            if key in body:
                patch[attr] = _text(body[key], key)
        if "gender" in body:
            patch["gender"] = _gender(body["gender"])
        if "birthday" in body:
            patch["birthday"] = _birthday(body["birthday"])
        for key in ("phones", "emails"):
            if key in body:
                patch[key] = [_api_item(i, key) for i in _array(body[key], key)]
        if "tags" in body:
            patch["tags"] = [_required_text(t, "tags") for t in _array(body["tags"], "tags")]
        if "more_infomation" in body:
            patch["custom"] = [_api_custom(e) for e in _array(body["more_infomation"], "custom")]
        if "dynamic_attributes" in body:
            patch["dynamic"] = _api_dynamic(_array(body["dynamic_attributes"], "dyn"), layout)
    except (ValueError, TypeError) as exc:  # TypeError: e.g. a list where a kind belongs
        raise Invalid(detail=str(exc)) from exc
    if require_name and not patch.get("full_name"):
        raise Invalid(detail="fullName is required")
    return patch


def agent_patch(fields: Mapping[str, Any], layout: Layout) -> Patch:
    """The fields of an agent edit (Python kwargs or admin JSON). Raises ValueError."""
    unknown = sorted(set(fields) - AGENT_FIELDS)
    if unknown:
        raise ValueError(f"unknown contact field(s): {', '.join(unknown)}")
    patch: Patch = {}
    for name, value in fields.items():
        if name in ("phones", "emails"):
            patch[name] = [_agent_item(i, name) for i in _array(value, name)]
        elif name == "tags":
            patch[name] = [_required_text(t, "tags") for t in _array(value, name)]
        elif name == "gender":
            patch[name] = _gender(value)
        elif name == "birthday":
            is_date = isinstance(value, date)
            patch[name] = value.strftime("%d/%m/%Y") if is_date else _birthday(value)
        elif name == "custom":  # label -> value; merged per label by the caller, None removes
            if not isinstance(value, Mapping):
                raise ValueError("custom must be a mapping label -> value")
            patch[name] = {_required_text(k, "custom"): _text(v, k) for k, v in value.items()}
        elif name == "dynamic":
            if not isinstance(value, Mapping):
                raise ValueError("dynamic must be a mapping field_code -> value(s)")
            patch[name] = {code: check_dynamic(code, [] if v is None else
                                               [v] if isinstance(v, str) else _array(v, code),
                                               layout) for code, v in value.items()}
        else:
            patch[name] = _text(value, name)
    if "full_name" in patch and not patch["full_name"]:
        raise ValueError("full_name cannot be empty")
    return patch


def check_dynamic(code: str, values: list[Any], layout: Layout) -> list[str]:
    """Values of a dynamic attribute, checked against the layout's field_type and options."""
    entry = layout.get(code)
    if entry is None:
        raise ValueError(f"unknown dynamic attribute {code!r}")
    ftype, options = entry["field_type"], entry["options"]
    out = [_required_text(v, code) for v in values]
    if len(out) > 1 and ftype != "checkbox":
        raise ValueError(f"{code}: a {ftype} field holds one value")
    for v in out:
        if ftype == "number":
            float(v.replace(",", "."))  # ValueError if not a number
        elif ftype == "date":
            _birthday(v)
        elif ftype in OPTION_TYPES and v not in options:
            raise ValueError(f"{code}: {v!r} is not one of {options}")
    return out


def _array(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be an array")
    return list(value)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value if value.strip() else None


def _required_text(value: Any, name: str) -> str:
    text = _text(value, name)
    if text is None:
        raise ValueError(f"{name}: empty value")
    return text


def _gender(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in GENDERS:
        raise ValueError(f"gender must be one of {sorted(GENDERS)}")
    return str(value)


def _birthday(value: Any) -> str | None:
    text = _text(value, "date")
    if text is None:
        return None
    if not _DATE.fullmatch(text):
        raise ValueError(f"date must be dd/MM/yyyy, got {text!r}")
    datetime.strptime(text, "%d/%m/%Y")  # ValueError for 31/02/2000
    return text


def _checked_value(value: str, name: str) -> str:
    if name == "phones" and not _PHONE.fullmatch(value.strip()):
        raise ValueError(f"not a phone number: {value!r}")
    if name == "emails" and "@" not in value:
        raise ValueError(f"not an email address: {value!r}")
    return value


def _api_item(item: Any, name: str) -> Item:
    """`{"data": "...", "type": "home", "valueType": "Nhà"}`; the kind may sit under `value`."""
    if not isinstance(item, dict):
        raise ValueError(f"{name} items must be objects")
    value = _checked_value(_required_text(item.get("data"), name), name)
    kind = item.get("type") or item.get("value")
    if kind is None and item.get("valueType") is not None:
        kind = LABEL_KINDS.get(item["valueType"])
        if kind is None:
            raise ValueError(f"unknown valueType {item['valueType']!r}")
    kind = kind or "personal"  # [assumed] the CRM's default kind
    if kind not in KIND_LABELS:
        raise ValueError(f"unknown {name} kind {kind!r}")
    return value, kind


def _agent_item(item: Any, name: str) -> Item:
    """A str, a (value, kind) pair or {"data"/"value", "type"/"kind"}: the test-friendly forms."""
    if isinstance(item, dict):
        value, kind = item.get("data", item.get("value")), item.get("type", item.get("kind"))
    elif isinstance(item, list | tuple) and len(item) == 2:
        value, kind = item
    else:
        value, kind = item, None
    kind = kind or "personal"
    if kind not in KIND_LABELS:
        raise ValueError(f"unknown {name} kind {kind!r}")
    return _checked_value(_required_text(value, name), name), str(kind)


def _api_custom(entry: Any) -> tuple[str, str]:
    """`{"value_type": label, "display_value": value}` (data_type is the server's to assign)."""
    if not isinstance(entry, dict):
        raise ValueError("more_infomation items must be objects")
    return (_required_text(entry.get("value_type"), "value_type"),
            _required_text(entry.get("display_value"), "display_value"))


def _api_dynamic(entries: list[Any], layout: Layout) -> dict[str, list[str]]:
    """`[{"field_code", "field_type", "dynamic_attribute_value": [{"display_value"}]}]`.

    The sent field_type is ignored: the layout decides how a field is typed.
    """
    out: dict[str, list[str]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("field_code"), str):
            raise ValueError("dynamic_attributes items need a field_code")
        raw = _array(entry.get("dynamic_attribute_value"), "dynamic_attribute_value")
        if not all(isinstance(v, dict) for v in raw):
            raise ValueError("dynamic_attribute_value items must be objects")
        code = entry["field_code"]
        out[code] = check_dynamic(code, [v.get("display_value") for v in raw], layout)
    return out
