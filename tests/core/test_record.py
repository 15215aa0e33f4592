"""The canonical record's normalisers (sync/record.py): idempotent, and equivalent inputs agree.

Pure and fast. Change detection compares normalised values, so every normaliser must map each
equivalence class (the same phone in five spellings, an email in any case, NFC vs NFD text) to ONE
value, and applying it again must change nothing (otherwise every cycle would see a "change").
"""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import sync.record as record
from sync.record import (
    GENDERS,
    Item,
    first,
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

NAME = "Nguyễn Thị Ánh Tuyết"
NAME_NFD = unicodedata.normalize("NFD", NAME)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_the_nfd_fixture_really_is_decomposed() -> None:
    assert NAME_NFD != NAME
    assert len(NAME_NFD) > len(NAME)


# --- idempotence: f(f(x)) == f(x) -------------------------------------------------------------

# Text with the characters that matter here over-represented: whitespace of every kind, line
# breaks, phone punctuation, combining marks, Vietnamese letters.
_SPECIAL = st.sampled_from([
    " ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u2028", "\u3000", ".", "-", "(", ")", "/", "+",
    "\u0301", "\u0300", "\u0303", "\u0309", "\u0323", "\u0302", "\u0306", "\u031b", "J\u030c",
    "ễ", "Ư", "đ", "Đ", "İ", "ß", "0", "8", "4",
])
TEXTS = st.one_of(st.text(), st.lists(st.one_of(_SPECIAL, st.text(max_size=3))).map("".join))


@given(TEXTS)
@example(NAME_NFD)
@example(" \u0301 x \u0301 ")
@example("e \u0301")
def test_norm_text_idempotent(x: str) -> None:
    assert norm_text(norm_text(x)) == norm_text(x)


@given(TEXTS)
@example("a \r\n b \r\r\n  \n")
@example(" \n\u0301")
def test_norm_multiline_idempotent(x: str) -> None:
    assert norm_multiline(norm_multiline(x)) == norm_multiline(x)


@given(TEXTS)
@example("+84 0393 123 456")
@example("e.\u0301")
def test_norm_phone_idempotent(x: str) -> None:
    assert norm_phone(norm_phone(x)) == norm_phone(x)


@given(TEXTS)
@example("J\u030c")
def test_norm_email_idempotent(x: str) -> None:
    assert norm_email(norm_email(x)) == norm_email(x)


@given(TEXTS)
@example("J\u030c")
def test_norm_gender_idempotent(x: str) -> None:
    assert norm_gender(norm_gender(x)) == norm_gender(x)


@given(st.lists(TEXTS))
def test_norm_tags_idempotent(xs: list[str]) -> None:
    once = norm_tags(xs)
    assert norm_tags(once) == once
    assert all(norm_text(t) == t for t in once)


# --- phones ------------------------------------------------------------------------------------

VN_FORMS = [
    "0393123456",
    "84393123456",
    "+84393123456",
    "+84 393 123 456",
    "0393.123.456",
    "(+84) 393-123-456",
    "0084 393 123 456",
    "  0393 123 456  ",
    "+84-393-123-456",
    "0393/123/456",
    "(039) 3123 456",
    "+84\u00a0393\u00a0123\u00a0456",
    "\t+84 393 123 456\n",
]


@pytest.mark.parametrize("raw", VN_FORMS, ids=VN_FORMS)
def test_vietnamese_phone_forms_are_one_number(raw: str) -> None:
    assert norm_phone(raw) == "0393123456"


@pytest.mark.parametrize("raw", VN_FORMS, ids=VN_FORMS)
def test_vietnamese_phone_canonical_form_is_a_fixed_point(raw: str) -> None:
    assert norm_phone(norm_phone(raw)) == norm_phone(raw)


_SEPARATORS = st.sampled_from(["", " ", ".", "-", " - ", "\u00a0"])


@st.composite
def vn_mobile(draw: st.DrawFn) -> tuple[str, str]:
    """A Vietnamese mobile number: (its national form, one way people write it)."""
    sub = draw(st.sampled_from("35789")) + draw(st.text("0123456789", min_size=8, max_size=8))
    prefix = draw(st.sampled_from(["0", "84", "+84", "+84 ", "(+84) ", "0084", "0084 ", "+84-"]))
    sep = draw(_SEPARATORS)
    body = sep.join([sub[:2], sub[2:5], sub[5:]])
    pad = draw(st.sampled_from(["", " ", "\t"]))
    return "0" + sub, pad + prefix + body + pad


@given(vn_mobile())
def test_vietnamese_mobiles_in_any_form_normalise_to_national(case: tuple[str, str]) -> None:
    national, written = case
    assert norm_phone(written) == national
    assert norm_phone(national) == national


@pytest.mark.parametrize("raw", ["+84 0393 123 456", "(+84) 0393123456", "+84 (0) 393 123 456",
                                 "840393123456", "0084 0393 123 456"])
def test_trunk_zero_after_country_code_is_dropped(raw: str) -> None:
    assert norm_phone(raw) == "0393123456"


def test_vietnamese_landline_forms_are_one_number() -> None:
    forms = ["02438253456", "+84 24 3825 3456", "842438253456", "(024) 3825 3456"]
    assert {norm_phone(f) for f in forms} == {"02438253456"}


@pytest.mark.parametrize(("raw", "expected"), [
    ("+1 (415) 555-0100", "+14155550100"),
    ("001 415 555 0100", "+14155550100"),
    ("+33 1 23 45 67 89", "+33123456789"),
    ("0033 1 23 45 67 89", "+33123456789"),
    ("+86 138 0013 8000", "+8613800138000"),
    ("+855 12 345 678", "+85512345678"),  # Cambodia: starts with 8, is not Vietnam
    ("+856 20 5555 1234", "+8562055551234"),  # Laos
], ids=lambda v: str(v))
def test_foreign_numbers_keep_their_plus(raw: str, expected: str) -> None:
    assert norm_phone(raw) == expected
    assert norm_phone(expected) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "-", "( )", " . / - "], ids=repr)
