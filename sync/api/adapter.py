"""The OMICall wire format, and every [assumed] point of omicall-api.md, in this one module.

Nothing else in crm-sync knows a JSON key, a path or a status code of the OMICall API. Each
assumption is one named constant or one small function marked `[assumed]`, so that correcting it
when the real service disagrees is a one-line change. The list (README.md repeats it):

 1. TOKEN_REJECTED_STATUSES: HTTP 401 means the access token was refused (re-auth and retry; the
    client renews a token refused again up to 4 times a call).
 2. TOKEN_REJECTED_CODES: a -9999 `api_key_invalid` / `api_key_is_required` from any endpoint but
    auth means the same (the documented examples answer HTTP 200 even on failure). A -9999
    whose code names the token or says unauthorized (`token_expired`, `Invalid token`, ...)
    may mean it too: the token is renewed as on a 401, and if the renewed ones are answered
    the same, the answer is taken as it is (a RemoteError). On auth, key_refused: a -9999
    whose code names the key or credentials is a refused key; any other (`system_busy`, a
    message-less failure) is a fault worth retrying.
 3. RATE_LIMITED_STATUS, retry_after_seconds: HTTP 429 with `Retry-After` in seconds.
 4. is_transient_status: 5xx (and 408) are transient; their body may be HTML or empty.
 5. MALFORMED_IS_TRANSIENT: a body that does not decode as JSON is retriable (the contract's faults
    include it); JSON that decodes but has the wrong shape is a ProtocolError (retrying won't help).
 6. Other -9999 codes than the documented ones exist: passed through verbatim as RemoteError.code.
 7. BIRTHDAY_CODE / OWNER_CODE: birthday under field_code `birthday` as dd/MM/yyyy (ISO and epoch ms
    tolerated), the owner's email under `contact_owner`; any other unknown field_code is a dynamic
    attribute carrying the layout's field_type.
 8. REF_ID_KEYS / REF_CODE_KEYS: partner ids top-level snake_case, also camelCase or as an
    attribute_structure entry; null for contacts created in the CRM's own interface.
 9. tag_name: tags are strings; `{"name": ...}` objects tolerated.
10. ITEM_KIND_KEY: a phone/email item's kind is sent under `type`; read from `data_type`, else from
    the Vietnamese label in `value_type`.
11. GENDER_LABELS: Vietnamese gender labels are read as male / female / other.
12. page_from_wire: the server caps `size`; the client follows the page_size / has_next it gets
    back. A missing has_next is derived from page_number < total_pages, else from
    total_items, else pages are read until an empty one. A listed contact's JSON
    changes whenever the contact does, so its digest (`Listed.digest`) tells an unchanged
    contact without parsing it; a server that re-serialises differently only costs a parse.
13. update: an absent field is left unchanged (update_body sends only what changed, besides the
    required refId, fullName and phones); a list present replaces the whole list; a text field
    in CLEARABLE_TEXT_FIELDS sent as "" is cleared; an unknown refId answers -9999.
14. says_missing: a -9999 on delete whose code says not found / not exist / deleted = the
    contact is already gone (success for the caller); after any other -9999 the client asks
    details: gone if it shows no live contact, else the delete failed.
15. says_missing: a null payload, or a -9999 whose code says not found / not exist / deleted,
    on details = no such contact; any other -9999 confirms nothing.
16. GET_QUERY_KEYS: get's email parameter is named `email`; a null payload, or a -9999 that
    says_missing, means no match.
17. ack_from_wire: add-more, add-note and delete answer `true`; the value is not inspected
    (failures come as -9999). A -9999 on add-more means none of the batch was created (the
    applier halves a refused batch to find the contacts refused alone).
18. layout_from_wire: the layout payload is a list of {field_code, field_name, field_type,
    is_required, options}; an {"items": [...]} wrapper is tolerated.
19. Deleted contacts are normally absent from the list; `is_deleted` is kept on the Contact.
(20 and 21, add-more's dropped items and dynamic attributes, are the applier's: README.md.)
22. not_taken: update's summary carries fullName, gender, passport, address and note as the CRM
    now holds them; one it shows as it was before an update that changed it (a server that
    ignores a field, or takes "" for "leave unchanged") was not taken. Any other value, or a
    key it leaves out, is taken. UNDOCUMENTED_UPDATE_ATTRS: the documented update body names no
    job title and no refCode, so they are sent and read back with get when changed (until the
    server has shown it takes them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import quote

import msgspec
import xxhash

from sync.errors import (
    ApiError,
    AuthError,
    ProtocolError,
    RateLimited,
    RemoteError,
    RetriableError,
)
from sync.record import (
    ITEM_KINDS,
    Contact,
    CustomEntry,
    DynamicValue,
    Item,
    format_date,
    norm_email,
    norm_gender,
    norm_multiline,
    norm_phone,
    norm_tags,
    norm_text,
    parse_date,
    recurring,
)

SUCCESS, FAILURE = 9999, -9999  # [doc]
AUTH = "auth"
# endpoint name -> (method, path); {id} is the URL-quoted public_id.
ENDPOINTS: Mapping[str, tuple[str, str]] = {
    "auth": ("GET", "/api/auth"),
    "list": ("POST", "/api/contacts/list"),
    "add": ("POST", "/api/contacts/add"),
    "add_more": ("POST", "/api/contacts/add-more"),
    "update": ("POST", "/api/contacts/update"),
    "delete": ("DELETE", "/api/contacts/delete/{id}"),
    "add_note": ("POST", "/api/contacts/add-note"),
    "get": ("GET", "/api/contacts/get"),
    "details": ("GET", "/api/contacts/details/{id}"),
    "layout": ("GET", "/api/source_contact_layout/get"),
}
API_KEY_PARAM = "apiKey"  # [doc]

TOKEN_REJECTED_STATUSES = frozenset({401})  # [assumed] 1
TOKEN_REJECTED_CODES = frozenset({"api_key_invalid", "api_key_is_required"})  # [assumed] 2
RATE_LIMITED_STATUS = 429  # [assumed] 3
MALFORMED_IS_TRANSIENT = True  # [assumed] 5
BIRTHDAY_CODE, OWNER_CODE = "birthday", "contact_owner"  # [assumed] 7
REF_ID_KEYS, REF_CODE_KEYS = ("ref_id", "refId"), ("ref_code", "refCode")  # [assumed] 8
ITEM_KIND_KEY = "type"  # [assumed] 10: the add page says "value", the update page "type"
GENDER_LABELS: Mapping[str, str] = {"nam": "male", "nữ": "female", "khác": "other"}  # [assumed] 11
CLEARABLE_TEXT_FIELDS = ("job_title", "address", "passport", "note")  # [assumed] 13
GET_QUERY_KEYS: Mapping[str, str] = {  # [assumed] 16: the seed leaves the email name blank
    "ref_id": "ref_id", "ref_code": "ref_code", "phone": "phone", "email": "email"}

_KIND_BY_LABEL = {label.lower(): kind for kind, label in ITEM_KINDS.items()}
# digest of a listed item's JSON -> (public_id, local key) when the caller has agreed it
Known = Callable[[str], tuple[str, str] | None]
_TEXT_CODES = frozenset({"full_name", "job_title", "address", "passport"})
# texts that recur from contact to contact: value kinds and labels, custom values, genders,
# owners (names, numbers and addresses rarely do: they take the plain normalisers)
_label, _gender_text, _owner = recurring(norm_text), recurring(norm_gender), recurring(norm_email)


class TokenRejected(ApiError):
    """Internal signal: the access token was refused. The client re-authenticates once.

    `code`: the -9999 code, when only its words suggest the token ([assumed] 2): if renewed
    tokens are answered the same, the client raises RemoteError(code), the answer as it is."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None,
                 code: str | None = None):
        super().__init__(message, endpoint=endpoint, status=status)
        self.code = code


