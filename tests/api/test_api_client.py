"""OmiClient against a scripted httpx.MockTransport: auth, retries, write safety, paging."""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx
import pytest

from sync.api import NoteIn, NotSent, RequestEvent
from sync.errors import AuthError, ProtocolError, RateLimited, RemoteError, RetriableError
from sync.record import Contact, Item

from .omifake import FakeOmi, envelope, failure, make_client, raise_, wire_contact

HTML_500 = httpx.Response(500, text="<html><body>500 Internal Server Error</body></html>",
                          headers={"Content-Type": "text/html"})
TRUNCATED = httpx.Response(200, content=b'{"status_code":9999,"payload":{"items":[{"pub')
NEW = Contact(ref_id="KH-9", full_name="Lê Văn A", phones=(Item("0393123456", "home"),))


async def test_lazy_auth_and_bearer_token() -> None:
    fake = FakeOmi(contacts=3)
    async with make_client(fake) as c:
        assert c.calls["auth"] == 0  # lazy
        page = await c.list_page(1, 50)
        await c.list_page(1, 50)
    assert [p.public_id for p in page.items] == ["pid00001", "pid00002", "pid00003"]
    assert c.calls == {"auth": 1, "list": 2}
    assert c.access_type == "normal"


async def test_authenticate_returns_access_type() -> None:
    async with make_client(FakeOmi()) as c:
        assert await c.authenticate() == "normal"
        assert c.calls["auth"] == 1


async def test_token_expiring_mid_run_causes_one_reauth() -> None:
    fake = FakeOmi(contacts=3)
    async with make_client(fake) as c:
        await c.list_page(1, 10)
        fake.revoke_tokens()  # the token expires early
        page = await c.list_page(1, 10)
    assert len(page.items) == 3
    assert c.calls == {"auth": 2, "list": 3}


async def test_a_server_refusing_every_token_it_issues_is_auth_error() -> None:
    fake = FakeOmi()
    fake.on("layout", *[httpx.Response(401)] * 5)
    async with make_client(fake) as c:
        with pytest.raises(AuthError, match="right after re-authenticating"):
            await c.layout()
    assert c.calls == {"auth": 5, "layout": 5}  # four renewals, then it gives up


async def test_a_renewed_token_refused_again_is_renewed_again() -> None:
    fake = FakeOmi()
    fake.on("layout", *[httpx.Response(401)] * 4)
    async with make_client(fake) as c:
        assert (await c.layout())[0].field_code == "vWabCEBkqM"
    assert c.calls == {"auth": 5, "layout": 5}