def test_empty_phone_is_none(raw: object) -> None:
    assert norm_phone(raw) is None


def test_phone_keeps_what_it_does_not_understand() -> None:
    # an extension or letters are kept (no value is silently dropped), separators are not
    assert norm_phone("0393 123 456 ext 12") == "0393123456ext12"
    # `00` is an international prefix only before a country code, none of which starts
    # with 0: zeros stay zeros (a row's `0000` was reported as the phone '+00')
    assert [norm_phone(p) for p in ("0000", "00", "000 123")] == ["0000", "00", "000123"]
    assert norm_phone("0044 20 7946 0958") == "+442079460958"


# --- emails, genders, text ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "an.nguyen@example.vn", "An.Nguyen@Example.VN", "AN.NGUYEN@EXAMPLE.VN",
    "  an.nguyen@example.vn  ", "\tAn.Nguyen@example.vn\n",
])
def test_emails_are_case_insensitive(raw: str) -> None:
    assert norm_email(raw) == "an.nguyen@example.vn"


@given(st.emails())
def test_any_email_in_any_case_normalises_to_one_value(e: str) -> None:
    once = norm_email(e)
    assert once is not None
    assert norm_email(e.upper()) == norm_email(e.lower()) == once
    assert norm_email(once) == once


@pytest.mark.parametrize("raw", [None, "", "   "], ids=repr)
def test_empty_email_is_none(raw: object) -> None:
    assert norm_email(raw) is None


@pytest.mark.parametrize("g", sorted(GENDERS))
def test_genders_case_insensitive(g: str) -> None:
    assert norm_gender(g.upper()) == norm_gender(f" {g.title()} ") == g


def test_norm_text_nfd_vietnamese_equals_nfc() -> None:
    assert norm_text(NAME_NFD) == norm_text(NAME) == NAME
    assert unicodedata.is_normalized("NFC", norm_text(NAME_NFD) or "")


@given(TEXTS)
def test_norm_text_does_not_care_about_composition(x: str) -> None:
    assert norm_text(nfd(x)) == norm_text(unicodedata.normalize("NFC", x))
    assert norm_multiline(nfd(x)) == norm_multiline(unicodedata.normalize("NFC", x))


def test_vietnamese_email_and_tags_nfd_equal_nfc() -> None:
    assert norm_email(nfd("Tuyết@Example.VN")) == norm_email("tuyết@example.vn")
    assert norm_tags([nfd("Khách lẻ"), nfd("Đã gọi")]) == frozenset({"Khách lẻ", "Đã gọi"})


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    ("", None),
    ("   ", None),
    ("\t\n", None),
    ("  Trần   Văn\tTiến \n", "Trần Văn Tiến"),
    (123, "123"),
])
def test_norm_text_trims_and_collapses(raw: object, expected: str | None) -> None:
    assert norm_text(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    ("", None),
    (" \n \r\n ", None),
    ("Gọi lại  \r\nsau 5h   \r\n\r\n", "Gọi lại\nsau 5h"),
    ("dòng 1\rdòng 2", "dòng 1\ndòng 2"),
    ("  thụt  lề\n  giữ", "thụt  lề\n  giữ"),  # inner and leading spaces of later lines kept
])
def test_norm_multiline_keeps_line_breaks(raw: object, expected: str | None) -> None:
    assert norm_multiline(raw) == expected


# --- tags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (None, frozenset()),
    ([], frozenset()),
    (["Khách lẻ"], frozenset({"Khách lẻ"})),
    (["Khách lẻ", " Khách  lẻ ", nfd("Khách lẻ")], frozenset({"Khách lẻ"})),
    (["VIP", "Đã gọi", "VIP"], frozenset({"VIP", "Đã gọi"})),
    (["", "  ", None, "x"], frozenset({"x"})),
    (("a", "b"), frozenset({"a", "b"})),
    ({"a", "b"}, frozenset({"a", "b"})),
], ids=lambda v: repr(v)[:30])
def test_tags_become_a_set(raw: object, expected: frozenset[str]) -> None:
    got = norm_tags(raw)  # type: ignore[arg-type]
    assert isinstance(got, frozenset)
    assert got == expected