class Listed(NamedTuple):
    """One listed contact, parsed on demand: a cycle that finds `digest` unchanged since the
    contact was last agreed never parses the rest. (A NamedTuple: one is made per listed
    item, 100k a cycle, and a frozen dataclass took 1.8 µs to make against 0.7 µs.)"""

    public_id: str
    # the top-level partner id, if any: None does not mean the contact has none, it may sit
    # in attribute_structure ([assumed] 8); contact() reads both
    ref_id: str | None
    is_deleted: bool
    # of the item's JSON exactly as served (item_digest); None when the page was read with
    # nothing to look up: contact() computes it then, wherever it runs
    digest: str | None
    raw: bytes
    # the local key under which these very bytes were last agreed, from the caller's `known`
    # (page_from_wire): such an item is not even decoded. None: not known.
    agreed_key: str | None = None

    def contact(self) -> Contact:
        return contact_from_json(self.raw, digest=self.digest or item_digest(self.raw))


def item_digest(raw: bytes) -> str:
    """A listed item's digest: XXH3-128 of its JSON exactly as served, as 32 hex digits.

    It tells the CRM's edits from the bytes last agreed, so that an unchanged item is not
    decoded (every quick cycle hashes the whole listing): 0.15 µs for a 1.7 KB item, where
    SHA-256 takes 1.7 µs even in hardware. Not a cryptographic hash: an edit crafted to
    collide would wait for the next full cycle (`sync --full`, the nightly reconcile), which
    compares every contact whatever its digest. Digests recorded with another function (a
    store written by crm-sync before it used this one) only cost one cycle that decodes every
    item and records them anew."""
    return xxhash.xxh3_128_hexdigest(raw)


