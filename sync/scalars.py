"""Kinds of canonical values, and strict parsers and formatters for single values.

Pure: no I/O. Every function here is strict: a value that does not fit raises ValueError with a
message naming the value, never a silent guess, because a guess that does not round-trip is a
spurious change pushed to one side or the other on every cycle.

The canonical value of a mapped field depends on its *kind* (`FieldMap.kind`): text, multiline,
phone, email, gender, date, integer, number, boolean, set (tags, checkbox), phones, emails.
"No value" is always None, for lists too, so that a field the agreed base never recorded reads
as empty.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sync.record import (
    FieldValue,
    norm_email,
    norm_gender,
    norm_multiline,
    norm_phone,
    norm_text,
    parse_date,
)

Kind = Literal["text", "multiline", "phone", "email", "gender", "date", "integer", "number",
               "boolean", "set", "phones", "emails"]
LIST_KINDS: frozenset[str] = frozenset({"set", "phones", "emails"})
GENDER_WORDS = {"male": "male", "female": "female", "other": "other",
                "nam": "male", "nữ": "female", "khác": "other"}
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "x", "on", "có", "đúng"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off", "không", "sai"})
WIRE_DATE = "%d/%m/%Y"  # how the CRM writes dates (birthday, custom and dynamic dates)
INT_RANGE = 2 ** 63  # BIGINT
_NUMBER = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?")
_DATE_TOKENS = {"yyyy": "%Y", "MM": "%m", "dd": "%d"}
_DATE_SAMPLES = (date(1950, 6, 15), date(2001, 12, 31), date(2024, 2, 29), date(1999, 1, 2))


def fold(text: str) -> str:
    """The form value maps match on: NFC, trimmed, inner spaces collapsed, case-folded."""
    return (norm_text(text) or "").casefold()


# --- scalar parsers (strict) ------------------------------------------------------------------

def parse_number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float | Decimal):
        num = float(value)
    else:
        text = re.sub(r"\s", "", unicodedata.normalize("NFC", str(value)))
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"{value!r} is not a number")
        num = float(text.replace(",", "."))
    if not math.isfinite(num):
        raise ValueError(f"{value!r} is not a finite number")
    return num


def round_to_scale(num: float, scale: int) -> float:
    """`num` as a NUMERIC column of this scale (INTEGER: 0) holds it: the decimal the float
    stands for (its shortest form), rounded half away from zero, as PostgreSQL rounds."""
    exact = Decimal(repr(num))
    if exact.as_tuple().exponent >= -scale:  # type: ignore[operator]  # finite: an int
        return num
    return float(exact.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP))


def parse_integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, int):
        num = value
    else:
        if isinstance(value, float | Decimal):
            dec = Decimal(value)
        else:
            text = re.sub(r"\s", "", str(value))
            if not _NUMBER.fullmatch(text):
                raise ValueError(f"{value!r} is not an integer")
            dec = Decimal(text.replace(",", "."))
        if not dec.is_finite() or dec != dec.to_integral_value():
            raise ValueError(f"{value!r} is not an integer")
        num = int(dec)
    if not -INT_RANGE <= num < INT_RANGE:
        raise ValueError(f"{value!r} is out of the integer range")
    return num


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    word = fold(str(value))
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a yes/no value (true/false, 1/0, có/không...)")


def fmt_number(num: float) -> str:
    """A number as text: integral values without `.0` (90, not 90.0), others shortest-exact."""
    if num.is_integer() and abs(num) < 1e16:
        return str(int(num))
    return repr(num)


def literal(value: object) -> str | None:
    """A column's scalar as the text a value map looks up."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | Decimal):
        return fmt_number(float(value))
    if isinstance(value, date):
        raise ValueError(f"{value!r}: a date cannot go through a values map")
    return norm_text(value)


def date_pattern(fmt: str) -> str:
    """`dd/MM/yyyy`-style or strftime (`%d/%m/%Y`) to a strftime pattern that round-trips.

    Only day, month and 4-digit year are allowed (locale-free, lossless); ValueError otherwise.
    """
    pattern = fmt
    if "%" not in fmt:
        pattern = re.sub(r"yyyy|MM|dd", lambda m: _DATE_TOKENS[m.group()], fmt)
        if re.search(r"[A-Za-z]", pattern.replace("%Y", "").replace("%m", "").replace("%d", "")):
            raise ValueError(f"date_format {fmt!r}: use dd, MM and yyyy (or %d, %m and %Y)")
    directives = re.findall(r"%.", pattern)
    wanted = sorted(["%Y", "%m", "%d"])
    if sorted(d for d in directives if d != "%%") != wanted:
        raise ValueError(f"date_format {fmt!r} must hold the day, the month and the 4-digit year "
                         "once each (dd MM yyyy, or %d %m %Y), and nothing locale-dependent")
    for sample in _DATE_SAMPLES:
        try:
            back = datetime.strptime(sample.strftime(pattern), pattern).date()
        except ValueError:
            back = None
        if back != sample:
            raise ValueError(f"date_format {fmt!r} does not read back what it writes")
    return pattern


def format_phone(number: str, fmt: str) -> str:
    """A canonical (national) phone number in the column's format."""
    if fmt == "e164" and number.startswith("0") and number[1:].isdigit():
        return "+84" + number[1:]
    return number


# --- canonical values by kind -------------------------------------------------------------------

def canon_value(kind: str, value: object) -> FieldValue:
    """Any side's value to the canonical value of `kind`; ValueError when it does not fit."""
    if kind in LIST_KINDS:
        return _canon_list(kind, value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "date":
        if isinstance(value, str):
            return parse_date(value.strip())  # dd/MM/yyyy or ISO
        if isinstance(value, date):
            return parse_date(value)
        raise ValueError(f"{value!r} is not a date")
    if kind == "integer":
        return parse_integer(value)
    if kind == "number":
        return parse_number(value)
    if kind == "boolean":
        return parse_bool(value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        raise ValueError(f"{value!r} is a list, the column holds one value")
    if isinstance(value, float | Decimal):
        value = fmt_number(float(value))
    if kind == "multiline":
        return norm_multiline(value)
    if kind == "phone":
        return norm_phone(value)
    if kind == "email":
        return norm_email(value)
    if kind == "gender":
        g = norm_gender(value)
        return GENDER_WORDS.get(g, g) if g else None
    return norm_text(value)


def _canon_list(kind: str, value: object) -> FieldValue:
    if value is None:
        return None
    items = (value if isinstance(value, list | tuple | set | frozenset) else [value])
    for i in items:
        if isinstance(i, dict | list | tuple | set | frozenset) or i is None:
            raise ValueError(f"list item {i!r} is not a plain value")
    if kind == "set":
        tags = frozenset(t for t in (norm_text(literal(i)) for i in items) if t)
        return tags or None
    norm = norm_phone if kind == "phones" else norm_email
    ordered = tuple(dict.fromkeys(v for v in (norm(i) for i in items) if v))
    return ordered or None


def to_crm_text(value: FieldValue) -> str:
    """A canonical scalar as the CRM's text (custom fields and dynamic attributes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return fmt_number(value)
    if isinstance(value, date):
        return value.strftime(WIRE_DATE)
    return str(value)
