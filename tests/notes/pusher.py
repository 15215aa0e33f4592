"""Run by test_notes_kill.py as a separate process: one notes push, then exit.

    python tests/notes/pusher.py DB_URL TENANT BASE_URL BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import sys

from sync.api.client import OmiClient
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import default_mapping_file
from sync.store import make_engine
from sync.store.local import LocalTable


async def main(db_url: str, tenant: str, base_url: str, batch_size: int) -> None:
    spec = load_mapping(default_mapping_file())
    db = make_engine(db_url)
    outbox = NotesOutbox(db, tenant, spec, LocalTable.for_spec(spec))
    outbox.recover()
    async with OmiClient(base_url, "demo-key", max_retries=0) as client:
        print(dict(await outbox.push(client, batch_size=batch_size)), flush=True)
    db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
