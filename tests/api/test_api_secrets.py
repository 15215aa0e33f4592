"""The API key and the access token never reach a log line, an exception, or a traceback."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import httpx
import pytest
import structlog

from sync.errors import ApiError
from sync.record import Contact

from .omifake import API_KEY, FakeOmi, failure, make_client

TOKEN_MARK = "s3cr3t"  # every token the fake issues contains it


def leaky_error(exc_type: type[httpx.TransportError]) -> Any:
    """An httpx error whose message carries the full URL (with ?apiKey=... on auth)."""
    def action(request: httpx.Request) -> Any:
        raise exc_type(f"failed {request.method} {request.url} "
                       f"auth={request.headers.get('Authorization')}", request=request)
    return action


def exception_texts(exc: BaseException) -> list[str]:
    """str/repr/args of the exception and its whole cause/context chain, and the repr of every
    local variable in every frame of every traceback (what rich/structlog show_locals print)."""
    texts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), *map(repr, e.args)]
        texts += traceback.format_exception(e)
        for frame, _ in traceback.walk_tb(e.__traceback__):
            texts += [repr(v) for v in frame.f_locals.values()]
        todo += [e.__cause__, e.__context__]
    return texts


def assert_clean(texts: list[str], tokens: list[str]) -> None:
    for text in texts:
        assert API_KEY not in text, text
        assert "apiKey=" + API_KEY[:6] not in text, text
        assert TOKEN_MARK not in text, text
        for token in tokens:
            assert token not in text, text


async def test_no_secret_in_logs_or_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs each URL at INFO, httpcore more at DEBUG
    fake = FakeOmi(contacts=3)
    fake.on("auth", leaky_error(httpx.ReadTimeout), leaky_error(httpx.ConnectError))
    fake.on("list", httpx.Response(401), leaky_error(httpx.ReadTimeout),
            httpx.Response(500, text="<html>oops</html>"))
    fake.on("add", leaky_error(httpx.ReadTimeout))
    fake.on("layout", *[leaky_error(httpx.RemoteProtocolError)] * 5)
    errors: list[ApiError] = []
    with structlog.testing.capture_logs() as logs:
        # the auth faults count against the listing's retries: five attempts in all
        async with make_client(fake, max_retries=4) as c:
            await c.list_page(1, 10)  # auth faults, a 401 -> re-auth, a timeout, a 500
            for call in (c.add(Contact(ref_id="R", full_name="X")), c.layout()):
                with pytest.raises(ApiError) as exc:
                    await call
                errors.append(exc.value)
            texts = [repr(v) for v in vars(c).values()] + [repr(c)]
        async with make_client(FakeOmi(), api_key=API_KEY + "-wrong") as bad:
            with pytest.raises(ApiError) as auth:
                await bad.layout()
            errors.append(auth.value)
    assert len(fake.tokens) == 2 and c.calls["auth"] == 4  # 2 faults + first + re-auth
    assert any(r["event"] == "omicall.request" and r["status"] == 401 for r in logs)
    assert any("ReadTimeout" in str(r.get("error")) for r in logs)
    assert [r["path"] for r in logs if r.get("endpoint") == "auth"] == ["/api/auth"] * 5
    assert any("apiKey=***" in r.getMessage() for r in caplog.records)  # httpx line redacted
    for e in errors:
        texts += exception_texts(e)
    texts += [str(r) for r in logs] + [r.getMessage() for r in caplog.records]
    texts += [caplog.text]
    assert_clean(texts, fake.tokens)


def echo(kind: str) -> Any:
    """A -9999 (HTTP 200, as the documented examples) whose message repeats the request's
    token or API key, as a server's error text may."""
    def action(request: httpx.Request) -> Any:
        auth = request.headers.get("Authorization", "")
        secret = auth.removeprefix("Bearer ") if kind == "token" else API_KEY
        return failure(f"invalid_session: {secret} is not valid")
    return action


async def test_a_server_echoing_the_key_or_token_in_its_error_leaks_neither() -> None:
    """The server's own words go into RemoteError and AuthError (and from there to the log,
    `sync_runs.message` and the terminal): the client takes the secrets out of them."""
    fake = FakeOmi(contacts=3)
    fake.on("layout", echo("token"))
    fake.on("details", echo("key"))
    errors: list[ApiError] = []
    with structlog.testing.capture_logs() as logs:
        async with make_client(fake, max_retries=0) as c:
            for call in (c.layout(), c.details("abc")):
                with pytest.raises(ApiError) as exc:
                    await call
                errors.append(exc.value)
        bad = FakeOmi()
        bad.on("auth", lambda request: failure(f"api_key_invalid: {request.url.params}"))
        async with make_client(bad) as c2:
            with pytest.raises(ApiError) as auth:
                await c2.layout()
            errors.append(auth.value)
    assert fake.tokens
    assert all("***" in str(e) for e in errors), [str(e) for e in errors]
    texts = [t for e in errors for t in exception_texts(e)]
    texts += [getattr(e, "code", "") for e in errors] + [str(r) for r in logs]
    assert_clean(texts, fake.tokens)
