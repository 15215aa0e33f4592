"""The OMICall API: an async client (`OmiClient`), the wire adapter and the paginator.

    async with OmiClient(base_url, api_key) as client:
        async for page in client.iter_pages(100):
            ...

The client (httpx, tenacity, and, through httpx, its command line's click and rich) is
imported when first asked for: a first import's worker process reads listed items with the
adapter alone, and starts sooner and smaller without it.
"""

from typing import TYPE_CHECKING, Any

from sync.api.adapter import LayoutField, NoteIn, Page
from sync.api.paging import Paginator
from sync.errors import NotSent

if TYPE_CHECKING:
    from sync.api.client import OmiClient, RequestEvent

__all__ = ["LayoutField", "NotSent", "NoteIn", "OmiClient", "Page", "Paginator", "RequestEvent"]


def __getattr__(name: str) -> Any:
    if name in ("OmiClient", "RequestEvent"):
        from sync.api import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
