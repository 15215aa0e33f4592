"""The canonical contact: plain typed values, normalised so that a round trip is stable.

Pure: no I/O, no clock, no logging. Two shapes live here:

- `Contact`: everything the CRM holds about one contact, typed (lists of phones with their
  kinds, custom entries, dynamic attributes). The adapter reads the wire into it and writes it
  back; the engine keeps the last one seen so that a push never erases what the mapping ignores.
- `Fields`: the flat projection the three-way merge compares, one key per mapped field
  (`phone`, `email`, `custom:<label>`, `dynamic:<field_code>`...), values already normalised.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

# A normalised field value. Lists are tuples, sets are frozensets: everything is hashable.
FieldValue = str | int | float | bool | date | frozenset[str] | tuple[str, ...] | None
Fields = dict[str, FieldValue]

CUSTOM_PREFIX = "custom:"
DYNAMIC_PREFIX = "dynamic:"

# The standard fields a mapping may name; custom and dynamic ones use the prefixes above.
STANDARD_FIELDS: frozenset[str] = frozenset({
    "ref_code", "full_name", "phone", "phones", "email", "emails", "gender", "birthday",
    "address", "job_title", "passport", "note", "tags", "owner_email",
})
GENDERS: frozenset[str] = frozenset({"male", "female", "other"})
ITEM_KINDS: Mapping[str, str] = {"home": "Nhà", "personal": "Cá nhân", "office": "Công ty"}


@dataclass(frozen=True, slots=True)
class Item:
    """A phone number or an email with its kind (`home`, `personal`, `office`)."""

    value: str
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class CustomEntry:
    """One `more_infomation` entry: the custom field's label, its value, its internal key."""

    label: str
    value: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class DynamicValue:
    """A dynamic attribute's value(s) and the layout's field_type."""

    field_type: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Contact:
    """One CRM contact, canonical. `public_id` and the dates are None for one not yet created."""

    ref_id: str | None = None
    ref_code: str | None = None
    full_name: str | None = None
    phones: tuple[Item, ...] = ()
    emails: tuple[Item, ...] = ()
    gender: str | None = None
    birthday: date | None = None
    address: str | None = None
    job_title: str | None = None
    passport: str | None = None
    note: str | None = None
    tags: frozenset[str] = frozenset()
    owner_email: str | None = None
    custom: tuple[CustomEntry, ...] = ()
    dynamic: Mapping[str, DynamicValue] = field(default_factory=dict)
    public_id: str | None = None
    created_ms: int | None = None
    updated_ms: int | None = None
    is_deleted: bool = False
    # a digest of the JSON the listing served this contact as; a contact the client built
    # itself has none. Not part of its value: equality ignores it.
    digest: str | None = field(default=None, compare=False)
    # read from the wire by the adapter, so every standard value (text, phone, email, date,
    # gender, tags) and every custom entry's value already went through its normaliser: the
    # converter need not normalise them again (convert._WIRE_KINDS). Not part of its value.
    from_wire: bool = field(default=False, compare=False, repr=False)


# --- normalisers: each idempotent, each maps equivalent inputs to one value ------------------

_SPACES = re.compile(r"\s+")
_PHONE_JUNK = re.compile(r"[\s.\-()/]")


def norm_text(value: object) -> str | None:
    """Unicode NFC, trimmed, inner whitespace collapsed; empty becomes None."""
    if value is None:
        return None
    if (type(value) is str and value.isprintable() and "  " not in value
            and value[:1] != " " and value[-1:] != " "):
        # the common case: no whitespace but single inner spaces (non-printable covers tabs,
        # breaks and Unicode spaces), so NFC is all that can change
        return (value if value.isascii() else unicodedata.normalize("NFC", value)) or None
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", str(value))).strip()
    return text or None


def norm_multiline(value: object) -> str | None:
    """Like norm_text but keeps line breaks (notes); trailing spaces per line dropped."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip()
    return text or None


def norm_phone(value: object) -> str | None:
    """Vietnamese numbers to the national form: `+84 393 123 456`, `84393123456` -> `0393123456`.

    Numbers that are not Vietnamese (another country code) keep a leading `+`. A trunk `0`
    written after the country code (`+84 (0) 393 123 456`) is dropped. Without `+`/`00`, `84`
    is read as the country code for 11 digits (mobiles) and 12 digits (landlines).
    """
    text = norm_text(value)
    if text is None:
        return None
    # removing separators can bring a base letter next to a combining mark: NFC again
    digits = unicodedata.normalize("NFC", _PHONE_JUNK.sub("", text))
    if digits.startswith("00") and digits[2:3] not in ("", "0"):  # no country code starts with 0
        digits = "+" + digits[2:]
    if digits.startswith("+84"):
        return "0" + digits[3:].lstrip("0")
    if digits.startswith("84") and len(digits) in (11, 12):
        return "0" + digits[2:].lstrip("0")
    return digits or None


def norm_email(value: object) -> str | None:
    text = norm_text(value)  # lower() can undo NFC ('J\u030c' -> 'j\u030c'): NFC after it
    return unicodedata.normalize("NFC", text.lower()) if text else None


def norm_gender(value: object) -> str | None:
    text = norm_text(value)
    return unicodedata.normalize("NFC", text.lower()) if text else None


def norm_tags(values: Iterable[object] | None) -> frozenset[str]:
    if not values:
        return frozenset()
    if isinstance(values, str):  # one tag, not its letters
        values = [values]
    return frozenset(t for t in (norm_text(v) for v in values) if t)


_T = TypeVar("_T")
RECURRING_MAX = 4096  # distinct values a `recurring` normaliser remembers (then it starts over)


def recurring(norm: Callable[[Any], _T], *, of: type = str, size: int | None = None
              ) -> Callable[[Any], _T]:
    """`norm` for values that recur from contact to contact (labels, kinds, owners; the sets a
    codec sorts): a value of type `of` seen before is answered from a table, a tenth of the
    cost of normalising it again; other values are passed to `norm` as they are. The table
    holds at most `size` (default RECURRING_MAX) values and is emptied when full, so a value
    that never recurs costs a lookup and no memory beyond that."""
    table: dict[Any, _T] = {}

    def cached(value: Any) -> _T:
        if type(value) is not of:
            return norm(value)
        try:
            return table[value]
        except KeyError:
            pass
        if len(table) >= (size or RECURRING_MAX):
            table.clear()
        out = table[value] = norm(value)
        return out

    return cached


_WIRE_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})\Z", re.ASCII)


def parse_date(value: object) -> date | None:
    """Accepts a date, `dd/MM/yyyy` (the wire form), ISO `yyyy-MM-dd`, or epoch milliseconds.

    Raises ValueError naming the value when it is none of these.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC).date()
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"not a date (epoch milliseconds out of range): {value!r}") from None
    text = str(value).strip()
    if not text:
        return None
    wire = _WIRE_DATE.match(text)
    if wire:  # the common case, without strptime's cost (it runs for every contact)
        try:
            return date(int(wire[3]), int(wire[2]), int(wire[1]))
        except ValueError:
            pass  # e.g. 31/02: strptime below gives the same verdict and message
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date (expected dd/MM/yyyy or yyyy-MM-dd): {text!r}")


def format_date(value: date | None) -> str | None:
    """The wire form, dd/MM/yyyy."""
    # not strftime: glibc's %Y does not zero-pad years before 1000
    return f"{value.day:02d}/{value.month:02d}/{value.year:04d}" if value is not None else None


def first(items: tuple[Item, ...]) -> str | None:
    return items[0].value if items else None
