"""Realistic Vietnamese contacts, deterministic per seed.

Faker("vi_VN") is slow per call and writes names in Western order ("Hạnh Trần"), so it only fills
pools once (addresses, job titles); names are assembled Vietnamese-style (family, middle, given)
and everything else is drawn from one random.Random(seed). 100k contacts take about a second.
Dates sit in a fixed past window, so the same seed gives byte-identical data on every run.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from faker import Faker

from sync.emulator.model import unsigned

TAGS = ("Khách lẻ", "Khách sỉ", "VIP", "Đã gọi", "Tiềm năng")
CUSTOM_LABELS = ("Màu sắc yêu thích", "Điểm", "Kênh")
COLOURS = ("Đỏ", "Xanh", "Vàng", "Tím", "Trắng", "Hồng", "Đen")
CHANNELS = ("Facebook", "Zalo", "Website", "Cửa hàng", "Hotline", "Shopee")
AGENTS = ("lan.nguyen@cskh.example.vn", "tuan.tran@cskh.example.vn", "huong.le@cskh.example.vn",
          "minh.pham@cskh.example.vn", "ngoc.vu@cskh.example.vn")
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi",
          "Đỗ", "Hồ", "Ngô", "Dương", "Lý")
MIDDLE_MALE = ("Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Gia", "Đình")
MIDDLE_FEMALE = ("Thị", "Ngọc", "Thu", "Thanh", "Kim", "Mỹ", "Thị Ánh", "Bảo", "Phương")
GIVEN_MALE = ("Tiến", "Hùng", "Dũng", "Nam", "Hưng", "Phúc", "Trung", "Quang", "Huy", "Minh",
              "Tùng", "Đạt", "Khoa", "Long", "Sơn", "Thắng", "Hiếu", "Cường", "Bảo", "Khánh")
GIVEN_FEMALE = ("Tuyết", "Hương", "Lan", "Mai", "Thảo", "Linh", "Hồng", "Chi", "Vân", "Yến",
                "Ánh", "Nhung", "Trang", "Hà", "Ngân", "Phương", "Quỳnh", "Hạnh", "Thủy", "Dung")
NOTES = ("Gọi lại sau 17h", "Khách quan tâm gói VIP", "Đã gửi báo giá qua Zalo",
         "Không nghe máy 2 lần", "Khách cũ, mua lại", "Hẹn gặp tại cửa hàng Quận 3",
         "Cần tư vấn thêm về bảo hành", "Ưu tiên liên hệ qua email")
DOMAINS = ("gmail.com", "yahoo.com.vn", "outlook.com", "fpt.vn", "vnpt.vn", "hotmail.com")
MOBILE_PREFIXES = ("032", "033", "034", "035", "036", "037", "038", "039", "056", "058", "070",
                   "076", "077", "078", "079", "081", "082", "083", "084", "085", "086", "088",
                   "089", "090", "091", "093", "094", "096", "097", "098")
LANDLINE_PREFIXES = ("024", "028", "0236", "0274")

# Name parts without diacritics or spaces, for email local parts ("Thị Ánh" -> "thianh").
_ASCII: dict[str, str] = {p: unsigned(p).replace(" ", "") for p in (
    *FAMILY, *MIDDLE_MALE, *MIDDLE_FEMALE, *GIVEN_MALE, *GIVEN_FEMALE)}
T = TypeVar("T")

# Seeded contacts were created in this window (epoch ms), oldest first.
_START_MS = 1_672_531_200_000  # 2023-01-01
_END_MS = 1_748_736_000_000  # 2025-06-01


@dataclass(slots=True)
class SeedContact:
    """One generated contact: an agent-style patch plus its history."""

    fields: dict[str, Any]  # same keys as an agent edit (see parse.agent_patch)
    created_ms: int
    updated_ms: int
    by_agent: bool  # created in the CRM's own interface: no ref_id


class _Pools:
    """Values that Faker is slow to make, made once per seed."""

    def __init__(self, seed: int) -> None:
        fake = Faker("vi_VN")
        fake.seed_instance(seed)
        self.addresses = [fake.address().replace("\n", ", ") for _ in range(600)]
        self.jobs = sorted({fake.job() for _ in range(400)})
        first = date(1960, 1, 1)  # birthdays 1960-2004, formatted once
        self.birthdays = [(first + timedelta(days=d)).strftime("%d/%m/%Y")
                          for d in range(365 * 45)]


@functools.lru_cache(maxsize=4)
def _pools(seed: int) -> _Pools:
    """Pools are read-only, so emulators with the same seed (a test suite) share them."""
    return _Pools(seed)


def phone_forms(national: str, rng: random.Random) -> str:
    """One of the forms agents and imports really use for the same line."""
    roll = rng.random()
    if roll < 0.6:
        return national
    if roll < 0.85:
        return "84" + national[1:]
    rest = national[1:]
    return f"+84 {rest[:3]} {rest[3:6]} {rest[6:]}"


def generate(count: int, seed: int, layout: list[dict[str, Any]]) -> Iterator[SeedContact]:
    """`count` contacts for seed `seed`, in creation order."""
    if count <= 0:
        return
    rng = random.Random(f"seed:{seed}")
    pools = _pools(seed)
    used_phones: set[str] = set()
    used_emails: set[str] = set()
    span = max(1, (_END_MS - _START_MS) // max(count, 1))
    ref_number = 0
    for i in range(count):
        created = _START_MS + i * span + int(rng.random() * span)
        updated = (created if rng.random() < 0.6
                   else min(_END_MS, created + 1 + int(rng.random() * 200 * 86_400_000)))
        by_agent = rng.random() < 0.1
        fields = _person(rng, pools, used_phones, used_emails, layout)
        if not by_agent:
            ref_number += 1
            fields["ref_id"] = f"KH-{ref_number:06d}"
            fields["ref_code"] = f"C{ref_number}"
        yield SeedContact(fields, created, updated, by_agent)


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    """rng.choice without its overhead: seeding 100k contacts makes millions of draws."""
    return seq[int(rng.random() * len(seq))]


def _person(rng: random.Random, pools: _Pools, used_phones: set[str], used_emails: set[str],
            layout: list[dict[str, Any]]) -> dict[str, Any]:
    r = rng.random
    roll = r()
    gender = ("male" if roll < 0.48 else "female" if roll < 0.96
              else "other" if roll < 0.98 else None)
    female = gender == "female" or (gender is None and r() < 0.5)
    family = _pick(rng, FAMILY)
    middle = _pick(rng, MIDDLE_FEMALE if female else MIDDLE_MALE)
    given = _pick(rng, GIVEN_FEMALE if female else GIVEN_MALE)
    fields: dict[str, Any] = {"full_name": f"{family} {middle} {given}", "gender": gender}
    phones = [(phone_forms(_unique_mobile(rng, used_phones), rng), "personal")]
    if r() < 0.2:
        landline = _pick(rng, LANDLINE_PREFIXES)
        digits = 11 - len(landline)
        phones.append((f"{landline}{int(r() * 10**digits):0{digits}d}", "office"))
    fields["phones"] = phones
    fields["emails"] = [(_email(rng, family, middle, given, used_emails),
                         "office" if r() < 0.15 else "personal")] if r() < 0.7 else []
    roll = r()
    fields["tags"] = ([] if roll < 0.25 else [_pick(rng, TAGS)] if roll < 0.75
                      else rng.sample(TAGS, k=2))
    if r() < 0.7:
        fields["birthday"] = _pick(rng, pools.birthdays)
    if r() < 0.8:
        fields["address"] = _pick(rng, pools.addresses)
    if r() < 0.6:
        fields["job_title"] = _pick(rng, pools.jobs)
    if r() < 0.3:
        fields["passport"] = f"0{int(r() * 10**11):011d}"
    if r() < 0.15:
        fields["note"] = _pick(rng, NOTES)
    if r() < 0.6:
        fields["owner_email"] = _pick(rng, AGENTS)
    custom: dict[str, str] = {}
    if r() < 0.3:
        custom["Màu sắc yêu thích"] = _pick(rng, COLOURS)
    if r() < 0.4:
        custom["Điểm"] = str(int(r() * 200) * 5)
    if r() < 0.5:
        custom["Kênh"] = _pick(rng, CHANNELS)
    fields["custom"] = custom
    fields["dynamic"] = {f["field_code"]: _dynamic_value(rng, f) for f in layout if r() < 0.4}
    return fields


def _unique_mobile(rng: random.Random, used: set[str]) -> str:
    while True:
        number = f"{_pick(rng, MOBILE_PREFIXES)}{int(rng.random() * 10**7):07d}"
        if number not in used:
            used.add(number)
            return number


def _email(rng: random.Random, family: str, middle: str, given: str, used: set[str]) -> str:
    g, f, m = (_ASCII[p] for p in (given, family, middle))
    style = rng.random()
    local = (f"{g}{f[0]}{m[0]}" if style < 0.4 else f"{f}.{g}" if style < 0.7
             else f"{g}{f}{70 + int(rng.random() * 30)}")
    domain = _pick(rng, DOMAINS)
    address = f"{local}@{domain}"
    n = 1
    while address in used:
        n += 1
        address = f"{local}{n}@{domain}"
    used.add(address)
    case = rng.random()
    if case < 0.1:  # people type their addresses in every case; the CRM keeps them as typed
        return address.upper()
    if case < 0.2:
        return local.capitalize() + "@" + domain.capitalize()
    return address


def _dynamic_value(rng: random.Random, field: dict[str, Any]) -> list[str]:
    ftype, options = field["field_type"], field["options"]
    if ftype in ("radio", "select"):
        return [_pick(rng, options)]
    if ftype == "checkbox":
        return rng.sample(options, k=min(len(options), 1 if rng.random() < 0.7 else 2))
    if ftype == "date":
        return [(date(2024, 1, 1) + timedelta(days=int(rng.random() * 540))).strftime("%d/%m/%Y")]
    if ftype == "multi_text":
        return [_pick(rng, NOTES)]
    return [str(int(rng.random() * 500) * 10)]  # single_text / number: points-like values
