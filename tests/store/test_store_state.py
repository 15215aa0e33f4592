"""sync.store.state (and journal): bulk bookkeeping on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Connection, Engine, select, text

from sync.codec import fields_hash
from sync.errors import StoreError
from sync.record import Contact, CustomEntry, DynamicValue, Fields, Item
from sync.store.bulk import Positional
from sync.store.schema import STATUSES, sync_state
from sync.store.state import StateStore, SyncState

FIELDS: Fields = {"full_name": "Phạm Minh Châu", "phone": "0393123456",
                  "birthday": date(1992, 7, 1), "tags": frozenset({"vip"}), "custom:Hạng": "Vàng"}
REMOTE = Contact(ref_id="KH1", full_name="Phạm Minh Châu", phones=(Item("0393123456", "home"),
                 Item("0281234567", "office")), custom=(CustomEntry("Hạng", "Vàng", "k9"),),
                 dynamic={"d1": DynamicValue("select", ("x",))}, public_id="p-1",
                 created_ms=1700000000000, updated_ms=1700000000500)


def state(key: str, **kw: object) -> SyncState:
    return SyncState(key, **{"ref_id": key, "status": "synced", **kw})  # type: ignore[arg-type]


@pytest.fixture
def store(engine: Engine, tenant: str) -> StateStore:
    return StateStore(engine, tenant)


def test_save_and_load_round_trip(store: StateStore) -> None:
    since = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    s = SyncState("KH1", ref_id="KH1", public_id="p-1", status="pending_create", base=FIELDS,
                  local_hash="l" * 32, remote=REMOTE, remote_updated_ms=1700000000500,
                  last_error="boom", attempts=2, pending_since=since)
    with store.begin() as conn:
        store.save(conn, [s])
    got = store.load(["KH1", "missing"])
    assert list(got) == ["KH1"]
    loaded = got["KH1"]
    assert loaded == s
    assert loaded.base == FIELDS and loaded.remote == REMOTE
    assert loaded.base_hash == fields_hash(FIELDS)
    assert loaded.pending_since == since and loaded.pending_since.tzinfo is not None
    assert store.load_by_public_ids(["p-1", "p-2"]) == {"p-1": s}
    assert store.load([]) == {} and store.load_by_public_ids([]) == {}


def test_json_is_decoded_lazily_and_rewritten_verbatim(store: StateStore) -> None:
    with store.begin() as conn:
        store.save(conn, [state("a", base=FIELDS, remote=REMOTE)])
    loaded = store.load(["a"])["a"]
    assert loaded._base_raw is not None and loaded._remote_raw is not None  # not decoded yet
    assert loaded.base_hash == fields_hash(FIELDS)  # from the column, no decoding
    loaded.attempts = 5
    with store.begin() as conn:
        store.save(conn, [loaded])
    again = store.load(["a"])["a"]
    assert again.attempts == 5 and again.base == FIELDS and again.remote == REMOTE
    # assigning base resets the hash to follow it
    again.base = {"full_name": "Khác"}
    assert again.base_hash == fields_hash({"full_name": "Khác"})
    copy = again.replace(status="error", last_error="x")
    assert copy.base == again.base and copy.status == "error" and again.status == "synced"
    with pytest.raises(TypeError):
        again.replace(nope=1)


def test_upsert_updates_and_last_duplicate_wins(store: StateStore) -> None:
    with store.begin() as conn:
        store.save(conn, [state("a"), state("b", base=FIELDS)])
    with store.begin() as conn:
        store.save(conn, [state("b", status="conflict", base=None), state("c"),
                          state("c", status="error", last_error="second")])
    got = store.load(["a", "b", "c"])
    assert got["b"].status == "conflict" and got["b"].base is None and got["b"].base_hash is None
    assert got["c"].status == "error" and got["c"].last_error == "second"


def test_invalid_status_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="status"), store.begin() as conn:
        store.save(conn, [state("a", status="weird")])


def test_tenants_are_isolated(engine: Engine, tenant: str) -> None:
    one, two = StateStore(engine, tenant), StateStore(engine, tenant + "-2")
    with one.begin() as conn:
        one.save(conn, [state("k", public_id="p")])
    with two.begin() as conn:
        two.save(conn, [state("k", status="error")])
    assert one.load(["k"])["k"].status == "synced"
    assert two.load(["k"])["k"].status == "error"
    assert two.load_by_public_ids(["p"]) == {}
    assert one.counts()["synced"] == 1 and one.counts()["error"] == 0


def test_one_transaction_nothing_half_applied(store: StateStore) -> None:
    with store.begin() as conn:
        store.save(conn, [state("keep")])
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.save(conn, [state("new")])
        store.delete(conn, ["keep"])
        store.add_tombstones(conn, [{"key": "keep", "side": "local", "values": {"a": 1}}])
        raise RuntimeError("the local-table write failed")
    assert set(store.load(["keep", "new"])) == {"keep"}
    assert store.last_tombstones() == []


def test_bulk_chunks_iteration_status_and_delete(store: StateStore) -> None:
    keys = [f"KH{i:05d}" for i in range(2345)]
    statuses = {k: STATUSES[i % len(STATUSES)] for i, k in enumerate(keys)}
    with store.begin() as conn:
        store.save(conn, [state(k, status=statuses[k], public_id=f"p{k}") for k in keys])
    assert len(store.load(keys)) == 2345  # several IN chunks
    assert len(store.load_by_public_ids([f"p{k}" for k in keys[:1200]])) == 1200
    seen = [s.key for batch in store.iter_all(chunk=1000) for s in batch]
    assert seen == keys
    assert [len(b) for b in store.iter_all(chunk=1000)] == [1000, 1000, 345]
    assert store.keys_by_status("error") == sorted(k for k in keys if statuses[k] == "error")
    assert sum(store.counts().values()) == 2345
    with store.begin() as conn:
        assert store.delete(conn, [*keys[:1500], "nope"]) == 1500
    assert [s.key for b in store.iter_all() for s in b] == keys[1500:]
    assert list(store.iter_all()) != [] and list(StateStore(store.engine, "x").iter_all()) == []


def test_errors_lists_rows_in_error(store: StateStore) -> None:
    with store.begin() as conn:
        store.save(conn, [state("ok"), state("bad", status="error", last_error="HTTP 500",
                                             attempts=3)])
    errors = store.errors()
    assert [(e["key"], e["last_error"], e["attempts"]) for e in errors] == [("bad", "HTTP 500", 3)]


def test_generic_save_path(engine: Engine, tenant: str) -> None:
    store = StateStore(engine, tenant)
    with store.begin() as conn:
        store._save_generic(conn, [state("a").as_row(tenant, datetime.now(UTC))])
        store._save_generic(conn, [state("a", status="error").as_row(tenant, datetime.now(UTC)),
                                   state("b").as_row(tenant, datetime.now(UTC))])
    got = store.load(["a", "b"])
    assert got["a"].status == "error" and got["b"].status == "synced"


def test_runs(store: StateStore) -> None:
    run_id = store.start_run("sync")
    assert store.last_runs(1)[0]["status"] == "running"
    store.finish_run(run_id, status="partial", counts={"pulled": 120, "errors": 2},
                     api_calls={"contacts/list": 3, "contacts/update": 4}, message="2 errors")
    second = store.start_run("full")
    runs = store.last_runs(5)
    assert [r["id"] for r in runs] == [second, run_id]
    done = runs[1]
    assert done["status"] == "partial" and done["pulled"] == 120 and done["errors"] == 2
    assert done["created_remote"] == 0 and done["api_calls"] == 7
    assert done["api_calls_by_endpoint"] == {"contacts/list": 3, "contacts/update": 4}
    assert done["finished_at"] >= done["started_at"] and done["message"] == "2 errors"
    with pytest.raises(ValueError, match="unknown run counts"):
        store.finish_run(second, status="ok", counts={"bogus": 1}, api_calls={})
    with pytest.raises(ValueError):
        store.start_run("nonsense")
    with pytest.raises(StoreError):
        store.finish_run(10**9, status="ok", counts={}, api_calls={})


def test_conflicts(store: StateStore) -> None:
    with store.begin() as conn:
        store.add_conflicts(conn, [
            {"key": "a", "field": "phone", "base_value": "0901", "local_value": "0902",
             "remote_value": "0903", "policy": "remote_wins", "resolution": "remote",
             "run_id": 1},
            {"key": "b", "field": "tags", "base_value": frozenset({"x"}),
             "local_value": frozenset({"x", "y"}), "remote_value": None, "policy": "manual",
             "resolution": "manual", "run_id": 1},
            {"key": "c", "field": "birthday", "base_value": date(1990, 1, 1),
             "local_value": date(1990, 1, 2), "remote_value": date(1990, 1, 3),
             "policy": "manual", "resolution": "manual", "run_id": 1},
        ])
    assert store.count_open_conflicts() == 2
    open_ = store.open_conflicts()
    assert [c["key"] for c in open_] == ["b", "c"]
    assert open_[0]["local_value"] == frozenset({"x", "y"}) and open_[0]["remote_value"] is None
    assert open_[1]["remote_value"] == date(1990, 1, 3)
    with store.begin() as conn:
        assert store.resolve_conflicts(conn, [open_[0]["id"]], "local") == 1
    assert store.count_open_conflicts() == 1


def test_tombstones_keep_any_values(store: StateStore) -> None:
    row = {"ref_id": "KH9", "birthday": date(1990, 1, 1), "tags": ["a", "b"],
           "updated": datetime(2024, 1, 1, tzinfo=UTC), "amount": Decimal("1.50"),
           "blob": b"\x00\x01", "custom_fields": {"Hạng": "Bạc"}}
    with store.begin() as conn:
        store.add_tombstones(conn, [
            {"key": "KH9", "public_id": "p9", "side": "remote", "values": row, "run_id": 3},
            {"key": "KH8", "side": "local", "values": REMOTE},
        ])
    last = store.last_tombstones()
    assert [t["key"] for t in last] == ["KH8", "KH9"]
    assert last[1]["values"]["custom_fields"] == {"Hạng": "Bạc"}
    assert last[1]["values"]["amount"] == {"$decimal": "1.50"}
    assert last[0]["values"]["full_name"] == "Phạm Minh Châu"
    assert store.last_tombstones(key="KH9")[0]["public_id"] == "p9"
    with pytest.raises(ValueError), store.begin() as conn:
        store.add_tombstones(conn, [{"key": "x", "side": "both", "values": {}}])


def test_timestamps_are_utc_aware(store: StateStore) -> None:
    with store.begin() as conn:
        store.save(conn, [state("a")])
        updated = conn.execute(select(sync_state.c.updated_at).where(
            sync_state.c.tenant == store.tenant)).scalar_one()
    assert updated.tzinfo is not None
    assert abs(updated - datetime.now(UTC)) < timedelta(minutes=1)


def test_chunked_saves_reload_unchanged(store: StateStore) -> None:
    """Chunks of 500 as the engine does them: save, then reload with the JSON kept as stored."""
    n = 2_000
    contacts = [state(f"K{i:06d}", base=FIELDS, remote=REMOTE, local_hash="h" * 32)
                for i in range(n)]
    for i in range(0, n, 500):
        with store.begin() as conn:
            store.save(conn, contacts[i:i + 500])
    for i in range(0, n, 500):
        chunk = store.load([s.key for s in contacts[i:i + 500]])
        assert len(chunk) == 500 and all(s.local_hash == "h" * 32 for s in chunk.values())
        assert chunk[contacts[i].key] == contacts[i]


def test_the_positional_write_stores_what_sqlalchemy_stores(engine: Engine, tenant: str) -> None:
    """Positional (save's SQLite shortcut) next to SQLAlchemy's own executemany: the same
    stored values, datetimes included, byte for byte."""
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [state("a", base=FIELDS, remote=REMOTE, local_hash="h", pending_since=when,
                  attempts=2, remote_updated_ms=2**40).as_row("", when),
            state("b", status="error", last_error="x").as_row("", when)]
    names = list(rows[0])
    stmt = sync_state.insert()
    positional = Positional.of(stmt, engine.dialect, names)
    if engine.dialect.name != "sqlite":
        assert positional is None  # named placeholders: the ordinary path
        return
    assert positional is not None
    with engine.begin() as conn:
        conn.execute(stmt, [r | {"tenant": tenant + "-sa"} for r in rows])
        positional.execute(conn, [r | {"tenant": tenant + "-bulk"} for r in rows])
        stored = {t: conn.execute(text(
            "SELECT * FROM sync_state WHERE tenant = :t ORDER BY key"), {"t": tenant + t}).all()
            for t in ("-sa", "-bulk")}
    strip = [tuple(v for k, v in r._mapping.items() if k != "tenant") for r in stored["-sa"]]
    assert len(strip) == 2
    assert strip == [tuple(v for k, v in r._mapping.items() if k != "tenant")
                     for r in stored["-bulk"]]


def test_sql_is_plain(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sync_state WHERE 1 = 0")).scalar() == 0


def test_save_fresh_stores_what_save_stores(engine: Engine, tenant: str) -> None:
    """A first import's bookkeeping from plain tuples (save_fresh) next to save()'s from
    SyncStates: the same rows, but for the time of writing."""
    fresh = StateStore(engine, tenant + "-fresh")
    saved = StateStore(engine, tenant + "-save")
    states = [state("a", base=FIELDS, remote=REMOTE, local_hash="h", remote_hash="d1",
                    remote_updated_ms=2**40, public_id="p-1"),
              state("b", status="read_only", base=FIELDS, remote=REMOTE),
              state("c", ref_id=None, public_id="p-3")]
    with saved.begin() as conn:
        saved.save(conn, states)
    rows = [(s.key, s.ref_id, s.public_id, s.status, r["base"], r["base_hash"], s.local_hash,
             r["remote"], s.remote_hash, s.remote_updated_ms)
            for s in states for r in [s.as_row("", datetime.now(UTC))]]
    with fresh.begin() as conn:
        fresh.save_fresh(conn, rows)
        fresh.save_fresh(conn, [])
    with engine.connect() as conn:
        stored = {t: [tuple(v for k, v in r._mapping.items() if k not in ("tenant", "updated_at"))
                      for r in conn.execute(text(
                          "SELECT * FROM sync_state WHERE tenant = :t ORDER BY key"), {"t": t})]
                  for t in (tenant + "-fresh", tenant + "-save")}
        kinds = conn.execute(text("SELECT DISTINCT typeof(updated_at) FROM sync_state "
                                  "WHERE tenant LIKE :t"), {"t": tenant + "-%"}).all() \
            if engine.dialect.name == "sqlite" else [("text",)]
    assert len(stored[tenant + "-fresh"]) == 3
    assert stored[tenant + "-fresh"] == stored[tenant + "-save"]
    assert kinds == [("text",)]
    assert fresh.load(["a", "b", "c"]) == saved.load(["a", "b", "c"])


def test_save_fresh_refuses_a_status_it_does_not_know(store: StateStore) -> None:
    row = ("a", "a", None, "maybe", None, None, None, None, None, None)
    with store.begin() as conn, pytest.raises(ValueError, match="maybe"):
        store.save_fresh(conn, [row])
    assert store.load(["a"]) == {}


def test_positional_tuples_must_name_every_column_once(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("Positional is SQLite's (qmark) shortcut")
    names = ("tenant", "key", "status", "attempts", "updated_at")
    positional = Positional.of(sync_state.insert(), engine.dialect, names)
    assert positional is not None
    when = datetime.now(UTC)
    shared = {"tenant": "t", "attempts": 0}
    with engine.begin() as conn:
        with pytest.raises(ValueError, match="are not"):
            positional.execute_tuples(conn, ("key", "status"), [("a", "synced")], shared)
        with pytest.raises(ValueError, match="bind processor"):  # updated_at must be shared
            positional.execute_tuples(conn, ("key", "status", "updated_at"),
                                      [("a", "synced", when)], shared)
        positional.execute_tuples(conn, ("status", "key"), [("synced", "a"), ("error", "b")],
                                  {**shared, "updated_at": when})
        got = conn.execute(text("SELECT key, status, attempts, updated_at FROM sync_state "
                                "WHERE tenant = 't' ORDER BY key")).all()
    stamp = when.replace(tzinfo=None).isoformat(sep=" ")
    assert got == [("a", "synced", 0, stamp), ("b", "error", 0, stamp)]


def test_save_fresh_on_another_database_goes_the_generic_way(
        engine: Engine, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither SQLite nor PostgreSQL: no upsert statement, update what exists and insert the
    rest (`_save_generic`), with the same rows."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the generic path is reached by renaming SQLite's dialect")
    store = StateStore(engine, tenant)
    rows = [("a", "a", "p-a", "synced", None, None, "h", None, "d-a", 7),
            ("b", None, "p-b", "read_only", None, None, None, None, None, None)]
    generic: list[int] = []
    save_generic = store._save_generic

    def counted(conn: Connection, states: list[dict[str, object]]) -> None:
        generic.append(len(states))
        save_generic(conn, states)

    monkeypatch.setattr(store, "_save_generic", counted)
    monkeypatch.setattr(engine.dialect, "name", "otherdb")
    with store.begin() as conn:
        store.save_fresh(conn, rows)
    with store.begin() as conn:  # again: the rows exist now, and are updated
        store.save_fresh(conn, [(*rows[0][:6], "h2", *rows[0][7:])])
    monkeypatch.undo()
    assert generic == [2, 1]
    got = store.load(["a", "b"])
    assert (got["a"].status, got["a"].local_hash, got["a"].remote_hash,
            got["a"].remote_updated_ms, got["a"].attempts) == ("synced", "h2", "d-a", 7, 0)
    assert (got["b"].status, got["b"].ref_id, got["b"].public_id) == ("read_only", None, "p-b")
