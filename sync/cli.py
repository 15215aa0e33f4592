"""The `crm-sync` command line. Exit codes: 0 success; 1 failure (cycle aborted, nothing
half-applied); 2 bad configuration or usage; 3 the cycle completed but some rows are in error
or conflict."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from sync import __version__, logs
from sync.cycle import CycleOptions, CycleResult, ExitCode
from sync.errors import AuthError, ConfigError, CrmSyncError, LockBusy
from sync.notes_cli import notes_app
from sync.settings import Settings, load_settings, require_api_key
from sync.terminal import console

app = typer.Typer(
    name="crm-sync", no_args_is_help=True, add_completion=False,
    help="Two-way sync between OMICall CRM contacts and your SQL table.\n\n"
         "Settings come from CRM_SYNC_* environment variables and .env; see .env.example.")
db_app = typer.Typer(help="The bookkeeping schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(notes_app, name="notes")
out = console()
err = console(stderr=True)
T = TypeVar("T")


def _print_version(asked: bool) -> None:
    if asked:
        out.print(f"crm-sync {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """The app's own options, before any command."""

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def _settings(**overrides: Any) -> Settings:
    s = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(s.log_format, s.log_level)
    return s


def _guarded(fn: Callable[[], T]) -> T:
    """Turn our errors into the documented exit codes with a one-line message."""
    try:
        return fn()
    except (ConfigError, AuthError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(ExitCode.CONFIG) from None
    except CrmSyncError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(ExitCode.FAILURE) from None
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # here: `--help` does not load SQLAlchemy

        from sync.store import driver_message

        if not isinstance(exc, SQLAlchemyError):
            raise
        # unreachable, read-only, dropped meanwhile: a line naming the setting, no traceback
        err.print(f"[red]error:[/] the database (CRM_SYNC_DATABASE_URL) failed: "
                  f"{escape(driver_message(exc))}")
        raise typer.Exit(ExitCode.FAILURE) from None


NoWait = Annotated[bool, typer.Option("--no-wait", help="Exit 1 at once if another sync runs.")]


def _one_cycle(options: CycleOptions, no_wait: bool, progress: bool = False) -> CycleResult:
    from sync.report import print_cycle, print_plan

    settings = _settings()
    require_api_key(settings, "a cycle cannot reach the CRM without it")
    if (progress and out.is_terminal and err.is_terminal and settings.log_format != "json"
            and "log_level" not in settings.model_fields_set):
        # a person at a terminal gets the progress bar and the summary below; a line per
        # API request (hundreds on a large table) would bury both. Warnings still show.
        logs.configure(settings.log_format, "warning")
    note = None
    if options.dry_run:
        from sync.dry_run import dry_run_settings

        with dry_run_settings(settings) as (planned_on, note):
            result = _run_cycle(planned_on, options, no_wait, progress)
    else:
        result = _run_cycle(settings, options, no_wait, progress)
    if options.dry_run and result.status == "failed":
        # an empty plan here is no verdict: the cycle stopped before comparing the sides
        out.print("No plan: the dry run failed before it could compare both sides (below).")
    elif options.dry_run:
        print_plan(out, result.plan)
    if note:
        out.print(f"({note})")
    print_cycle(out, result)
    return result


def _run_cycle(settings: Settings, options: CycleOptions, no_wait: bool,
               progress: bool) -> CycleResult:
    from sync.runtime import build_runtime
    from sync.store.lock import describe_holder

    rt = build_runtime(settings, migrate=True)
    try:
        lock = rt.lock()
        try:
            lock.acquire(wait=not no_wait, timeout=settings.lock_wait_seconds,
                         on_wait=lambda holder: err.print(
                             f"waiting: another sync holds the lock ({describe_holder(holder)})"))
        except LockBusy as exc:
            err.print(f"[red]busy:[/] {exc}")
            raise typer.Exit(ExitCode.FAILURE) from None
        try:
            # holding the lock, a run still `running` is one whose process was killed
            if not options.dry_run:
                rt.store.close_abandoned_runs()
            if progress and out.is_terminal:
                from sync.progress import run_with_progress
                return run_with_progress(rt, options, out)
            return asyncio.run(rt.cycle(options))
        finally:
            lock.release()
    finally:
        rt.close()


@app.command()
def sync(
    full: Annotated[bool, typer.Option("--full", help="Also reconcile deletions in the CRM.")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
    = False,
    no_wait: NoWait = False,
) -> None:
    """Run one sync cycle now."""
    kind = "dry_run" if dry_run else "full" if full else "sync"
    result = _guarded(lambda: _one_cycle(CycleOptions(full=full, dry_run=dry_run, kind=kind),
                                         no_wait, progress=True))
    raise typer.Exit(result.exit_code)


@app.command()
def resync(no_wait: NoWait = False) -> None:
    """Manual full resync: a complete listing, every contact compared, deletions reconciled."""
    result = _guarded(lambda: _one_cycle(CycleOptions(full=True, kind="resync"), no_wait,
                                         progress=True))
    raise typer.Exit(result.exit_code)


@app.command()
def run() -> None:
    """Run the daemon: a cycle now and every interval, a full reconcile on a schedule.

    Cycles every CRM_SYNC_INTERVAL_SECONDS, a full reconcile on CRM_SYNC_FULL_SYNC_CRON;
    health and metrics on CRM_SYNC_HEALTH_PORT."""
    from sync.daemon import run_daemon

    code = _guarded(lambda: run_daemon(_settings()))
    raise typer.Exit(code)


@app.command()
def health(
    url: Annotated[str | None, typer.Option(
        "--url", help="The daemon's base URL; default from CRM_SYNC_HEALTH_HOST/PORT.")] = None,
    live: Annotated[bool, typer.Option("--live", help="Probe /healthz only.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 3.0,
) -> None:
    """Probe a running daemon's /healthz and /readyz (for container HEALTHCHECKs).

    Exit 0 when healthy, 1 otherwise (never 2: Docker reserves it)."""
    from sync.health import probe, probe_url

    if url is None:
        try:
            s = load_settings()
        except ConfigError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(ExitCode.FAILURE) from None
        url = probe_url(s.health_host, s.health_port)
    ok, lines = probe(url, live_only=live, timeout=timeout)
    for line in lines:
        (out if ok else err).print(line, markup=False, highlight=False)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILURE)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
           ) -> None:
    """Last runs with their counts and API calls, pending creates, errors, open conflicts."""
    from sync.report import print_status
    from sync.status import collect_status

    data = _guarded(lambda: collect_status(_settings()))
    if as_json:
        out.print_json(json.dumps(data, default=str, ensure_ascii=False))
    else:
        print_status(out, data)
    states, notes = data["states"], data.get("notes") or {}
    attention = (states.get("error", 0) + data["open_conflicts"] + notes.get("failed", 0)
                 + notes.get("unknown", 0))
    raise typer.Exit(ExitCode.ROWS_NEED_ATTENTION if attention else ExitCode.OK)


@app.command()
def check(online: Annotated[bool, typer.Option(
        "--online", help="Also authenticate and check the dynamic attribute layout.")] = False
          ) -> None:
    """Validate the settings and the mapping file (and with --online, the API key)."""
    from sync.checks import run_checks

    lines = _guarded(lambda: run_checks(_settings(), online=online))
    for line in lines:
        warning = line.startswith("warning: ")
        text = escape(line)  # names from the CRM or the database may hold [brackets]
        out.print(f"[yellow]{text}[/]" if warning else f"[green]ok[/] {text}")


def _on_database(action: Callable[[Engine], str], *, create: bool = True) -> str:
    """Run `action` on CRM_SYNC_DATABASE_URL's engine, with the documented exit codes;
    create=False: a missing SQLite file is not created (make_engine)."""
    from sync.store import make_engine

    def go() -> str:
        engine = make_engine(_settings().database_url, create=create)
        try:
            return action(engine)
        finally:
            engine.dispose()

    return _guarded(go)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to CRM_SYNC_DATABASE_URL."""
    from sync.store.migrate import current_revision, upgrade

    def go(engine: Engine) -> str:
        upgrade(engine)
        return str(current_revision(engine))

    out.print(f"database at revision {_on_database(go)}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of CRM_SYNC_DATABASE_URL."""
    from sync.store import missing_sqlite_file
    from sync.store.migrate import current_revision, head_revision

    missing = _guarded(lambda: missing_sqlite_file(_settings().database_url))
    if missing is not None:  # reading it must not leave an empty file behind
        out.print(f"(no database: the SQLite file {escape(str(missing))} does not exist yet) "
                  f"(head: {head_revision()})")
        return
    out.print(_on_database(
        lambda engine: f"{current_revision(engine) or '(empty)'} (head: {head_revision()})",
        create=False))


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    contacts: Annotated[int, typer.Option(help="Seeded Vietnamese contacts.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for data and faults.")] = 1,
    api_key: Annotated[str, typer.Option(help="The API key it accepts.")] = "demo-key",
    page_size_cap: Annotated[int, typer.Option(help="Largest page it serves.")] = 100,
    order: Annotated[str, typer.Option(help="created|updated_desc|public_id|random")] =
    "created",
    add_more_delay: Annotated[float, typer.Option(help="Seconds before add-more shows.")] = 0.2,
    add_more_drop_rate: Annotated[float, typer.Option(help="Add-more items dropped.")] = 0.0,
    latency: Annotated[float, typer.Option(help="Seconds added to each call.")] = 0.0,
    error_500_rate: Annotated[float, typer.Option(help="Fraction of 500s.")] = 0.0,
    rate_429_rate: Annotated[float, typer.Option(help="Fraction of 429s.")] = 0.0,
    timeout_rate: Annotated[float, typer.Option(help="Fraction of hung calls.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Fraction of broken bodies.")] = 0.0,
    token_ttl: Annotated[float, typer.Option(help="Token lifetime in seconds.")] = 86400.0,
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH",
        help="Keep the contacts in this SQLite file (loaded at start instead of seeding if it "
             "holds any, written through on every change). Tokens, pending add-more items, "
             "notes and stats stay in memory.")] = None,
) -> None:
    """Serve the OMICall emulator (the API contract) for demos and tests.

    Its contacts live in memory, or in a SQLite file with --db."""
    from sync.emulator import Emulator, EmulatorConfig, serve

    logs.configure("auto", "info")
    try:
        emu = Emulator(EmulatorConfig(
            api_key=api_key, contacts=contacts, seed=seed, page_size_cap=page_size_cap,
            order=order, add_more_delay=add_more_delay, add_more_drop_rate=add_more_drop_rate,
            latency=latency, error_500_rate=error_500_rate, rate_429_rate=rate_429_rate,
            timeout_rate=timeout_rate, malformed_rate=malformed_rate, token_ttl=token_ttl,
            db_path=db))
    except ValueError as exc:  # a bad knob, or a --db file that cannot be used
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(ExitCode.CONFIG) from None
    live = sum(1 for _ in emu.store.live())
    where = f" in {escape(db)}" if db else ""
    err.print(f"OMICall emulator on http://{host}:{port} ({live} contacts{where}, "
              f"key {api_key!r})")
    serve(emu, host=host, port=port)


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(help="Sample contacts in the emulator.")] = 60,
    database: Annotated[str, typer.Option(help="SQLite file for the demo.")] = "crm-sync-demo.db",
) -> None:
    """Run real sync cycles against the emulator into a fresh SQLite file, telling the story.

    The emulator starts with sample Vietnamese contacts; the local table goes into the
    --database file."""
    from sync.demo import run_demo

    logs.configure("console", "warning")
    raise typer.Exit(_guarded(lambda: run_demo(out, contacts=contacts, database=database)))


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"crm-sync {__version__}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # outside Typer's own handling, which exits 130 without a word
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # Ctrl-C; a cycle writes one transaction a chunk: each is whole
            err.print("interrupted: nothing is left half-applied; the next cycle carries on")
        raise