@pytest.mark.parametrize("uses", [1, 2])
async def test_tokens_good_for_a_few_calls_serve_every_call_in_flight(uses: int) -> None:
    # the server refuses a token after `uses` calls, while the other calls still hold it
    fake = FakeOmi(contacts=5, delay=0.01, token_uses=uses)
    async with make_client(fake) as c:
        await c.list_page(1, 5)
        fake.revoke_tokens()  # all four calls are refused at once, then share each renewal
        pages = await asyncio.gather(*(c.list_page(1, 5) for _ in range(4)))
    assert all(len(p.items) == 5 for p in pages)
    assert fake.hits["auth"] == 1 + -(-4 // uses)  # one renewal per `uses` calls served


async def test_minus_9999_api_key_code_is_treated_like_401() -> None:
    fake = FakeOmi()
    fake.on("layout", failure("api_key_invalid"))
    async with make_client(fake) as c:
        assert (await c.layout())[0].field_code == "vWabCEBkqM"
    assert c.calls == {"auth": 2, "layout": 2}


@pytest.mark.parametrize("code", ["token_expired", "Invalid token", "Unauthorized",
                                  "access_token_invalid"])
async def test_a_minus_9999_naming_the_token_renews_it(code: str) -> None:
    """A server that reports an expired token in the body (HTTP 200, -9999) instead of a 401:
    the token is renewed and the call sent again, as on a 401."""
    fake = FakeOmi(contacts=3)
    fake.on("list", failure(code))
    async with make_client(fake) as c:
        page = await c.list_page(1, 10)
    assert len(page.items) == 3
    assert c.calls == {"auth": 2, "list": 2}


async def test_a_minus_9999_naming_the_token_that_stays_is_the_answer_not_a_refused_key() -> None:
    """The same words after every renewal are the server's answer to this call (say, about
    this contact): a RemoteError with its code, which a push records as the row's error, not
    an AuthError, which would stop every cycle."""
    fake = FakeOmi()
    fake.on("update", *[failure("contact_locked_by_token_owner")] * 5)
    async with make_client(fake) as c:
        with pytest.raises(RemoteError) as exc:
            await c.update(NEW)
    assert exc.value.code == "contact_locked_by_token_owner"
    assert c.calls == {"auth": 5, "update": 5}  # four renewals, as on a 401


@pytest.mark.parametrize("code", ["permission_denied", "forbidden", "contact_not_found"])
async def test_other_minus_9999_codes_are_answers_at_once(code: str) -> None:
    fake = FakeOmi()
    fake.on("update", failure(code))
    async with make_client(fake) as c:
        with pytest.raises(RemoteError) as exc:
            await c.update(NEW)
    assert exc.value.code == code and c.calls == {"auth": 1, "update": 1}


async def test_concurrent_requests_share_one_auth() -> None:
    fake = FakeOmi(contacts=5, delay=0.01)
    async with make_client(fake) as c:
        await asyncio.gather(*(c.list_page(1, 5) for _ in range(8)))
        assert c.calls["auth"] == 1
        fake.revoke_tokens()
        await asyncio.gather(*(c.list_page(1, 5) for _ in range(8)))
    assert c.calls["auth"] == 2  # eight 401s, one re-auth


async def test_wrong_key_is_auth_error_not_retried() -> None:
    async with make_client(FakeOmi(), api_key="wrong-key-XYZ") as c:
        with pytest.raises(AuthError) as exc:
            await c.list_page(1, 10)
    assert "wrong-key-XYZ" not in str(exc.value) and "api_key_invalid" in str(exc.value)
    assert c.calls == {"auth": 1}


async def test_429_honours_retry_after_capped_by_backoff_max() -> None:
    fake = FakeOmi(contacts=1)
    fake.on("list", envelope(status=429, headers={"Retry-After": "0.05"}),
            envelope(status=429, headers={"Retry-After": "3600"}))
    async with make_client(fake, backoff_max=0.1) as c:
        started = time.perf_counter()
        await c.list_page(1, 10)
        elapsed = time.perf_counter() - started
    assert 0.15 <= elapsed < 1.0  # 0.05 honoured, 3600 capped at 0.1
    assert c.calls["list"] == 3


@pytest.mark.parametrize("fault", [HTML_500, httpx.Response(503), TRUNCATED,
                                   raise_(httpx.ReadTimeout), raise_(httpx.ConnectError),
                                   raise_(httpx.RemoteProtocolError)])
async def test_reads_retry_transient_faults(fault: httpx.Response) -> None:
    fake = FakeOmi(contacts=2)
    fake.on("list", fault, fault)
    async with make_client(fake) as c:
        page = await c.list_page(1, 10)
    assert len(page.items) == 2 and c.calls["list"] == 3


async def test_retries_are_bounded() -> None:
    fake = FakeOmi()
    fake.on("details", *[HTML_500] * 10)
    events: list[RequestEvent] = []
    async with make_client(fake, max_retries=2, on_request=events.append) as c:
        with pytest.raises(RetriableError) as exc:
            await c.details("p1")
    assert exc.value.status == 500 and c.calls["details"] == 3
    assert [(e.endpoint, e.status, e.attempt) for e in events] == [
        ("auth", 200, 1), ("details", 500, 1), ("details", 500, 2), ("details", 500, 3)]
    assert events[1].error is not None and events[1].duration_s >= 0


async def test_idempotent_writes_retry_after_timeouts() -> None:
    fake = FakeOmi()
    fake.on("update", raise_(httpx.ReadTimeout), HTML_500)
    fake.on("delete", raise_(httpx.ReadTimeout))
    async with make_client(fake) as c:
        assert await c.update(NEW) == {"publicId": "pid00001", "fullName": "Khách 1"}
        assert await c.delete("pid00001") is True
    assert c.calls["update"] == 3 and c.calls["delete"] == 2
    assert fake.bodies["update"][0]["refId"] == "KH-9"


@pytest.mark.parametrize("fault", [HTML_500, TRUNCATED, raise_(httpx.ReadTimeout),
                                   raise_(httpx.WriteTimeout), raise_(httpx.ReadError)])
async def test_creates_are_not_resent_when_they_may_have_arrived(fault: httpx.Response) -> None:
    fake = FakeOmi()
    fake.on("add_more", fault)
    fake.on("add", fault)
    fake.on("add_note", fault)
    async with make_client(fake) as c:
        with pytest.raises(RetriableError) as more:
            await c.add_more([NEW])
        with pytest.raises(RetriableError):
            await c.add(NEW)
        with pytest.raises(RetriableError):
            await c.add_notes([NoteIn("0393123456", "hi")])
    assert not isinstance(more.value, NotSent)
    assert (c.calls["add_more"], c.calls["add"], c.calls["add_note"]) == (1, 1, 1)


@pytest.mark.parametrize("fault", [raise_(httpx.ConnectError), raise_(httpx.ConnectTimeout),
                                   raise_(httpx.PoolTimeout),
                                   envelope(status=429, headers={"Retry-After": "0"}),
                                   httpx.Response(401)])
async def test_creates_are_resent_when_they_cannot_have_arrived(fault: httpx.Response) -> None:
    fake = FakeOmi()
    fake.on("add_more", fault)
    fake.on("add", fault)
    async with make_client(fake) as c:
        await c.add_more([NEW, NEW])
        created = await c.add(NEW)
    assert created.public_id == "pid00001"
    assert c.calls["add_more"] == 2 and c.calls["add"] == 2
    assert len(fake.bodies["add_more"][-1]) == 2


async def test_connect_errors_exhausted_raise_not_sent() -> None:
    fake = FakeOmi()
    fake.on("add_more", *[raise_(httpx.ConnectError)] * 5)
    async with make_client(fake, max_retries=2) as c:
        with pytest.raises(NotSent):
            await c.add_more([NEW])
    assert c.calls["add_more"] == 3


async def test_remote_errors_carry_their_code() -> None:
    fake = FakeOmi()
    fake.on("update", failure("request_invalid"))
    fake.on("add", failure("duplicate_ref_id"))
    async with make_client(fake) as c:
        with pytest.raises(RemoteError) as upd:
            await c.update(NEW)
        with pytest.raises(RemoteError) as add:
            await c.add(NEW)
    assert (upd.value.code, add.value.code) == ("request_invalid", "duplicate_ref_id")
    assert c.calls["update"] == 1  # -9999 is an answer, not a fault: never retried


async def test_delete_details_get_missing() -> None:
    fake = FakeOmi()
    fake.on("delete", failure("contact_not_found"))
    fake.on("details", failure("not_found"))
    fake.on("get", envelope(None), envelope([]))
    async with make_client(fake) as c:
        assert await c.delete("gone") is False
        assert await c.details("gone") is None
        assert await c.get(ref_id="KH-404") is None
        assert await c.get(phone="+84 393 123 456") is None
        found = await c.get(email="a@b.vn")
        assert found is not None and found.ref_id == "KH-1"
        with pytest.raises(ValueError):
            await c.get()
        with pytest.raises(ValueError):
            await c.get(ref_id="a", ref_code="b")
    assert c.calls["get"] == 3


@pytest.mark.parametrize("code", ["contact_not_found", "CONTACT_NOT_EXIST", "contact-deleted",
                                  "not_found", "Contact does not exist", "id_not_found"])
async def test_details_reads_a_not_found_code_as_missing(code: str) -> None:
    fake = FakeOmi()
    fake.on("details", failure(code))
    async with make_client(fake) as c:
        assert await c.details("gone") is None


@pytest.mark.parametrize("code", ["system_busy", "request_invalid", "api_error",
                                  "unknown_error", "route_not_found", "tenant_not_found",
                                  "user_deleted_contact_lock", ""])
async def test_details_does_not_read_other_codes_as_missing(code: str) -> None:
    """A contact is taken for deleted only on an answer that says so (before: any -9999)."""
    fake = FakeOmi()
    fake.on("details", failure(code))
    async with make_client(fake) as c:
        with pytest.raises(RemoteError):
            await c.details("there")


@pytest.mark.parametrize("code", ["contact_not_found", "not_exist", "Contact does not exist"])
async def test_get_reads_a_not_found_code_as_no_match(code: str) -> None:
    fake = FakeOmi()
    fake.on("get", failure(code))
    async with make_client(fake) as c:
        assert await c.get(ref_id="KH-404") is None


@pytest.mark.parametrize("code", ["system_busy", "request_invalid", "unknown_error", ""])
async def test_get_does_not_read_other_codes_as_no_match(code: str) -> None:
    fake = FakeOmi()
    fake.on("get", failure(code))
    async with make_client(fake) as c:
        with pytest.raises(RemoteError):
            await c.get(ref_id="KH-1")


@pytest.mark.parametrize("now", [failure("contact_not_found"), envelope(None),
                                 envelope(wire_contact(1, is_deleted=True))])
async def test_a_delete_refused_for_no_stated_reason_is_done_if_the_contact_is_gone(
        now: httpx.Response) -> None:
    fake = FakeOmi()
    fake.on("delete", failure("system_busy"))
    fake.on("details", now)
    async with make_client(fake) as c:
        assert await c.delete("pid00001") is False
    assert c.calls["delete"] == 1 and c.calls["details"] == 1


@pytest.mark.parametrize("code", ["system_busy", "request_invalid", ""])
async def test_a_delete_refused_while_the_contact_is_live_is_an_error(code: str) -> None:
    fake = FakeOmi()  # details answers a live contact
    fake.on("delete", failure(code))
    async with make_client(fake) as c:
        with pytest.raises(RemoteError):
            await c.delete("pid00001")
    assert c.calls["delete"] == 1 and c.calls["details"] == 1


async def test_a_delete_refused_for_its_token_in_the_body_is_sent_again() -> None:
    fake = FakeOmi()
    fake.on("delete", failure("token_expired"))
    async with make_client(fake) as c:
        assert await c.delete("pid00001") is True
    assert c.calls == {"auth": 2, "delete": 2}


async def test_a_delete_refused_for_its_token_every_time_is_looked_up() -> None:
    """Refused the same way after every renewal: the answer as it is, so the delete is not
    taken for done while the contact is live."""
    fake = FakeOmi()
    fake.on("delete", *[failure("token_expired")] * 5)
    async with make_client(fake) as c:
        with pytest.raises(RemoteError, match="token_expired"):
            await c.delete("pid00001")
    assert c.calls == {"auth": 5, "delete": 5, "details": 1}


async def test_bodies_and_paths_on_the_wire() -> None:
    fake = FakeOmi()
    seen: list[str] = []

    def spy(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.raw_path.decode()}")

    fake.on("delete", spy)
    fake.on("details", spy)
    fake.on("get", spy)
    async with make_client(fake) as c:
        await c.delete("a/b c")
        await c.details("x1")
        await c.get(ref_code="C 1")
        await c.add_notes([NoteIn("84393123456", "gọi lại", "agent@x.vn")])
        await c.add_notes([])
        await c.add_more([])
        await c.list_page(2, 30, keyword="Tuyết", filters=[{"field_code": "contact_owner",
                                                            "value": ["unassigned"]}])
    assert seen == ["DELETE /api/contacts/delete/a%2Fb%20c", "GET /api/contacts/details/x1",
                    "GET /api/contacts/get?ref_code=C+1"]
    assert fake.bodies["add_note"] == [[{"phone": "0393123456", "content": "gọi lại",
                                         "note_by": "agent@x.vn"}]]
    assert fake.bodies["list"] == [{"keyword": "Tuyết", "filters": [
        {"field_code": "contact_owner", "value": ["unassigned"]}]}]
    assert "add_more" not in c.calls


async def test_iter_pages_under_a_size_cap() -> None:
    fake = FakeOmi(contacts=100, page_cap=37, delay=0.005)
    async with make_client(fake) as c:
        pages = [p async for p in c.iter_pages(500, concurrency=4)]
    assert [p.page_number for p in pages] == [1, 2, 3]
    assert [len(p.items) for p in pages] == [37, 37, 26]
    ids = [x.public_id for p in pages for x in p.items]
    assert ids == [f"pid{i:05d}" for i in range(1, 101)]
    assert fake.sizes == [37, 37, 37]  # asked 500 once, then the server's page size
    assert c.calls["list"] == 3


async def test_iter_pages_bounded_concurrency_and_order() -> None:
    fake = FakeOmi(contacts=200, page_cap=10, delay=0.01)
    async with make_client(fake) as c:
        numbers = [p.page_number async for p in c.iter_pages(10, concurrency=3)]
    assert numbers == list(range(1, 21))
    assert 2 <= fake.max_in_flight <= 3


async def test_iter_pages_follows_has_next_past_announced_total() -> None:
    fake = FakeOmi(contacts=50, page_cap=10)
    fake.override_total_pages = 2  # the server under-announces; has_next keeps going
    async with make_client(fake) as c:
        pages = [p async for p in c.iter_pages(10)]
    assert len(pages) == 5 and pages[-1].has_next is False


async def test_iter_pages_detects_a_loop() -> None:
    fake = FakeOmi(contacts=30, page_cap=10)
    fake.ignore_page = True  # always serves page 1
    async with make_client(fake) as c:
        with pytest.raises(ProtocolError, match="loop"):
            _ = [p async for p in c.iter_pages(10)]


async def test_iter_pages_early_exit_cancels_prefetch() -> None:
    fake = FakeOmi(contacts=100, page_cap=10, delay=0.01)
    async with make_client(fake) as c:
        pages = c.iter_pages(10, concurrency=4)
        async for p in pages:
            if p.page_number == 2:
                break
        await pages.aclose()  # type: ignore[attr-defined]
        assert asyncio.all_tasks() == {asyncio.current_task()}  # prefetches cancelled
    assert c.calls["list"] <= 5


async def test_rate_limited_exhausted_raises_rate_limited() -> None:
    fake = FakeOmi()
    fake.on("layout", *[envelope(status=429, headers={"Retry-After": "0"})] * 4)
    async with make_client(fake, max_retries=2) as c:
        with pytest.raises(RateLimited):
            await c.layout()
    assert c.calls["layout"] == 3


async def test_broken_metrics_hook_does_not_break_requests() -> None:
    def hook(event: RequestEvent) -> None:
        raise RuntimeError("metrics down")

    async with make_client(FakeOmi(), on_request=hook) as c:
        assert await c.layout()


def test_empty_key_refused() -> None:
    with pytest.raises(AuthError):
        make_client(FakeOmi(), api_key="")


def test_clients_share_one_verifying_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cycle builds a client; the CA bundle is loaded for the first one only, into a
    context that still verifies certificates and host names."""
    from sync.api import client as client_module

    built: list[ssl.SSLContext] = []

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return built[-1]

    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    client_module._tls_context.cache_clear()
    try:
        for _ in range(3):
            client_module.OmiClient("https://crm.example.vn", "k")
        assert len(built) == 1
        assert built[0].verify_mode is ssl.CERT_REQUIRED and built[0].check_hostname
    finally:
        client_module._tls_context.cache_clear()


@pytest.mark.parametrize("code", ["system_busy", "too_many_requests", "unknown_error"])
async def test_auth_answering_a_busy_code_is_retried_not_a_refused_key(code: str) -> None:
    fake = FakeOmi(contacts=2)
    fake.on("auth", failure(code), failure(code))
    async with make_client(fake) as c:
        assert len((await c.list_page(1, 10)).items) == 2
    assert c.calls == {"auth": 3, "list": 1}


@pytest.mark.parametrize("code", ["api_key_invalid", "API_KEY_IS_REQUIRED", "invalid-api-key",
                                  "invalid_credentials", "unauthorized", "access_denied"])
async def test_auth_answering_a_code_about_the_key_is_a_refused_key(code: str) -> None:
    fake = FakeOmi()
    fake.on("auth", failure(code))
    async with make_client(fake) as c:
        with pytest.raises(AuthError, match="refused the API key"):
            await c.list_page(1, 10)
    assert c.calls == {"auth": 1}


async def test_auth_faults_count_against_the_calls_retries_not_on_top_of_them() -> None:
    fake = FakeOmi()
    fake.on("auth", *[httpx.Response(503)] * 20)
    async with make_client(fake, max_retries=3) as c:
        with pytest.raises(RetriableError):
            await c.list_page(1, 10)
    assert c.calls == {"auth": 4}  # one per attempt (was one retry loop inside another: 16)


async def test_an_unreachable_crm_is_named_in_the_error() -> None:
    from sync.api import OmiClient

    async with OmiClient("http://127.0.0.1:1", "key-x", max_retries=0) as c:
        with pytest.raises(RetriableError, match=r"ConnectError.*\(http://127\.0\.0\.1:1\)"):
            await c.layout()


async def test_a_404_on_auth_asks_whether_the_base_url_is_the_root() -> None:
    fake = FakeOmi()
    fake.on("auth", httpx.Response(404, text="<html>Not Found</html>"))
    async with make_client(fake) as c:
        with pytest.raises(ProtocolError, match=r"HTTP 404 for /api/auth: is the base URL"):
            await c.layout()
