"""The OMICall API: an async client (`OmiClient`), the wire adapter and the paginator.

    async with OmiClient(base_url, api_key) as client:
        async for page in client.iter_pages(100):
            ...
"""

from sync.api.adapter import LayoutField, NoteIn, Page
from sync.api.client import OmiClient, RequestEvent
from sync.api.paging import Paginator
from sync.errors import NotSent

__all__ = ["LayoutField", "NotSent", "NoteIn", "OmiClient", "Page", "Paginator", "RequestEvent"]
