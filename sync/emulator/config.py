"""The emulator's knobs and the tenant's dynamic attribute layout.

`EmulatorConfig` is a plain dataclass so that the CLI, tests and benchmarks can build one in a line;
`checked_knobs` validates a runtime change (`Emulator.configure`, `POST /_emulator/config`) before
anything is applied, so a bad knob never leaves the emulator half-reconfigured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ORDERS: tuple[str, ...] = ("created", "updated_desc", "public_id", "random")
FIELD_TYPES: tuple[str, ...] = (
    "single_text", "multi_text", "number", "date", "radio", "select", "checkbox",
)
# Field types whose values must be one of the layout's options.
OPTION_TYPES: frozenset[str] = frozenset({"radio", "select", "checkbox"})

# Codes look like the real ones (random 10-letter strings) but are fixed so that tests, mapping
# examples and the demo can name them.
DEFAULT_LAYOUT: tuple[dict[str, Any], ...] = (
    {"field_code": "vWabCEBkqM", "field_name": "Điểm thưởng", "field_type": "single_text",
     "is_required": False, "options": []},
    {"field_code": "hTqLmZpXcR", "field_name": "Hạng thành viên", "field_type": "select",
     "is_required": False, "options": ["Đồng", "Bạc", "Vàng", "Kim cương"]},
    {"field_code": "nBdYkWsEfJ", "field_name": "Ngày mua gần nhất", "field_type": "date",
     "is_required": False, "options": []},
)

FAULT_RATES: tuple[str, ...] = ("error_500_rate", "rate_429_rate", "timeout_rate", "malformed_rate")


@dataclass
class EmulatorConfig:
    """Every knob of the emulator; see the task brief in architecture.md ("The emulator")."""

    api_key: str = "demo-key"
    contacts: int = 0  # seeded contacts (start-up only)
    seed: int = 1  # seeds the data and the fault / drop / random-order RNGs
    page_size_cap: int = 100  # ?size= above this is capped; the payload's page_size tells
    default_page_size: int = 50
    order: str = "created"  # created | updated_desc | public_id | random (fresh on every call)
    add_more_delay: float = 0.2  # seconds before an add-more item becomes visible
    add_more_drop_rate: float = 0.0  # fraction of valid add-more items silently dropped
    duplicate_on_resend: bool = True  # a second create with a known refId makes a duplicate
    latency: float = 0.0  # seconds added to every /api call
    error_500_rate: float = 0.0  # HTTP 500, HTML body, no state change
    rate_429_rate: float = 0.0  # HTTP 429 + Retry-After, no state change
    retry_after: float = 1.0  # seconds; sent as given ("1", "0.05"): clients parse a float
    timeout_rate: float = 0.0  # hang timeout_hang seconds BEFORE executing, then 504
    timeout_hang: float = 30.0
    malformed_rate: float = 0.0  # HTTP 200 with a truncated JSON body, no state change
    token_ttl: float = 86400.0  # seconds an access token lives (checked against the current value)
    # the HTTP status of a refused token's answer (-9999 token_expired / unauthorized in the
    # body either way): 401 as the contract assumes, or 200 as its examples answer failures
    token_refused_status: int = 401
    # a server whose update takes less than crm-sync sends (the documented update body names
    # no job_title nor refCode): these body keys are ignored, and with update_ignores_empty a
    # "" leaves its field as it is; the summary still answers (showing the unchanged values)
    update_ignores: tuple[str, ...] = ()
    update_ignores_empty: bool = False
    layout: list[dict[str, Any]] | None = None  # None = DEFAULT_LAYOUT
    # SQLite file keeping the contacts (start-up only): loaded if it holds any, else seeded into;
    # every change written through. None = memory only. Tokens, add-more queue, notes: memory.
    db_path: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def effective_layout(self) -> list[dict[str, Any]]:
        """The layout as served: the configured one normalised, or the default."""
        source = self.layout if self.layout is not None else DEFAULT_LAYOUT
        return [normalise_field(f) for f in source]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of the knobs (admin `GET/POST /_emulator/config`)."""
        return dataclasses.asdict(self)