@dataclass(frozen=True, slots=True)
class Page:
    listed: tuple[Listed, ...]
    page_number: int
    page_size: int
    total_items: int
    total_pages: int
    has_next: bool

    @property
    def items(self) -> tuple[Contact, ...]:
        """Every contact of the page, parsed (each access parses again)."""
        return tuple(x.contact() for x in self.listed)


# Decoding with msgspec into these shapes skips what is not needed: a list item stays raw
# bytes, and only the fields a cycle looks at first are read from it.
class _Envelope(msgspec.Struct):
    status_code: Any = None
    message: Any = None
    payload: msgspec.Raw = msgspec.Raw(b"null")


class _ListPayload(msgspec.Struct):
    items: list[msgspec.Raw] | None  # [assumed] 12: null is an empty page; absent is not a page
    page_number: Any = None
    page_size: Any = None
    total_items: Any = None
    total_pages: Any = None
    has_next: Any = None


class _Head(msgspec.Struct):
    public_id: Any = None
    ref_id: Any = None
    refId: Any = None  # the wire's camelCase spelling
    is_deleted: Any = None


class _ListEnvelope(msgspec.Struct):
    status_code: Any = None
    payload: _ListPayload | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_LIST = msgspec.json.Decoder(_ListPayload)
_LIST_ENVELOPE = msgspec.json.Decoder(_ListEnvelope)
_HEAD = msgspec.json.Decoder(_Head)
_decode = msgspec.json.Decoder().decode  # any JSON -> dict / list / str / int / float / ...


@dataclass(frozen=True, slots=True)
class LayoutField:
    field_code: str
    field_name: str
    field_type: str
    is_required: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteIn:
    """One interaction note for add-note: the customer's phone, the text, the agent's email."""

    phone: str
    content: str
    note_by: str | None = None


def path_for(endpoint: str, public_id: str | None = None) -> tuple[str, str]:
    method, path = ENDPOINTS[endpoint]
    return method, path.format(id=quote(public_id or "", safe=""))


# --- envelope -------------------------------------------------------------------------------

def is_transient_status(status: int) -> bool:
    """[assumed] 4: server faults and gateway timeouts are worth retrying."""
    return status >= 500 or status == 408