@given(st.lists(st.sampled_from(["VIP", "Khách lẻ", nfd("Khách lẻ"), " VIP", "Đã gọi", ""])),
       st.randoms())
def test_tags_ignore_order_and_duplicates(tags: list[str], rnd: random.Random) -> None:
    shuffled = list(tags)
    rnd.shuffle(shuffled)
    assert norm_tags(shuffled) == norm_tags(tags) == norm_tags(tags + tags)


# --- dates --------------------------------------------------------------------------------------


def epoch_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("raw", "expected"), [
    ("05/01/2024", date(2024, 1, 5)),  # dd/MM/yyyy: day first, never the US reading
    ("31/12/1999", date(1999, 12, 31)),
    ("5/1/2024", date(2024, 1, 5)),
    (" 15/05/1990 ", date(1990, 5, 15)),
    ("2024-01-05", date(2024, 1, 5)),
    ("1990-05-15", date(1990, 5, 15)),
    ("29/02/2024", date(2024, 2, 29)),
    (0, date(1970, 1, 1)),
    (86_399_999, date(1970, 1, 1)),
    (86_400_000, date(1970, 1, 2)),
    (86_400_000.0, date(1970, 1, 2)),
    (-1, date(1969, 12, 31)),  # birthdays before 1970 are negative
    (642_729_600_000, date(1990, 5, 15)),
    (1_587_023_890_765, date(2020, 4, 16)),  # the API example's created_date
    (date(2024, 1, 5), date(2024, 1, 5)),
    (datetime(2024, 1, 5, 23, 59), date(2024, 1, 5)),
    (datetime(2024, 1, 5, 23, 59, tzinfo=timezone(timedelta(hours=7))), date(2024, 1, 5)),
    (None, None),
    ("", None),
], ids=lambda v: repr(v)[:40])
def test_parse_date_accepts(raw: object, expected: date | None) -> None:
    got = parse_date(raw)
    assert got == expected
    assert type(got) is (date if expected is not None else type(None))


@pytest.mark.parametrize("raw", [
    "31/02/2024", "2024/01/05", "05-01-2024", "01/13/2024", "hôm qua", "2024-01-05T10:00:00",
    "1587023890765", "x", True, False, [1], {"d": 1}, 1.5j,
], ids=repr)
def test_parse_date_rejects_naming_the_value(raw: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(str(raw).strip()))):
        parse_date(raw)


@pytest.mark.parametrize("raw", [10**20, -(10**17), 2**63, float("inf"), 1e30, float("nan")],
                         ids=repr)
def test_parse_date_out_of_range_epoch_is_a_value_error_naming_it(raw: object) -> None:
    with pytest.raises(ValueError, match=re.escape(str(raw))):
        parse_date(raw)


@pytest.mark.parametrize("raw", ["   ", "\t\n"], ids=repr)
def test_parse_date_whitespace_only_is_empty(raw: str) -> None:
    assert parse_date(raw) is None


REALISTIC_DATES = st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31))


@given(REALISTIC_DATES)
def test_date_round_trips(d: date) -> None:
    wire = format_date(d)
    assert wire is not None
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", wire)
    assert parse_date(wire) == d
    assert format_date(parse_date(wire)) == wire
    assert parse_date(d.isoformat()) == d
    assert parse_date(epoch_ms(d)) == d
    assert parse_date(datetime(d.year, d.month, d.day, 12)) == d
    assert parse_date(parse_date(wire)) == d


@pytest.mark.parametrize("d", [date(999, 1, 2), date(1, 1, 1)], ids=str)
def test_date_round_trips_before_year_1000(d: date) -> None:
    assert parse_date(format_date(d)) == d


def test_format_date() -> None:
    assert format_date(None) is None
    assert format_date(date(2024, 1, 5)) == "05/01/2024"


def test_first() -> None:
    assert first(()) is None
    assert first((Item("0393123456", "personal"), Item("0912345678", "office"))) == "0393123456"


@given(st.lists(st.one_of(st.text(max_size=6), st.none(), st.integers()), max_size=60))
def test_a_recurring_normaliser_answers_as_the_normaliser(values: list[object]) -> None:
    """The memo changes nothing but the cost: every answer, first or repeated, is the
    normaliser's own, for texts and for the other values it passes straight through."""
    for norm in (norm_text, norm_email, norm_gender):
        cached = recurring(norm)
        assert [cached(v) for v in values + values] == [norm(v) for v in values + values]


def test_a_recurring_normaliser_holds_a_bounded_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "RECURRING_MAX", 3)
    calls: list[object] = []

    def norm(value: object) -> str:
        calls.append(value)
        return str(value).upper()

    cached = recurring(norm)
    assert [cached(v) for v in ["a", "b", "a", "c", "a"]] == ["A", "B", "A", "C", "A"]
    assert calls == ["a", "b", "c"]  # "a" answered from the table twice
    cached("d")  # the fourth text empties the table, then is remembered
    cached("a")
    assert calls == ["a", "b", "c", "d", "a"]
    cached(7), cached(7)  # not a text: never remembered
    assert calls[-2:] == [7, 7]