def normalise_field(field: Mapping[str, Any]) -> dict[str, Any]:
    """One layout entry with its defaults filled in; ValueError names what is wrong."""
    code, name, ftype = field.get("field_code"), field.get("field_name"), field.get("field_type")
    if not isinstance(code, str) or not code:
        raise ValueError(f"layout entry without a field_code: {dict(field)!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"layout entry {code!r} without a field_name")
    if ftype not in FIELD_TYPES:
        raise ValueError(f"layout entry {code!r}: field_type must be one of {FIELD_TYPES}")
    options = field.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError(f"layout entry {code!r}: options must be a list of strings")
    if ftype in OPTION_TYPES and not options:
        raise ValueError(f"layout entry {code!r}: a {ftype} field needs options")
    return {"field_code": code, "field_name": name, "field_type": ftype,
            "is_required": bool(field.get("is_required", False)), "options": list(options)}


def checked_knobs(config: EmulatorConfig, knobs: Mapping[str, Any]) -> EmulatorConfig:
    """A copy of `config` with `knobs` applied, validated as a whole (raises ValueError)."""
    names = {f.name for f in dataclasses.fields(EmulatorConfig)}
    unknown = sorted(set(knobs) - names)
    if unknown:
        raise ValueError(f"unknown emulator knob(s): {', '.join(unknown)}")
    if "contacts" in knobs and knobs["contacts"] != config.contacts:
        raise ValueError("'contacts' only applies at start-up; add contacts with agent_create")
    if "db_path" in knobs and knobs["db_path"] != config.db_path:
        raise ValueError("'db_path' only applies at start-up")
    updated = dataclasses.replace(config, **dict(knobs))  # runs __post_init__ -> _validate
    return updated


def _validate(c: EmulatorConfig) -> None:
    def number(name: str, *, minimum: float = 0.0, maximum: float = math.inf) -> None:
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not minimum <= value <= maximum or math.isnan(value):
            raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value!r}")

    if not isinstance(c.api_key, str) or not c.api_key:
        raise ValueError("api_key must be a non-empty string")
    for name in ("contacts", "seed", "page_size_cap", "default_page_size"):
        if isinstance(getattr(c, name), bool) or not isinstance(getattr(c, name), int):
            raise ValueError(f"{name} must be an integer, got {getattr(c, name)!r}")
    number("contacts")
    if c.db_path is not None and (not isinstance(c.db_path, str) or not c.db_path):
        raise ValueError(f"db_path must be a non-empty string or null, got {c.db_path!r}")
    number("page_size_cap", minimum=1)
    number("default_page_size", minimum=1)
    if c.order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {c.order!r}")
    for name in ("add_more_delay", "latency", "retry_after", "timeout_hang"):
        number(name)
    number("token_ttl")
    if c.token_refused_status not in (200, 401) or isinstance(c.token_refused_status, bool):
        raise ValueError(f"token_refused_status must be 200 or 401, got "
                         f"{c.token_refused_status!r}")
    for name in ("add_more_drop_rate", *FAULT_RATES):
        number(name, maximum=1.0)
    if sum(getattr(c, name) for name in FAULT_RATES) > 1.0 + 1e-9:
        raise ValueError(f"the fault rates ({', '.join(FAULT_RATES)}) must add up to at most 1")
    if not isinstance(c.duplicate_on_resend, bool):
        raise ValueError("duplicate_on_resend must be a boolean")
    if not isinstance(c.update_ignores_empty, bool):
        raise ValueError("update_ignores_empty must be a boolean")
    if (not isinstance(c.update_ignores, tuple | list)
            or not all(isinstance(k, str) for k in c.update_ignores)):
        raise ValueError(f"update_ignores must be a list of update body keys, got "
                         f"{c.update_ignores!r}")
    if c.layout is not None:
        if not isinstance(c.layout, list):
            raise ValueError("layout must be a list of field definitions or null")
        codes = [normalise_field(f)["field_code"] for f in c.layout]
        if len(set(codes)) != len(codes):
            raise ValueError("layout field_codes must be unique")