def retry_after_seconds(header: str | None) -> float | None:
    """[assumed] 3: Retry-After in seconds; an HTTP date is tolerated (one without a time zone,
    as the asctime form or "-0000", is read as UTC). A past date or negative delay gives 0.0;
    a value that does not parse, or is not finite, gives None (no Retry-After): never raises."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(header)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


# [assumed] 2: on auth, a code naming the key or the credentials refuses the key
_KEY_REFUSED = re.compile(r".*(api_?key|credential|unauthori[sz]ed|forbidden|denied).*")
# [assumed] 2: elsewhere, a code naming the token or saying unauthorized may refuse the token
# (not "forbidden" or "denied": a contact an agent may not touch is no token's fault)
_TOKEN_REFUSED = re.compile(r".*(token|unauthori[sz]ed|unauthenticated).*")


def _code(message: str) -> str:
    """A -9999 message as a code: `Contact does not exist` -> `contact_does_not_exist`."""
    return re.sub(r"[\s-]+", "_", message.strip().lower())


def key_refused(code: str) -> bool:
    """[assumed] 2: a -9999 on auth that refuses the key itself (`api_key_invalid`,
    `api_key_is_required`, ...), as opposed to a busy or failing server."""
    norm = _code(code)
    return norm in TOKEN_REJECTED_CODES or _KEY_REFUSED.fullmatch(norm) is not None


def parse_envelope(status: int, body: bytes, endpoint: str, *,
                   retry_after: str | None = None, raw: bool = False) -> Any:
    """Return the payload of a successful answer or raise the matching sync.errors exception.
    `raw`: the payload's JSON undecoded (`msgspec.Raw`), for page_from_wire."""
    if status in TOKEN_REJECTED_STATUSES or (endpoint == AUTH and status == 403):
        if endpoint == AUTH:
            raise AuthError("OMICall refused the API key", endpoint=endpoint, status=status)
        raise TokenRejected("access token rejected", endpoint=endpoint, status=status)
    if status == RATE_LIMITED_STATUS:
        raise RateLimited(f"{endpoint}: rate limited (HTTP 429)", endpoint=endpoint,
                          retry_after=retry_after_seconds(retry_after))
    if is_transient_status(status):
        raise RetriableError(f"{endpoint}: server fault (HTTP {status})", endpoint=endpoint,
                             status=status)
    try:
        envelope: _Envelope | None = _ENVELOPE.decode(body)
    except msgspec.ValidationError:  # JSON, but not an object
        envelope = None
    except msgspec.DecodeError:  # not JSON, or not UTF-8
        if MALFORMED_IS_TRANSIENT and 200 <= status < 300:
            raise RetriableError(f"{endpoint}: malformed JSON body (HTTP {status})",
                                 endpoint=endpoint, status=status) from None
        hint = (f" for {path_for(endpoint)[1]}: is the base URL the server's root (the "
                "client adds /api/...)?" if status == 404 else "")
        raise ProtocolError(f"{endpoint}: unexpected HTTP {status}{hint}", endpoint=endpoint,
                            status=status) from None
    code = envelope.status_code if envelope is not None else None
    if envelope is not None and str(code) == str(SUCCESS) and 200 <= status < 300:
        return envelope.payload if raw else _decode(envelope.payload)
    if envelope is not None and str(code) == str(FAILURE):
        message = str(envelope.message or "unknown_error")
        if endpoint == AUTH:
            if key_refused(message):
                raise AuthError(f"OMICall refused the API key ({message})", endpoint=endpoint,
                                status=status)
            raise RetriableError(f"auth: the CRM answered -9999 ({message})",
                                 endpoint=endpoint, status=status)
        if message in TOKEN_REJECTED_CODES:
            raise TokenRejected(f"access token rejected ({message})", endpoint=endpoint,
                                status=status)
        if _TOKEN_REFUSED.fullmatch(_code(message)):
            raise TokenRejected(f"access token rejected? ({message})", endpoint=endpoint,
                                status=status, code=message)
        raise RemoteError(message, endpoint=endpoint, status=status)  # [assumed] 6: any code
    raise ProtocolError(f"{endpoint}: not an OMICall envelope (HTTP {status})",
                        endpoint=endpoint, status=status)


def list_payload(status: int, body: bytes, *, retry_after: str | None = None
                 ) -> _ListPayload | msgspec.Raw:
    """parse_envelope for a list page, for page_from_wire: a successful answer is split into
    its items in one pass over the body; anything else takes parse_envelope's path."""
    if 200 <= status < 300:
        try:
            envelope: _ListEnvelope | None = _LIST_ENVELOPE.decode(body)
        except msgspec.DecodeError:  # also a wrong shape (ValidationError): say which below
            envelope = None
        if (envelope is not None and envelope.payload is not None
                and str(envelope.status_code) == str(SUCCESS)):
            return envelope.payload
    payload: msgspec.Raw = parse_envelope(status, body, "list", retry_after=retry_after,
                                          raw=True)
    return payload


def token_from_wire(payload: Any) -> tuple[str, str | None]:
    """(access_token, access_type) from the auth payload."""
    token = payload.get("access_token") if isinstance(payload, Mapping) else None
    if not isinstance(token, str) or not token:
        raise ProtocolError("auth answered without an access_token", endpoint=AUTH)
    access_type = payload.get("access_type")
    return token, access_type if isinstance(access_type, str) else None


def ack_from_wire(payload: Any) -> None:
    """[assumed] 17: add-more / add-note / delete answer `true`; failures come as -9999, so the
    value itself is not inspected."""


# [assumed] 14-16: a -9999 code that says the contact itself does not exist (or no longer):
# `contact_not_found`, `not_exist`, `contact_deleted`, ... Not `route_not_found`,
# `tenant_not_found` nor `unknown_error` (what parse_envelope names a -9999 without a message).
_MISSING_CODE = re.compile(
    r"(contact|customer|record|public_?id|id)?_?(is_?)?"
    r"(not_?found|not_?exists?|does_?not_?exist|deleted|no_?such_?contact)")


