"""What each /api endpoint does to the emulator's state, free of HTTP.

Each function takes the decoded request and returns the envelope's payload: a Python value, or
`bytes` that are already JSON (cached contact objects, spliced in without re-encoding). A refusal
raises `Invalid(code)`, which the app turns into status_code -9999 with HTTP 200 [doc].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.emulator.emulator import Emulator
from sync.emulator.model import dumps, national_phone, summary
from sync.emulator.parse import Invalid, api_patch
from sync.emulator.store import parse_filters

Payload = Any  # JSON-ready value, or bytes holding JSON

# GET /api/contacts/get: which query parameter names which index, in order of precedence.
LOOKUPS: tuple[str, ...] = ("phone", "email", "ref_id", "ref_code")


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(detail=f"{name} must be an integer") from None
    if value < 1:
        raise Invalid(detail=f"{name} must be at least 1")
    return value


def list_contacts(emu: Emulator, query: Mapping[str, str], body: Any) -> Payload:
    """`POST /api/contacts/list?page&size`: a page of live contacts, size capped silently."""
    page = _int_param(query, "page", 1)
    size = min(_int_param(query, "size", emu.config.default_page_size), emu.config.page_size_cap)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise Invalid(detail="the list body must be an object")
    keyword = body.get("keyword")
    if keyword is not None and not isinstance(keyword, str):
        raise Invalid(detail="keyword must be a string")
    try:
        filters = parse_filters(body.get("filters"))
    except ValueError as exc:
        raise Invalid(detail=str(exc)) from exc
    with emu.lock:
        items, total = emu.store.page(emu.config.order, (page - 1) * size, size, emu.rng,
                                      keyword=keyword, filters=filters)
        items_json = b"[" + b",".join(emu.wire(c) for c in items) + b"]"
    total_pages = -(-total // size)
    has_next = page < total_pages
    meta = dumps({"page_number": page, "page_size": size, "total_items": total,
                  "total_pages": total_pages, "has_next": has_next,
                  "next_page": page + 1 if has_next else page, "has_previous": page > 1,
                  "previous_page": max(page - 1, 1), "extension": None})
    return b'{"items":' + items_json + b"," + meta[1:]


def add(emu: Emulator, body: Any) -> Payload:
    """`POST /api/contacts/add`: create now; the payload is the created contact object."""
    patch = api_patch(body, emu.layout_by_code)
    with emu.lock:
        ref = patch.get("ref_id")
        if ref and not emu.config.duplicate_on_resend and emu.store.find("ref_id", ref):
            raise Invalid("contact_existed", f"a contact with refId {ref} exists")
        return emu.wire(emu.create(patch, by_agent=False))


def add_more(emu: Emulator, body: Any) -> Payload:
    """`POST /api/contacts/add-more`: queue every valid item; invalid ones vanish silently."""
    if not isinstance(body, list):
        raise Invalid(detail="the add-more body must be an array")
    for item in body:
        try:
            patch = api_patch(item, emu.layout_by_code)
        except Invalid:
            continue  # [doc] nothing reports a failed item
        emu.enqueue(patch)
    return True


def update(emu: Emulator, body: Any) -> Payload:
    """`POST /api/contacts/update`: by refId; absent fields unchanged, present lists replace."""
    if not isinstance(body, dict):
        raise Invalid(detail="the update body must be an object")
    ref = body.get("refId")
    if not isinstance(ref, str) or not ref.strip():
        raise Invalid(detail="refId is required")
    ignored, keep_empty = emu.config.update_ignores, emu.config.update_ignores_empty
    if ignored or keep_empty:
        body = {k: v for k, v in body.items()
                if k not in ignored and not (keep_empty and v == "")}
    patch = api_patch(body, emu.layout_by_code)
    patch.pop("ref_id", None)  # refId identifies the contact; it is not changed here
    with emu.lock:
        found = emu.store.find("ref_id", ref)
        if not found:
            raise Invalid("contact_not_found")
        contact = found[0]  # duplicates (a resent add-more): the oldest is the one updated
        emu.edit(contact, patch, by_agent=False)
        return summary(contact)


def delete(emu: Emulator, public_id: str) -> Payload:
    """`DELETE /api/contacts/delete/{public_id}`; unknown or already deleted -> -9999."""
    with emu.lock:
        contact = emu.store.by_id.get(public_id)
        if contact is None or contact.is_deleted:
            raise Invalid("contact_not_found")
        emu.delete(contact, by_agent=False)
        return True


def add_note(emu: Emulator, body: Any) -> Payload:
    """`POST /api/contacts/add-note`: all notes valid or none stored."""
    if not isinstance(body, list):
        raise Invalid(detail="the add-note body must be an array")
    notes: list[dict[str, Any]] = []
    for item in body:
        if not isinstance(item, dict):
            raise Invalid(detail="a note must be an object")
        content, phone, by = item.get("content"), item.get("phone"), item.get("note_by")
        for name, value in (("content", content), ("phone", phone)):
            if not isinstance(value, str) or not value.strip():
                raise Invalid(detail=f"{name} is required")
        if by is not None and not isinstance(by, str):
            raise Invalid(detail="note_by must be a string")
        notes.append({"note_by": by, "content": content, "phone": phone})
    with emu.lock:
        for note in notes:
            matched = emu.store.find("phone", note["phone"])
            note["public_id"] = matched[0].public_id if matched else None
            note["created_date"] = emu.now_ms()
        emu.notes.extend(notes)
    return True


def get(emu: Emulator, query: Mapping[str, str]) -> Payload:
    """`GET /api/contacts/get?phone|email|ref_id|ref_code`: first live match, or null."""
    for kind in LOOKUPS:
        value = query.get(kind)
        if value is not None and value.strip():
            if kind == "phone" and not national_phone(value):
                raise Invalid(detail="phone has no digits")
            with emu.lock:
                found = emu.store.find(kind, value.strip())
                return emu.wire(found[0]) if found else None
    raise Invalid(detail="one of phone, email, ref_id, ref_code is required")


def details(emu: Emulator, public_id: str) -> Payload:
    """`GET /api/contacts/details/{public_id}`: deleted contacts too, with is_deleted true."""
    with emu.lock:
        contact = emu.store.by_id.get(public_id)
        if contact is None:
            raise Invalid("contact_not_found")
        return emu.wire(contact)


def layout(emu: Emulator) -> Payload:
    """`GET /api/source_contact_layout/get`."""
    return emu.layout()
