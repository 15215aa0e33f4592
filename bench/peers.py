"""The peers crm-sync is compared with, on the same emulator in the same run.

naive: what teams write by hand. One page at a time with httpx, each contact flattened into a
    row (the columns of crm-sync's default mapping) and upserted with one `INSERT OR REPLACE`
    per row, one commit per page (the kinder variant: a commit per row is far slower).
dlt:   dlt's `rest_api` source loading `/api/contacts/list` into SQLite through dlt's
    `sqlalchemy` destination: POST with `page`/`size` query parameters, a bearer token fetched
    from `/api/auth`, `payload.items` as the data and `payload.total_pages` as the page count,
    `merge` on `public_id` (a mirror, as a sync keeps), one load worker (SQLite refuses
    dlt's parallel load jobs at 100k: "database is locked"). dlt's defaults otherwise, which
    normalise the nested `attribute_structure` into child tables. Needs the `bench` extra.
Both are one-way pulls: they do strictly less than a sync cycle (no sync state, no three-way
merge, no push).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

NAIVE_COLUMNS = ("public_id", "ref_id", "ref_code", "full_name", "phone", "email", "gender",
                 "birthday", "address", "job_title", "passport", "note", "tags", "owner_email",
                 "custom_fields", "updated_ms")


def _first(attrs: dict[str, list[dict[str, Any]]], code: str) -> Any:
    values = attrs.get(code) or []
    return values[0].get("display_value") if values else None


def _naive_row(item: dict[str, Any]) -> tuple[Any, ...]:
    attrs = {a.get("field_code"): a.get("value") or [] for a in item.get("attribute_structure")
             or []}
    custom = {v.get("value_type"): v.get("display_value")
              for v in attrs.get("more_infomation", [])}
    return (item["public_id"], item.get("ref_id"), item.get("ref_code"),
            _first(attrs, "full_name"), _first(attrs, "phone_number"), _first(attrs, "mail"),
            _first(attrs, "gender"), _first(attrs, "birthday"), _first(attrs, "address"),
            _first(attrs, "job_title"), _first(attrs, "passport"), _first(attrs, "note"),
            json.dumps(item.get("tags") or [], ensure_ascii=False),
            _first(attrs, "contact_owner"),
            json.dumps(custom, ensure_ascii=False) if custom else None,
            item.get("last_updated_date"))


def naive(base_url: str, db_path: str, *, api_key: str = "demo-key", page_size: int = 100,
          commit_per: str = "page") -> dict[str, Any]:
    started = time.perf_counter()
    db = sqlite3.connect(db_path)
    db.execute(f"CREATE TABLE IF NOT EXISTS contacts ({NAIVE_COLUMNS[0]} TEXT PRIMARY KEY, "
               + ", ".join(f"{c} TEXT" for c in NAIVE_COLUMNS[1:]) + ")")
    sql = (f"INSERT OR REPLACE INTO contacts ({', '.join(NAIVE_COLUMNS)}) VALUES "
           f"({', '.join('?' * len(NAIVE_COLUMNS))})")
    requests = rows = 0
    with httpx.Client(base_url=base_url, timeout=60.0) as http:
        token = http.get("/api/auth", params={"apiKey": api_key}).json()["payload"][
            "access_token"]
        requests += 1
        headers = {"Authorization": f"Bearer {token}"}
        page = 1
        while True:
            r = http.post("/api/contacts/list", params={"page": page, "size": page_size},
                          json={}, headers=headers)
            requests += 1
            payload = r.json()["payload"]
            for item in payload["items"]:
                db.execute(sql, _naive_row(item))
                rows += 1
                if commit_per == "row":
                    db.commit()
            db.commit()
            if not payload.get("has_next"):
                break
            page += 1
    stored = db.execute("SELECT count(*) FROM contacts").fetchone()[0]
    db.close()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "contacts": stored, "rows_written": rows, "requests": requests,
            "contacts_per_s": stored / wall if wall else None, "commit_per": commit_per}


def dlt_rest_api(base_url: str, db_path: str, *, api_key: str = "demo-key",
                 page_size: int = 100, workdir: str | None = None) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    # One load job at a time: dlt's default parallel load jobs fail on SQLite with "database
    # is locked" at 100k contacts (several files are loaded into one SQLite database at once).
    os.environ.setdefault("LOAD__WORKERS", "1")
    started = time.perf_counter()
    import dlt
    from dlt.sources.rest_api import rest_api_source

    imported = time.perf_counter()
    # The user's first step: a token from /api/auth (the rest_api source has no auth flow
    # that takes the key as a query parameter and reads the token out of an envelope).
    token = httpx.get(base_url + "/api/auth", params={"apiKey": api_key},
                      timeout=60.0).json()["payload"]["access_token"]
    source = rest_api_source({
        "client": {
            "base_url": base_url + "/",
            "auth": {"type": "bearer", "token": token},
            "paginator": {"type": "page_number", "base_page": 1, "page_param": "page",
                          "total_path": "payload.total_pages"},
        },
        "resources": [{
            "name": "contacts",
            "primary_key": "public_id",
            "write_disposition": "merge",
            "endpoint": {"path": "api/contacts/list", "method": "POST", "json": {},
                         "params": {"size": page_size}, "data_selector": "payload.items"},
        }],
    })
    pipelines_dir = str(Path(workdir or Path(db_path).parent) / "dlt_pipelines")
    pipeline = dlt.pipeline(pipeline_name="crm_bench", pipelines_dir=pipelines_dir,
                            destination=dlt.destinations.sqlalchemy(
                                credentials=f"sqlite:///{db_path}"),
                            dataset_name="main")
    info = pipeline.run(source)
    wall = time.perf_counter() - started
    db = sqlite3.connect(db_path)
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    stored = db.execute("SELECT count(*) FROM contacts").fetchone()[0] if "contacts" in tables \
        else None
    rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
            if t.startswith("contacts")}
    db.close()
    return {"wall_s": wall, "import_s": imported - started, "contacts": stored,
            "tables": rows, "contacts_per_s": (stored or 0) / wall if wall else None,
            "loads": len(info.loads_ids), "dlt_version": dlt.__version__}