def says_missing(error: RemoteError) -> bool:
    """[assumed] 14-16: a -9999 whose code says the contact does not exist: on delete, it is
    already gone; on details and get, there is no such contact. Any other code (`system_busy`,
    `request_invalid`, a message-less failure) confirms nothing: a contact is never taken for
    deleted, nor a delete for done, on an answer that does not say so."""
    return _MISSING_CODE.fullmatch(_code(error.code or "")) is not None


# --- reading: the contact object, pages, layout ------------------------------------------------

def tag_name(tag: object) -> object:
    """[assumed] 9: a tag is a string, or an object {"name": ...} as in call-log items."""
    return tag.get("name") if isinstance(tag, Mapping) else tag


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


class _Value(msgspec.Struct):
    """One of an attribute's values."""

    display_value: Any = None
    data_type: Any = None
    value_type: Any = None


class _Attribute(msgspec.Struct):
    """An `attribute_structure` entry."""

    field_code: Any = None
    field_type: Any = None
    value: list[_Value] | None = None


# A contact object, as the fields read here: decoded straight from the item's JSON when it has
# the usual shape, which skips every dict and key the reading below has no use for (half the
# time a contact took to read); built by `_tolerant` from the decoded object otherwise.
_TOP_KEYS = ("public_id", *REF_ID_KEYS, *REF_CODE_KEYS, "created_date", "last_updated_date",
             "is_deleted", "tags")
_WireContact = msgspec.defstruct("_WireContact", [
    *((name, Any, None) for name in _TOP_KEYS),
    ("attribute_structure", list[_Attribute] | None, None)])
_READ_CONTACT = msgspec.json.Decoder(_WireContact).decode


def _values(entry: Mapping[str, Any]) -> list[_Value]:
    """An attribute's `value` list; a lone object or a bare scalar is read as one value."""
    raw = entry.get("value")
    if raw is None:
        return []
    raw = raw if isinstance(raw, list) else [raw]
    return [_Value(v.get("display_value"), v.get("data_type"), v.get("value_type"))
            if isinstance(v, Mapping) else _Value(v) for v in raw if v is not None]


def _tolerant(obj: object) -> Any:
    """A decoded contact object of any shape, as a _WireContact: what is not an attribute
    object is skipped, a value that is not a list of objects is read as `_values` says."""
    if not isinstance(obj, Mapping):
        raise ProtocolError("a contact is not a JSON object")
    attributes = obj.get("attribute_structure")
    return _WireContact(**{name: obj.get(name) for name in _TOP_KEYS}, attribute_structure=[
        _Attribute(a.get("field_code"), a.get("field_type"), _values(a))
        for a in (attributes if isinstance(attributes, list) else []) if isinstance(a, Mapping)])


def _first(values: list[_Value], norm: Any) -> Any:
    for v in values:
        n = norm(v.display_value)
        if n is not None:
            return n
    return None


def _item_kind(value: _Value) -> str | None:
    kind = _label(value.data_type)
    if kind:
        return kind.lower()
    label = _label(value.value_type)
    return _KIND_BY_LABEL.get(label.lower()) if label else None


def _items(values: list[_Value], norm: Any) -> tuple[Item, ...]:
    # The same number in two forms is one number: keep the first, with its kind.
    out: dict[str, Item] = {}
    for v in values:
        value = norm(v.display_value)
        if value and value not in out:
            out[value] = Item(value, _item_kind(v))
    return tuple(out.values())


def _gender(value: _Value) -> str | None:
    g = _gender_text(value.display_value) or _gender_text(value.data_type)
    return GENDER_LABELS.get(g, g) if g else None


