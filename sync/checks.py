"""`crm-sync check`: settings, mapping, database and table, and with --online the API key and
the dynamic attribute layout. Each problem raises a ConfigError naming what is wrong."""

from __future__ import annotations

import asyncio

from sync.errors import ConfigError
from sync.mapping import MappingSpec
from sync.mapping_file import load_mapping
from sync.settings import Settings
from sync.status import safe_url
from sync.store import make_engine
from sync.store.local import check_table

# Which layout field_types a mapped column type can hold.
_FITS = {
    "text": {"single_text", "multi_text", "radio", "select", "number", "date", "checkbox"},
    "json": {"checkbox", "select", "single_text", "multi_text", "radio"},
    "integer": {"number"},
    "number": {"number"},
    "date": {"date"},
    "boolean": {"checkbox", "radio"},
}


def run_checks(settings: Settings, *, online: bool = False) -> list[str]:
    done = [f"settings (tenant {settings.tenant_id}, CRM {settings.base_url})"]
    spec = load_mapping(settings.mapping_file)
    done.append(f"mapping {settings.mapping_file}: table {spec.table!r}, "
                f"{len(spec.fields)} mapped fields")
    db = make_engine(settings.database_url)
    try:
        with db.connect():
            pass
        problems = check_table(db, spec)
    except ConfigError:
        raise
    except Exception as exc:  # the driver's message names host and database, not secrets
        raise ConfigError(f"CRM_SYNC_DATABASE_URL: cannot connect to "
                          f"{safe_url(settings.database_url)}: {type(exc).__name__}") from None
    finally:
        db.dispose()
    if problems:
        raise ConfigError("the table does not fit the mapping:\n  " + "\n  ".join(problems))
    done.append(f"database {safe_url(settings.database_url)}")
    if online:
        done += asyncio.run(_online(settings, spec))
    return done


async def _online(settings: Settings, spec: MappingSpec) -> list[str]:
    from sync.api.client import OmiClient

    if not settings.api_key.get_secret_value():
        raise ConfigError("CRM_SYNC_API_KEY is empty (or give CRM_SYNC_API_KEY_FILE)")
    async with OmiClient(settings.base_url, settings.api_key.get_secret_value(),
                         timeout=settings.read_timeout, max_retries=settings.max_retries) as c:
        await c.authenticate()
        layout = {f.field_code: f for f in await c.layout()}
    problems = []
    for f in spec.fields:
        if not f.dynamic:
            continue
        have = layout.get(f.dynamic)
        if have is None:
            problems.append(f"dynamic field_code {f.dynamic!r} (column {f.column!r}) is not in "
                            f"the tenant's layout; it has: {', '.join(sorted(layout)) or 'none'}")
        elif have.field_type != f.field_type:
            problems.append(f"dynamic {f.dynamic!r}: the mapping says field_type "
                            f"{f.field_type!r}, the tenant's layout says {have.field_type!r}")
        elif have.field_type not in _FITS[f.column_type]:
            problems.append(f"dynamic {f.dynamic!r} ({have.field_type}) cannot be kept in a "
                            f"{f.column_type} column ({f.column!r})")
    if problems:
        raise ConfigError(f"{settings.mapping_file}: " + "; ".join(problems))
    return [f"API key accepted by {settings.base_url} (fingerprint "
            f"{settings.api_key_fingerprint})",
            f"dynamic attribute layout: {len(layout)} fields, mapping's dynamic fields present"]
