"""The paginator: server-driven, with loop detection."""

from __future__ import annotations

import pytest

from sync.api import Page, Paginator
from sync.errors import ProtocolError
from sync.record import Contact


def page(number: int, ids: list[str], *, has_next: bool, size: int = 37,
         total_pages: int = 3) -> Page:
    return Page(tuple(Contact(public_id=i) for i in ids), number, size, 0, total_pages, has_next)


def test_follows_has_next_and_server_page_size() -> None:
    p = Paginator()
    assert p.next_page == 1 and not p.finished
    p.advance(page(1, ["a"], has_next=True))
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


def test_same_contacts_as_previous_page_is_a_loop() -> None:
    p = Paginator()
    p.advance(page(1, ["a", "b"], has_next=True))
    with pytest.raises(ProtocolError, match="repeats"):
        p.advance(page(2, ["b", "a"], has_next=True))


def test_endless_empty_pages_are_a_loop() -> None:
    p = Paginator()
    p.advance(page(1, [], has_next=True))
    with pytest.raises(ProtocolError):
        p.advance(page(2, [], has_next=True))


def test_single_empty_page_finishes() -> None:
    p = Paginator()
    p.advance(page(1, [], has_next=False, total_pages=0))
    assert p.finished