def _birthday(value: object) -> Any:
    """[assumed] 7: dd/MM/yyyy; ISO and epoch ms tolerated. Unreadable -> None (not pushed back)."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) > 8:
        value = int(value.strip())
    try:
        return parse_date(value)
    except (ValueError, OverflowError, OSError):
        return None


def _top(obj: Any, keys: tuple[str, ...]) -> str | None:
    """The first of these top-level keys that is present and not null, normalised."""
    for k in keys:
        value = getattr(obj, k)
        if value is not None:
            return norm_text(value)
    return None


def contact_from_wire(obj: Mapping[str, Any], *, digest: str | None = None) -> Contact:
    """Read one contact object tolerantly: unknown keys ignored, missing optional ones None."""
    return _contact(_tolerant(obj), digest)


def contact_from_json(raw: bytes, *, digest: str | None = None) -> Contact:
    """`contact_from_wire` of the object this JSON holds."""
    try:
        wire = _READ_CONTACT(raw)
    except msgspec.DecodeError:  # another shape (or not JSON: _decode says so)
        wire = _tolerant(_decode(raw))
    return _contact(wire, digest)


def _contact(obj: Any, digest: str | None) -> Contact:
    f: dict[str, Any] = {"ref_id": _top(obj, REF_ID_KEYS), "ref_code": _top(obj, REF_CODE_KEYS)}
    custom: list[CustomEntry] = []
    dynamic: dict[str, DynamicValue] = {}
    for entry in obj.attribute_structure or ():
        code = entry.field_code
        if not isinstance(code, str):
            continue
        values = entry.value or []
        if code in _TEXT_CODES:
            f[code] = _first(values, norm_text)
        elif code == "note":
            f["note"] = _first(values, norm_multiline)
        elif code == "gender":
            f["gender"] = next((g for g in map(_gender, values) if g), None)
        elif code == "phone_number":
            f["phones"] = _items(values, norm_phone)
        elif code == "mail":
            f["emails"] = _items(values, norm_email)
        elif code == BIRTHDAY_CODE:
            f["birthday"] = next((b for b in (_birthday(v.display_value) for v in values)
                                  if b is not None), None)
        elif code == OWNER_CODE:
            f["owner_email"] = _first(values, _owner)
        elif code in REF_ID_KEYS or code in REF_CODE_KEYS:
            key = "ref_id" if code in REF_ID_KEYS else "ref_code"
            f[key] = f[key] or _first(values, norm_text)
        elif code == "more_infomation":
            custom.extend(CustomEntry(label, value, _label(v.data_type))
                          for v in values
                          if (label := _label(v.value_type))
                          and (value := _label(v.display_value)) is not None)
        else:
            field_type = str(entry.field_type or "")
            norm = norm_multiline if field_type == "multi_text" else norm_text
            dynamic[code] = DynamicValue(field_type, tuple(
                n for n in (norm(v.display_value) for v in values) if n is not None))
    tags = obj.tags
    return Contact(
        **f, tags=norm_tags(tag_name(t) for t in tags) if isinstance(tags, list) else frozenset(),
        custom=tuple(custom), dynamic=dynamic, public_id=norm_text(obj.public_id),
        created_ms=_int(obj.created_date), updated_ms=_int(obj.last_updated_date),
        is_deleted=obj.is_deleted is True,  # [assumed] 19: kept, the caller decides
        digest=digest, from_wire=True)


def page_from_wire(payload: _ListPayload | msgspec.Raw | Any, requested_page: int,
                   known: Known | None = None) -> Page:
    """A list payload: from list_payload, raw (parse_envelope(raw=True)) or decoded. Wrong
    shapes are ProtocolError (the body decoded: retrying won't help); so is an item that is not
    an object with a public_id, checked here so that a bad page aborts before any of it is
    applied. `known(digest)`: (public_id, local key) of a contact whose JSON the caller has
    agreed, else None; an item with such a digest is those very bytes, so it is neither decoded
    nor checked again (its `agreed_key` says so). Without `known` no digest is computed here:
    `Listed.contact()` computes it, in a first import's worker process."""
    if not isinstance(payload, _ListPayload):
        if not isinstance(payload, msgspec.Raw):
            payload = msgspec.Raw(msgspec.json.encode(payload))
        try:
            payload = _LIST.decode(payload)
        except msgspec.DecodeError:
            raise ProtocolError("list payload is not an object with an items list",
                                endpoint="list") from None
    page = payload
    listed: list[Listed] = []
    for i, item in enumerate(page.items or ()):
        data = bytes(item)
        digest = None
        if known is not None:  # else the digest waits for contact() (a first import's worker)
            digest = item_digest(data)
            if (hit := known(digest)) is not None:
                # deleted contacts are never agreed, so the same bytes are not deleted either
                listed.append(Listed(hit[0], None, False, digest, data, hit[1]))
                continue
        try:
            head: _Head | None = _HEAD.decode(item)
        except msgspec.DecodeError:
            head = None
        if head is None or not (public_id := norm_text(head.public_id)):
            raise ProtocolError(f"list item {i} is not a contact with a public_id",
                                endpoint="list")
        ref_id = norm_text(head.ref_id if head.ref_id is not None else head.refId)
        listed.append(Listed(public_id, ref_id, head.is_deleted is True, digest, data))
    number = _int(page.page_number) or requested_page
    total_pages = _int(page.total_pages) or 0
    total_items = _int(page.total_items) or 0
    has_next = page.has_next
    if not isinstance(has_next, bool):  # [assumed] 12: derived when missing
        has_next = _more_after(number, len(listed), total_pages, total_items)
    return Page(listed=tuple(listed), page_number=number,
                page_size=_int(page.page_size) or len(listed), total_items=total_items,
                total_pages=total_pages, has_next=has_next)


def _more_after(number: int, served: int, total_pages: int, total_items: int) -> bool:
    """[assumed] 12: whether pages follow this one, for a server that does not say so: by
    total_pages, else by total_items (this page's count taken as the page size: a short last
    page costs one more, empty, page), else until an empty page."""
    if total_pages:
        return number < total_pages
    if not served:
        return False
    return number * served < total_items if total_items else True


def layout_from_wire(payload: Any) -> list[LayoutField]:
    """[assumed] 18: a list of field objects (or {"items": [...]})."""
    if isinstance(payload, Mapping):
        payload = payload.get("items")
    if not isinstance(payload, list):
        raise ProtocolError("layout payload is not a list", endpoint="layout")
    fields = []
    for f in payload:
        if not isinstance(f, Mapping) or not isinstance(f.get("field_code"), str):
            raise ProtocolError("layout entry without a field_code", endpoint="layout")
        options = f.get("options")
        options = options if isinstance(options, list) else []
        fields.append(LayoutField(
            field_code=f["field_code"], field_name=str(f.get("field_name") or f["field_code"]),
            field_type=str(f.get("field_type") or ""), is_required=f.get("is_required") is True,
            options=tuple(str(o.get("name") or o.get("value") if isinstance(o, Mapping) else o)
                          for o in options)))
    return fields


def summary_from_wire(payload: Any) -> dict[str, Any]:
    """update's camelCase summary, passed on as is ({} if it is not an object)."""
    return dict(payload) if isinstance(payload, Mapping) else {}


def _summary_gender(text: str) -> str | None:
    g = _gender_text(text)
    return GENDER_LABELS.get(g, g) if g else None


_UNREAD: Any = object()  # a summary value of another type: never equal to a Contact's
# [assumed] 22: the summary's texts [doc], each with the Contact attribute and how it is read
_SUMMARY_TEXTS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "fullName": ("full_name", norm_text), "gender": ("gender", _summary_gender),
    "passport": ("passport", norm_text), "address": ("address", norm_text),
    "note": ("note", norm_multiline)}
