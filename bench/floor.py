"""The floor: the same listing pages fetched and JSON-decoded with plain httpx, nothing stored.

This is the least any client must do to read the CRM's contacts over this API: one auth, then
every `/api/contacts/list` page at the same page size and with the same number of requests in
flight as crm-sync (page 1 first, as it must be to learn the page count, then a window of
`concurrency` pages). Each body is decoded with the standard library's `json.loads`, as
httpx's own `Response.json()` does; nothing else is done with it. (crm-sync's client splits
a page with msgspec instead, and decodes an item only when it needs to.) A sync's wall time
divided by this one is the "ratio to the floor".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx


async def fetch_all(base_url: str, *, api_key: str = "demo-key", page_size: int = 100,
                    concurrency: int = 4) -> dict[str, Any]:
    started = time.perf_counter()
    contacts = requests = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        auth = json.loads((await http.get("/api/auth", params={"apiKey": api_key})).content)
        requests += 1
        headers = {"Authorization": "Bearer " + auth["payload"]["access_token"]}

        async def page(n: int) -> dict[str, Any]:
            r = await http.post("/api/contacts/list", params={"page": n, "size": page_size},
                                json={}, headers=headers)
            r.raise_for_status()
            payload: dict[str, Any] = json.loads(r.content)["payload"]
            return payload

        first = await page(1)
        requests += 1
        contacts += len(first["items"])
        total_pages = int(first["total_pages"])
        size = int(first["page_size"]) or page_size  # the server's cap, as crm-sync follows it
        if size != page_size:
            raise RuntimeError(f"the server capped the page size at {size}, asked {page_size}")
        sem = asyncio.Semaphore(max(concurrency, 1))

        async def one(n: int) -> int:
            async with sem:
                return len((await page(n))["items"])

        counts = await asyncio.gather(*(one(n) for n in range(2, total_pages + 1)))
        contacts += sum(counts)
        requests += len(counts)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "contacts": contacts, "requests": requests,
            "pages": total_pages, "contacts_per_s": contacts / wall if wall else None}


def run(base_url: str, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(fetch_all(base_url, **kwargs))
