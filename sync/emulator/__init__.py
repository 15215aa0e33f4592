"""The OMICall CRM emulator: a faithful, independent implementation of omicall-api.md.

Part of the product (demo, tests, benchmarks). It never imports the client (`sync.api`): it is
written from the contract alone, so a client that misreads the contract fails against it.

    from sync.emulator import EmulatorConfig, Emulator, create_app, EmulatorServer, serve

- `Emulator`: the in-memory tenant (contacts, tokens, add-more queue, counters, agent edits).
- `create_app`: the Starlette app (/api per the contract, /_emulator admin routes).
- `EmulatorServer`: the app on a loopback port in a background thread (context manager).
- `serve`: blocking, for `crm-sync emulator`.
"""

from sync.emulator.app import create_app
from sync.emulator.config import DEFAULT_LAYOUT, EmulatorConfig
from sync.emulator.emulator import ENDPOINTS, Emulator
from sync.emulator.server import EmulatorServer, serve

__all__ = [
    "DEFAULT_LAYOUT",
    "ENDPOINTS",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "create_app",
    "serve",
]
