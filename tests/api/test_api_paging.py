"""The paginator: server-driven, with loop detection."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from sync.api import Page, Paginator
from sync.errors import ProtocolError
from sync.record import Contact

from .omifake import FakeOmi, envelope, make_client


def page(number: int, ids: list[str], *, has_next: bool, size: int = 37,
         total_pages: int = 3) -> Page:
    return Page(tuple(Contact(public_id=i) for i in ids), number, size, 0, total_pages, has_next)


def test_follows_has_next_and_server_page_size() -> None:
    p = Paginator()
    assert p.next_page == 1 and not p.finished
    p.advance(page(1, [f"a{i}" for i in range(37)], has_next=True))  # a full first page
    assert (p.next_page, p.page_size, p.total_pages) == (2, 37, 3)
    p.advance(page(2, ["b"], has_next=True, total_pages=2))  # past the announced total
    p.advance(page(3, ["c"], has_next=False))
    assert p.finished and p.next_page is None and p.pages_seen == 3
    with pytest.raises(ProtocolError):
        p.advance(page(4, ["d"], has_next=False))


def test_same_page_number_twice_is_a_loop() -> None:
    p = Paginator()
    p.advance(page(1, ["a"], has_next=True))
    with pytest.raises(ProtocolError, match="twice"):
        p.advance(page(1, ["b"], has_next=True))


def test_same_contacts_three_pages_in_a_row_is_a_loop() -> None:
    p = Paginator()
    p.advance(page(1, ["a", "b"], has_next=True))
    p.advance(page(2, ["b", "a"], has_next=True))  # can happen: a list ordered afresh per call
    with pytest.raises(ProtocolError, match="repeats"):
        p.advance(page(3, ["a", "b"], has_next=True))


def test_a_repeat_broken_by_another_page_starts_over() -> None:
    p = Paginator()
    for number, ids in enumerate([["a", "b"], ["a", "b"], ["c", "d"], ["c", "d"], ["a", "b"]],
                                 start=1):
        p.advance(page(number, ids, has_next=True))
    assert p.pages_seen == 5


def test_endless_empty_pages_are_a_loop() -> None:
    p = Paginator()
    p.advance(page(1, [], has_next=True))
    p.advance(page(2, [], has_next=True))
    with pytest.raises(ProtocolError):
        p.advance(page(3, [], has_next=True))


def test_single_empty_page_finishes() -> None:
    p = Paginator()
    p.advance(page(1, [], has_next=False, total_pages=0))
    assert p.finished


def test_short_first_page_with_has_next_is_a_silent_cap() -> None:
    p = Paginator()
    p.advance(page(1, [f"c{i}" for i in range(100)], has_next=True, size=1000))
    assert p.page_size == 100  # served 100 of the 1000 it echoes: the real page size
    # a short page that is the last one, or an empty one, says nothing about a cap
    last = Paginator()
    last.advance(page(1, ["a", "b"], has_next=False, size=1000, total_pages=1))
    assert last.page_size == 1000
    empty = Paginator()
    empty.advance(page(1, [], has_next=True, size=50))
    assert empty.page_size == 50


def test_short_first_page_short_of_its_total_is_a_silent_cap() -> None:
    # has_next and total_pages counted at the size asked for: only total_items tells
    p = Paginator()
    first = page(1, [f"c{i}" for i in range(100)], has_next=False, size=1000, total_pages=1)
    p.advance(replace(first, total_items=300))
    assert (p.page_size, p.next_page, p.total_pages) == (100, 2, 3)
    whole = Paginator()  # every contact counted is on the page: the last page
    whole.advance(replace(first, total_items=100))
    assert whole.finished and whole.page_size == 1000


class SilentCapOmi(FakeOmi):
    """Caps `size` silently: page_size echoes the size asked for, offsets use it too, but at
    most page_cap items are served; has_next says whether any contact lies past those served
    (`by_request`: whether any page lies past this one at the size asked for, as total_pages
    does)."""

    def __init__(self, *, by_request: bool = False, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.by_request = by_request

    def handle(self, name: str, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if name != "list" or auth not in self.valid:
            return super().handle(name, request)
        number = int(request.url.params.get("page", "1"))
        size = int(request.url.params.get("size", "50"))
        self.sizes.append(size)
        start = (number - 1) * size
        items = self.contacts[start:start + min(size, self.page_cap)]
        return envelope({"items": items, "page_number": number, "page_size": size,
                         "total_items": len(self.contacts),
                         "total_pages": -(-len(self.contacts) // size),
                         "has_next": (number < -(-len(self.contacts) // size)
                                      if self.by_request
                                      else start + len(items) < len(self.contacts))})


@pytest.mark.parametrize("by_request", [False, True])
async def test_iter_pages_under_a_silent_size_cap(by_request: bool) -> None:
    # by_request: page 1 says has_next false and total_pages 1, counted at the 1000 asked for,
    # while it holds 100 of the 230 it counts (before: the listing ended at page 1)
    fake = SilentCapOmi(contacts=230, page_cap=100, by_request=by_request)
    async with make_client(fake) as c:
        pages = [p async for p in c.iter_pages(1000, concurrency=4)]
    ids = [x.public_id for p in pages for x in p.listed]
    assert ids == [f"pid{i:05d}" for i in range(1, 231)]  # every contact, exactly once
    assert [len(p.listed) for p in pages] == [100, 100, 30]
    assert fake.sizes == [1000, 100, 100]


class TerseOmi(FakeOmi):
    """A server whose list payload leaves out some of the paging keys (the contract lists
    them; a server may not send them all), optionally under a silent cap."""

    def __init__(self, omit: set[str], *, silent: bool = False, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.omit, self.silent = omit, silent

    def handle(self, name: str, request: httpx.Request) -> httpx.Response:
        response = super().handle(name, request)
        if name != "list" or response.status_code != 200:
            return response
        body = response.json()
        payload = body["payload"]
        if self.silent:
            payload["page_size"] = int(request.url.params["size"])
        for key in self.omit:
            payload.pop(key, None)
        return envelope(payload)


@pytest.mark.parametrize("omit", [{"has_next", "total_pages"},
                                  {"has_next", "total_pages", "total_items"},
                                  {"has_next", "total_pages", "total_items", "page_size"}])
@pytest.mark.parametrize("silent", [False, True])
async def test_iter_pages_without_has_next_nor_total_pages(omit: set[str], silent: bool) -> None:
    """Neither has_next nor total_pages: the listing goes on by total_items, else until an
    empty page (before: page 1 only, 37 of 300 contacts, and the cycle said ok)."""
    fake = TerseOmi(omit, silent=silent, contacts=300, page_cap=37)
    async with make_client(fake) as c:
        pages = [p async for p in c.iter_pages(100, concurrency=4)]
    ids = [x.public_id for p in pages for x in p.listed]
    assert ids == [f"pid{i:05d}" for i in range(1, 301)]
    assert len(pages) <= 10  # 9 pages of up to 37, and at most one empty one