UNDOCUMENTED_UPDATE_ATTRS = ("job_title", "ref_code")  # [assumed] 22
# why a changed attribute did not reach the CRM (OmiClient.update_checked)
NOT_TAKEN = "not taken (the CRM shows the value from before the update)"
NOT_READ_BACK = "not confirmed (reading the contact back failed)"


def taken_by_another(summary: Any, before: Contact) -> str | None:
    """[assumed] 22: the publicId update's summary names [doc], when it is not the contact
    `before` is: update finds a contact by refId alone, and the CRM applied it to another one
    with that refId (an agent's duplicate). None when it is the one, or names none."""
    public_id = summary.get("publicId") if isinstance(summary, Mapping) else None
    if isinstance(public_id, str) and public_id and before.public_id \
            and public_id != before.public_id:
        return public_id
    return None


def update_changes(c: Contact, before: Contact) -> list[str]:
    """The Contact attributes an update of `c` against `before` changes."""
    return [a for a in ("full_name", "phones", *_UPDATE_ATTRS.values())
            if getattr(c, a) != getattr(before, a)]


def not_clearable(c: Contact, before: Contact) -> list[str]:
    """The attributes `c` clears that an update cannot: a scalar sent as "" only if it is in
    CLEARABLE_TEXT_FIELDS, and left as it is when absent ([assumed] 13). (A list is sent
    whole, so an empty one clears; only a scalar is ever None.)"""
    return [a for a in _UPDATE_ATTRS.values() if a not in CLEARABLE_TEXT_FIELDS
            and getattr(c, a) is None and getattr(before, a) is not None]


def not_taken(summary: Mapping[str, Any], sent: Contact, before: Contact) -> list[str]:
    """[assumed] 22: the attributes an update changed from `before` that its summary shows as
    `before` has them: the CRM did not take them."""
    out = []
    for key, (attr, read) in _SUMMARY_TEXTS.items():
        old = getattr(before, attr)
        if key in summary and getattr(sent, attr) != old and _read(read, summary[key]) == old:
            out.append(attr)
    return out


def shown_as_before(now: Contact, sent: Contact, before: Contact,
                    attrs: Iterable[str] = UNDOCUMENTED_UPDATE_ATTRS) -> list[str]:
    """Of these attributes, those an update changed from `before` that `now` (the contact
    read back) still shows as `before` has them."""
    return [a for a in attrs
            if getattr(sent, a) != getattr(before, a) and getattr(now, a) == getattr(before, a)]


