"""The async OMICall client. `_send` is the one place that does I/O; the adapter knows the wire.

Retry policy, by what a re-send risks:
- reads, `update` and `delete` are idempotent: retried on any RetriableError;
- `add`, `add_more`, `add_note` may create twice if re-sent after reaching the server: retried only
  when the request certainly never reached the handler (NotSent: connect failure, pool timeout)
  or was refused by the rate limiter (429); otherwise the RetriableError goes to the caller, which
  checks with get(ref_id=...) before sending again.
On a rejected token the client re-authenticates (one auth for all concurrent callers) and
re-sends, up to `_RENEWALS` times per attempt. The API key and the token live in `_Secret`s:
never in a log line, an exception message, or a traceback's local variables.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from sync.api import adapter
from sync.api.adapter import AUTH, LayoutField, NoteIn, Page, TokenRejected
from sync.api.paging import Paginator
from sync.errors import ApiError, AuthError, NotSent, RateLimited, RemoteError, RetriableError
from sync.record import Contact

log = structlog.get_logger("sync.api")
_SECRET_IN_TEXT = re.compile(rf"({adapter.API_KEY_PARAM}=|Bearer )[^&\s'\"]*")
_RENEWALS = 4  # fresh tokens a call may ask for (shared with concurrent callers) per attempt
_JWT = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")  # a bearer token, wherever it is


class _RedactKeyFilter(logging.Filter):
    """httpx logs every request URL at INFO: the auth URL would carry the API key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if adapter.API_KEY_PARAM + "=" in message:
            record.msg, record.args = _SECRET_IN_TEXT.sub(r"\1***", message), ()
        return True


logging.getLogger("httpx").addFilter(_RedactKeyFilter())


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One HTTP request as sent (retries are separate events), for metrics."""

    endpoint: str
    method: str
    status: int | None
    duration_s: float
    attempt: int
    error: str | None = None


class _Secret:
    """A string that does not show itself in repr/str (tracebacks with locals, debuggers)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


@dataclass(slots=True)
class _Call:
    endpoint: str
    method: str
    path: str
    params: Mapping[str, Any] | None
    body: Any
    listing: bool = False  # a list page: adapter.list_payload, items decoded lazily (Listed)
    sends: int = 0


