"""Which list page to fetch next: a tiny state object in the style of meltano-sdk's paginators.

The server caps the page size [assumed], so paging follows what the server answers (its
page_number, page_size and has_next), never the size that was asked for. A server may also cap
silently, echoing the size asked for in page_size: a first page that holds fewer (but some)
items than its page_size while more follow (has_next, or a total_items beyond it: such a
server may count has_next and total_pages at the size asked for too) is only possible under
such a cap, so the number of items it holds is taken as the page size. A server that serves
the same page twice would make a naive loop run forever; two checks stop that:

- the same page_number answered twice, or
- three pages in a row with the same set of public_ids (this also catches an endless run of
  empty pages that all claim has_next). Two are not enough: a server that orders the list
  afresh on every call (an unordered query) serves a small tenant's few contacts on two
  consecutive pages now and then (8 contacts in pages of 2: 23 listings in 300).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync.api.adapter import Page
from sync.errors import ProtocolError


@dataclass(slots=True)
class Paginator:
    """Feed it every page in order with advance(); read next_page until finished."""

    next_page: int | None = 1
    page_size: int | None = None  # the server's, learned from the first page
    total_pages: int = 0  # as announced by the latest page; has_next may run past it
    pages_seen: int = 0
    _numbers: set[int] = field(default_factory=set)
    _last_ids: frozenset[str] | None = None
    _repeats: int = 0  # pages in a row with the previous page's contacts

    @property
    def finished(self) -> bool:
        return self.next_page is None

    def advance(self, page: Page) -> None:
        if self.finished:
            raise ProtocolError("paginator advanced past the last page", endpoint="list")
        if page.page_number in self._numbers:
            raise ProtocolError(f"list served page {page.page_number} twice: paging loop",
                                endpoint="list")
        ids = frozenset(x.public_id for x in page.listed)
        self._repeats = self._repeats + 1 if ids == self._last_ids else 0
        if self._repeats >= 2:
            raise ProtocolError(f"list page {page.page_number} repeats the two pages before "
                                "it: paging loop", endpoint="list")
        self._numbers.add(page.page_number)
        self._last_ids = ids
        self.pages_seen += 1
        self.total_pages = max(self.total_pages, page.total_pages)
        more = page.has_next
        if self.page_size is None and page.page_size > 0:
            served = len(page.listed)
            # a short page before the last one: a silent cap (page_size echoes the request)
            capped = 0 < served < page.page_size and (more or page.total_items > served)
            self.page_size = served if capped else page.page_size
            if capped and not more:  # has_next and total_pages counted at the size asked for
                self.total_pages = max(self.total_pages, -(-page.total_items // served))
                more = True
        self.next_page = page.page_number + 1 if more else None