def _read(read: Callable[[str], Any], value: Any) -> Any:
    try:
        return read(value) if isinstance(value, str) else None if value is None else _UNREAD
    except (TypeError, ValueError):
        return _UNREAD


# --- writing: request bodies and queries ------------------------------------------------------

def _item_wire(item: Item) -> dict[str, str]:
    out = {"data": item.value}
    if item.kind:
        out[ITEM_KIND_KEY] = item.kind
        if item.kind in ITEM_KINDS:
            out["valueType"] = ITEM_KINDS[item.kind]
    return out


def create_body(c: Contact) -> dict[str, Any]:
    """An add / add-more object (camelCase, per the contract); None and empty lists omitted."""
    body: dict[str, Any] = {k: v for k, v in {
        "fullName": c.full_name, "refId": c.ref_id, "refCode": c.ref_code,
        "job_title": c.job_title, "note": c.note, "birthday": format_date(c.birthday),
        "gender": c.gender, "passport": c.passport, "address": c.address,
        "user_owner_email": c.owner_email}.items() if v is not None}
    lists = {"phones": [_item_wire(i) for i in c.phones],
             "emails": [_item_wire(i) for i in c.emails], "tags": sorted(c.tags),
             "more_infomation": [{"value_type": e.label, "display_value": e.value}
                                 for e in c.custom]}
    body.update((k, v) for k, v in lists.items() if v)
    return body


# An update body's optional keys and the Contact attribute each is made from: what `update_body`
# leaves out when the attribute is as the CRM's copy has it
_UPDATE_ATTRS: Mapping[str, str] = {
    "refCode": "ref_code", "job_title": "job_title", "note": "note", "birthday": "birthday",
    "gender": "gender", "passport": "passport", "address": "address",
    "user_owner_email": "owner_email", "emails": "emails", "tags": "tags",
    "more_infomation": "custom", "dynamic_attributes": "dynamic"}
_UPDATE_ALWAYS = frozenset({"refId", "fullName", "phones"})  # the API requires them


def update_body(c: Contact, before: Contact | None = None) -> dict[str, Any]:
    """An update body. Lists are always sent whole, because a list present replaces the CRM's.

    With `before`, the CRM's copy the change was made against, only what differs from it is
    sent, besides refId, fullName and phones, which the API requires: an absent field is left
    as it is ([assumed] 13), so an agent's edit of another field, made since that copy was
    listed, is not overwritten by the copy's old value."""
    if not c.ref_id:
        raise ValueError(f"contact {c.public_id or '?'} has no ref_id: it was created in the "
                         "CRM's own interface and is pull-only (the API updates by refId only)")
    if not c.full_name:
        raise ValueError(f"contact {c.ref_id}: update requires fullName")
    body = create_body(c)
    for name in CLEARABLE_TEXT_FIELDS:  # [assumed] 13: "" clears; absence would keep the old
        body.setdefault(name, "")
    body.update(phones=[_item_wire(i) for i in c.phones],
                emails=[_item_wire(i) for i in c.emails], tags=sorted(c.tags),
                more_infomation=[{"value_type": e.label, "display_value": e.value}
                                 for e in c.custom])
    if c.dynamic:
        body["dynamic_attributes"] = [
            {"field_code": code, "field_type": dv.field_type,
             "dynamic_attribute_value": [{"display_value": v} for v in dv.values]}
            for code, dv in sorted(c.dynamic.items())]
    if before is None:
        return body
    changed = {key for key, attr in _UPDATE_ATTRS.items()
               if getattr(c, attr) != getattr(before, attr)}
    return {k: v for k, v in body.items() if k in _UPDATE_ALWAYS or k in changed}


def notes_body(notes: Sequence[NoteIn]) -> list[dict[str, str]]:
    return [{"phone": norm_phone(n.phone) or n.phone, "content": n.content,
             **({"note_by": n.note_by} if n.note_by else {})} for n in notes]


def get_query(**given: str | None) -> dict[str, str]:
    """get's query: exactly one identifier, under its [assumed] 16 parameter name."""
    chosen = {k: v for k, v in given.items() if v is not None}
    if len(chosen) != 1:
        raise ValueError(f"get() takes exactly one of {sorted(GET_QUERY_KEYS)}, got "
                         f"{sorted(chosen) or 'none'}")
    (name, value), = chosen.items()
    return {GET_QUERY_KEYS[name]: value}