_READ, _UNSAFE = "read", "unsafe"  # idempotent writes share the read policy


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (system settings, certifi's CA bundle), built once per
    process: every AsyncClient built its own, loading the CA bundle again, 30-60 ms of each
    cycle whether the CRM's URL is https or not. A CA bundle changed on disk is read on
    the next start."""
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class UpdateCheck:
    """What `OmiClient.update_checked` found: attributes that did not reach the CRM, with why,
    and clears no update can send (the CRM keeps its value)."""

    missed: dict[str, str]
    not_sent: tuple[str, ...] = ()
    sent: bool = True  # False: nothing else was to be sent, so no update was made


class OmiClient:
    """`async with OmiClient(base_url, api_key) as c:` then call the endpoint methods."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 max_retries: int = 5, backoff_base: float = 0.5, backoff_max: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 on_request: Callable[[RequestEvent], None] | None = None) -> None:
        if not api_key:
            raise AuthError("no OMICall API key given")
        self._key = _Secret(api_key)
        self._token: _Secret | None = None
        self._takes: set[str] = set()  # update_checked: attributes this server showed it takes
        self._token_lock = asyncio.Lock()
        self._max_retries, self._backoff_base, self._backoff_max = (
            max_retries, backoff_base, backoff_max)
        self._on_request = on_request
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport, follow_redirects=False,
            verify=_tls_context(),
            timeout=httpx.Timeout(connect=min(timeout, 10.0), read=timeout, write=timeout,
                                  pool=timeout),
            headers={"Accept": "application/json"})
        self.calls: Counter[str] = Counter()
        self.access_type: str | None = None

    async def __aenter__(self) -> OmiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints ---------------------------------------------------------------------------

    async def authenticate(self) -> str | None:
        """Fetch a fresh token now (validates the key); returns the tenant's access_type."""
        async with self._token_lock:
            self._token = await self._fetch_token()
        return self.access_type

    async def list_page(self, page: int, size: int, *, keyword: str | None = None,
                        filters: Sequence[Mapping[str, Any]] | None = None,
                        known: adapter.Known | None = None) -> Page:
        """One page. `known`: see adapter.page_from_wire."""
        body: dict[str, Any] = {}
        if keyword is not None:
            body["keyword"] = keyword
        if filters is not None:
            body["filters"] = [dict(f) for f in filters]
        payload = await self._request("list", params={"page": page, "size": size}, body=body,
                                      listing=True)
        return adapter.page_from_wire(payload, page, known)

    async def iter_pages(self, size: int = 100, *, concurrency: int = 4,
                         known: adapter.Known | None = None
                         ) -> AsyncIterator[Page]:
        """Every page in order. Pages announced by page 1 are fetched `concurrency` at a time;
        past the announced total, pages are fetched one by one while has_next says so."""
        first = await self.list_page(1, size, known=known)
        pager = Paginator()
        pager.advance(first)
        yield first
        size = pager.page_size or size  # the server's cap, not what we asked for
        pending: dict[int, asyncio.Task[Page]] = {}
        try:
            while pager.next_page is not None:
                n = pager.next_page
                for k in range(n, min(n + max(concurrency, 1), pager.total_pages + 1)):
                    if k not in pending:
                        pending[k] = asyncio.create_task(self.list_page(k, size, known=known))
                task = (pending.pop(n, None)
                        or asyncio.create_task(self.list_page(n, size, known=known)))
                page = await task
                pager.advance(page)
                yield page
        finally:
            for task in pending.values():
                task.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)

    async def add(self, c: Contact) -> Contact:
        payload = await self._request("add", body=adapter.create_body(c), policy=_UNSAFE)
        return adapter.contact_from_wire(payload)

    async def add_more(self, cs: Sequence[Contact]) -> None:
        """Queue creates (processed asynchronously by the CRM; nothing reports failed items)."""
        if cs:
            adapter.ack_from_wire(await self._request(
                "add_more", body=[adapter.create_body(c) for c in cs], policy=_UNSAFE))

    async def update(self, c: Contact, before: Contact | None = None) -> dict[str, Any]:
        """Update `c` by its refId; with `before` (the CRM's copy it was changed from), only the
        fields that differ from it are sent (adapter.update_body)."""
        payload = await self._request("update", body=adapter.update_body(c, before))
        return adapter.summary_from_wire(payload)

    async def update_checked(self, c: Contact, before: Contact) -> UpdateCheck:
        """`update` of `c`, changed from the CRM's copy `before` ([assumed] 22):

        - `not_sent`: clears the update cannot express (adapter.not_clearable): the CRM keeps
          its value (no call is made if that is all there is to send);
        - `missed`: the other changed attributes that did not reach the CRM, each with why:
          all of them when the summary names another contact (the update found an agent's
          duplicate by the refId); one its summary shows as it was; the job title and refCode
          (the documented update body names neither), read back with `get` when changed: a
          value until the server has shown it takes them (a property of the server), a clear
          every time; a read-back that fails confirms nothing."""
        not_sent = tuple(adapter.not_clearable(c, before))
        if all(a in not_sent for a in adapter.update_changes(c, before)):
            return UpdateCheck({}, not_sent, sent=False)
        summary = await self.update(c, before)
        if (other := adapter.taken_by_another(summary, before)) is not None:
            why = (f"taken by another contact with this refId (publicId {other}, an agent's "
                   "duplicate?), not by this one: merge the two in the CRM")
            return UpdateCheck({a: why for a in adapter.update_changes(c, before)
                                if a not in not_sent}, not_sent)
        missed = {a: adapter.NOT_TAKEN for a in adapter.not_taken(summary, c, before)
                  if a not in not_sent}
        unsure = [a for a in adapter.UNDOCUMENTED_UPDATE_ATTRS
                  if a not in not_sent and getattr(c, a) != getattr(before, a)
                  and (a not in self._takes or getattr(c, a) is None)]
        if not unsure:
            return UpdateCheck(missed, not_sent)
        try:
            now = await self.get(ref_id=c.ref_id)
        except AuthError:
            raise
        except ApiError as exc:
            log.warning("omicall.update_not_read_back", error=str(exc))
            now = None
        if now is None:
            missed.update(dict.fromkeys(unsure, adapter.NOT_READ_BACK))
            return UpdateCheck(missed, not_sent)
        missed.update(dict.fromkeys(adapter.shown_as_before(now, c, before, unsure),
                                    adapter.NOT_TAKEN))
        self._takes.update(a for a in unsure
                           if getattr(c, a) is not None and getattr(now, a) == getattr(c, a))
        return UpdateCheck(missed, not_sent)

    async def delete(self, public_id: str) -> bool:
        """True if deleted now, False if it was already gone (or deleted by a lost earlier try)."""
        try:
            adapter.ack_from_wire(await self._request("delete", public_id=public_id))
        except RemoteError as exc:
            if adapter.says_missing(exc):
                return False
            # A refusal that does not say why (busy, a token problem reported as -9999): gone
            # only if the CRM shows no live contact now; else the delete did not happen.
            now = await self.details(public_id)
            if now is None or now.is_deleted:
                return False
            raise
        return True

    async def add_notes(self, notes: Sequence[NoteIn]) -> None:
        if notes:
            adapter.ack_from_wire(await self._request(
                "add_note", body=adapter.notes_body(notes), policy=_UNSAFE))

    async def get(self, *, ref_id: str | None = None, ref_code: str | None = None,
                  phone: str | None = None, email: str | None = None) -> Contact | None:
        """The contact with exactly one given identifier, or None. Deleted ones are returned
        with is_deleted=True when the server reports them."""
        query = adapter.get_query(ref_id=ref_id, ref_code=ref_code, phone=phone, email=email)
        payload = await self._found("get", params=query)
        if isinstance(payload, list) and len(payload) <= 1:
            payload = payload[0] if payload else None
        return None if payload is None else adapter.contact_from_wire(payload)

    async def details(self, public_id: str) -> Contact | None:
        payload = await self._found("details", public_id=public_id)
        return None if payload is None else adapter.contact_from_wire(payload)

    async def _found(self, endpoint: str, **request: Any) -> Any:
        """The payload, or None when the CRM answers that the contact does not exist."""
        try:
            return await self._request(endpoint, **request)
        except RemoteError as exc:
            if adapter.says_missing(exc):
                return None
            raise

    async def layout(self) -> list[LayoutField]:
        return adapter.layout_from_wire(await self._request("layout"))

    # --- token ---------------------------------------------------------------------------------

    async def _fetch_token(self, *, retry: bool = True) -> _Secret:
        """`retry=False` inside another call's retries, which then cover the auth too (auth
        retrying on its own multiplied the attempts: 36 auth calls in one failing cycle)."""
        if retry:
            payload = await self._request(AUTH)
        else:
            payload = await self._send(_Call(AUTH, *adapter.path_for(AUTH), None, None), None)
        token, self.access_type = adapter.token_from_wire(payload)
        return _Secret(token)

    async def _current_token(self) -> _Secret:
        if self._token is None:
            async with self._token_lock:  # concurrent first calls share one auth
                if self._token is None:
                    self._token = await self._fetch_token(retry=False)
        return self._token

    async def _renew_token(self, stale: _Secret) -> _Secret:
        async with self._token_lock:  # concurrent 401s share one re-auth
            if self._token is None or self._token is stale:
                self._token = None  # should the fetch fail, the next attempt fetches first
                self._token = await self._fetch_token(retry=False)
            return self._token

    # --- the request pipeline ------------------------------------------------------------------

    async def _request(self, endpoint: str, *, public_id: str | None = None,
                       params: Mapping[str, Any] | None = None, body: Any = None,
                       policy: str = _READ, listing: bool = False) -> Any:
        method, path = adapter.path_for(endpoint, public_id)
        call = _Call(endpoint, method, path, params, body, listing)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1), wait=self._wait, reraise=True,
            retry=retry_if_exception(lambda e: _may_retry(e, policy)))
        return await retrying(self._send_authed, call)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self._backoff_max)
        # exponential with jitter (spreads concurrent retries), capped
        exp = self._backoff_base * 2.0 ** min(state.attempt_number - 1, 30)
        return min(self._backoff_max, exp + random.uniform(0, self._backoff_base))

    async def _send_authed(self, call: _Call) -> Any:
        if call.endpoint == AUTH:
            return await self._send(call, None)
        # Re-auth on every attempt: a token may also expire during a long run of retries.
        # A renewed token may be refused too: a server that lets a token serve a few calls or
        # a few seconds refuses it again while other calls still hold it. Renewals are shared
        # by concurrent callers, so a few per call let every caller through; a server that
        # refuses each token it issues fails the call after those few.
        token = await self._unsent(call, self._current_token())
        for _ in range(_RENEWALS):
            try:
                return await self._send(call, token)
            except TokenRejected:
                token = await self._unsent(call, self._renew_token(token))
        try:
            return await self._send(call, token)
        except TokenRejected as exc:
            if exc.code is not None:  # only its words named the token: the answer as it is
                raise RemoteError(exc.code, endpoint=call.endpoint, status=exc.status) from None
            raise AuthError(f"access token refused right after re-authenticating "
                            f"({_RENEWALS} times)", endpoint=call.endpoint, status=401) from None

    @staticmethod
    async def _unsent(call: _Call, fetch: Awaitable[_Secret]) -> _Secret:
        """A token for `call`. Its fetch failing is NotSent for the call, which never left: a
        create or a note is retried then too (else it would count as maybe delivered)."""
        try:
            return await fetch
        except RetriableError as exc:
            if isinstance(exc, NotSent | RateLimited):
                raise
            raise NotSent(f"{call.endpoint}: not sent, no token: {exc}",
                          endpoint=call.endpoint) from exc

    async def _send(self, call: _Call, token: _Secret | None) -> Any:
        call.sends += 1
        self.calls[call.endpoint] += 1
        failure: ApiError | None = None
        status: int | None = None
        payload: Any = None
        started = time.perf_counter()
        try:  # secrets go into the request inline, so no local variable holds them
            response = await self._http.send(self._http.build_request(
                call.method, call.path, json=call.body,
                params={adapter.API_KEY_PARAM: self._key.reveal()} if token is None
                else call.params,
                headers=None if token is None else {"Authorization": "Bearer " + token.reveal()}),
                stream=True)
            try:
                # Read here, not kept on the Response: a Response sits in reference cycles
                # (httpx's streams), so a body it held would wait for the cyclic collector
                # (a 1-2 MB list page each); these bytes go as soon as the page is applied.
                content = b"".join([part async for part in response.aiter_bytes()])
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            failure = self._wrap(call.endpoint, exc)
        duration = time.perf_counter() - started
        if failure is None:
            status = response.status_code
            retry_after = response.headers.get("Retry-After")
            try:
                payload = (adapter.list_payload(status, content, retry_after=retry_after)
                           if call.listing else
                           adapter.parse_envelope(status, content, call.endpoint,
                                                  retry_after=retry_after))
            except ApiError as exc:
                failure = self._scrubbed(exc, token)  # a server may echo the key or token
            content = b""  # nor left in this frame's locals, which a traceback can show
        self._record(call, status, duration, failure)
        if failure is not None:
            raise failure  # raised outside the except: no httpx exception (and URL) in context
        return payload

    def _wrap(self, endpoint: str, exc: httpx.HTTPError) -> ApiError:
        text = f"{endpoint}: {type(exc).__name__}: {self._scrub(str(exc))}"
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            url = self._http.base_url  # where it tried, without any credentials in it
            where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
            return NotSent(f"{text} ({where})", endpoint=endpoint)
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            return ApiError(text, endpoint=endpoint)  # our request or base URL is wrong
        return RetriableError(text, endpoint=endpoint)

    def _scrub(self, text: str, *more: _Secret | None) -> str:
        for secret in (self._key, self._token, *more):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), "***")
        return _JWT.sub("***", _SECRET_IN_TEXT.sub(r"\1***", text))

    def _scrubbed(self, exc: ApiError, token: _Secret | None) -> ApiError:
        """`exc` without the key or a token in its message (or its -9999 code), which the
        server's own words may carry: it goes on to logs, `sync_runs` and the terminal."""
        exc.args = tuple(self._scrub(a, token) if isinstance(a, str) else a for a in exc.args)
        if isinstance(exc, RemoteError | TokenRejected) and exc.code is not None:
            exc.code = self._scrub(exc.code, token)
        return exc.with_traceback(None)  # the decoder's frames hold the body as it came

    def _record(self, call: _Call, status: int | None, duration: float,
                failure: ApiError | None) -> None:
        error = self._scrub(f"{type(failure).__name__}: {failure}") if failure else None
        (log.warning if failure else log.info)(
            "omicall.request", endpoint=call.endpoint, method=call.method, path=call.path,
            status=status, duration_ms=round(duration * 1000, 1), attempt=call.sends,
            error=error)
        if self._on_request is not None:
            try:
                self._on_request(RequestEvent(call.endpoint, call.method, status, duration,
                                              call.sends, error))
            except Exception:  # a broken metrics hook must not break the sync
                log.exception("omicall.on_request_failed")


def _may_retry(exc: BaseException, policy: str) -> bool:
    if isinstance(exc, NotSent | RateLimited):
        return True
    return policy == _READ and isinstance(exc, RetriableError)
