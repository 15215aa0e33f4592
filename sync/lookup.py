"""One contact at a time, as the CRM holds it now: for rows the listing did not settle.

A pending create is looked up by its refId before any re-send; a row edited here whose contact
the listing did not show, a contact a complete listing no longer shows, and a key listed only
with contacts other than the one agreed are looked up before anything is decided for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sync.apply import gather_all
from sync.errors import ProtocolError, RemoteError, RetriableError, row_failure
from sync.record import Contact
from sync.store.state import SyncState

if TYPE_CHECKING:
    from sync.engine import SyncEngine

__all__ = ["look_up"]


async def look_up(e: SyncEngine, states: Sequence[SyncState]) -> list[Contact | str | None]:
    """Each state's contact as the CRM holds it now, `concurrency` at a time: None when the
    CRM has none, a str (the row's error) when the lookup failed for this contact only
    (refused, out of retries, malformed).

    By refId, else by public_id. A refId that answers another contact than the one agreed (a
    second contact with that refId, which an agent made) is checked by the agreed one's id:
    the agreed contact while it exists, the other once it is gone."""
    sem = asyncio.Semaphore(max(e.concurrency, 1))

    async def one(state: SyncState) -> Contact | str | None:
        async with sem:
            try:
                if not state.ref_id:
                    return await e.client.details(str(state.public_id))
                found = await e.client.get(ref_id=state.ref_id)
                if found is None or state.public_id in (None, found.public_id):
                    return found
                ours = await e.client.details(state.public_id)
                if ours is not None and not ours.is_deleted and ours.ref_id == state.ref_id:
                    return ours
                return found
            except (RemoteError, RetriableError, ProtocolError) as exc:
                return row_failure("lookup", exc)

    return await gather_all(one(state) for state in states)
