"""The exception tree, grouped by what the caller does next.

    CrmSyncError                    base of everything raised on purpose
    ├── ConfigError                 bad settings or mapping: fix the config (exit 2)
    │   └── MappingError            the mapping file, with file, line and key
    ├── ApiError                    anything the OMICall API did or did not answer
    │   ├── AuthError               the API key was refused: fatal, fix the key (exit 2)
    │   ├── RetriableError          5xx, 429, timeout, connection, undecodable body: retry later
    │   │   ├── RateLimited         429, carries retry_after seconds
    │   │   └── NotSent             certainly never reached the server (safe to re-send)
    │   ├── RemoteError             status_code -9999: carries the message code; per-item skip
    │   └── ProtocolError           JSON of the wrong shape, a paging loop: retrying won't help
    └── StoreError                  the local database (schema missing, lock not taken)
        ├── LockBusy                another sync holds this tenant's lock
        └── RowsRefused             a constraint or a type refused some row's values: per-row skip

Messages never contain the API key or an access token.
"""

from __future__ import annotations


class CrmSyncError(Exception):
    """Base of every error crm-sync raises on purpose."""


class ConfigError(CrmSyncError):
    """A setting or a file is wrong; the message names it."""


class MappingError(ConfigError):
    """The mapping file is wrong; names the file, the line and the key."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None, key: str = ""):
        where = file + (f":{line}" if line else "")
        prefix = f"{where}: " if where else ""
        suffix = f" (key: {key})" if key else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.file, self.line, self.key = file, line, key


class ApiError(CrmSyncError):
    """Anything the OMICall API did wrong or refused."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None):
        super().__init__(message)
        self.endpoint, self.status = endpoint, status


class AuthError(ApiError):
    """The API key was refused (or no token could be had)."""


class RetriableError(ApiError):
    """A transient failure: 5xx, 429, timeout, connection error, malformed body."""


class RateLimited(RetriableError):
    """HTTP 429; retry_after is the server's Retry-After in seconds, if given."""

    def __init__(self, message: str, *, endpoint: str = "", retry_after: float | None = None):
        super().__init__(message, endpoint=endpoint, status=429)
        self.retry_after = retry_after


class NotSent(RetriableError):
    """The request certainly never reached the server's handler: safe to re-send, even a create."""


class RemoteError(ApiError):
    """The API answered status_code -9999; `code` is its message (e.g. request_invalid)."""

    def __init__(self, code: str, *, endpoint: str = "", status: int | None = None):
        super().__init__(f"{endpoint or 'API'} refused the request: {code}", endpoint=endpoint,
                         status=status)
        self.code = code


class ProtocolError(ApiError):
    """An answer that breaks the contract in a way retrying will not fix."""


def row_failure(action: str, exc: ApiError) -> str:
    """A row's error for a call that failed for this row only: the API's code when it refused
    (-9999), else what went wrong (retries spent)."""
    if isinstance(exc, RemoteError):
        return f"{action} refused: {exc.code}"
    return f"{action} failed: {exc}"


class StoreError(CrmSyncError):
    """The local database is not usable as it is."""


class LockBusy(StoreError):
    """Another sync holds this tenant's lock."""


class RowsRefused(StoreError):
    """The database refused a write for the values of some row of it (NOT NULL, UNIQUE, CHECK,
    a foreign key, a length or a range the table's own columns impose); the transaction was
    rolled back. The message is the database's first line, without the failing row's values
    that some add on the lines after it."""
