"""Alembic migrations of the bookkeeping tables; run them with `sync.store.migrate.upgrade`."""
