"""`crm-sync notes ...`: the notes outbox's status, and the explicit re-send of `unknown` notes.

Registered in sync/cli.py with `app.add_typer(notes_app, name="notes")`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.markup import escape

from sync import logs
from sync.cycle import ExitCode
from sync.errors import ConfigError, CrmSyncError
from sync.mapping_file import load_mapping
from sync.notes import NotesOutbox
from sync.settings import load_settings
from sync.store import make_engine
from sync.store.local import LocalTable
from sync.store.migrate import check_schema
from sync.terminal import console

notes_app = typer.Typer(
    no_args_is_help=True,
    help="The notes outbox: local notes sent to CRM agents (add-note), at most once.\n\n"
         "Rows of the local notes table go out once; notes whose fate is unknown are only "
         "re-sent by `notes resend`.")
out = console()
err = console(stderr=True)
T = TypeVar("T")


@contextmanager
def _outbox() -> Iterator[NotesOutbox]:
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    spec = load_mapping(settings.mapping_file)
    if not spec.notes_table:
        raise ConfigError(f"{settings.mapping_file}: notes are disabled (notes_table: null)")
    db = make_engine(settings.database_url)
    try:
        check_schema(db)
        yield NotesOutbox(db, settings.tenant_id, spec, LocalTable.for_spec(spec))
    finally:
        db.dispose()


def _guarded(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(ExitCode.CONFIG) from None
    except CrmSyncError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(ExitCode.FAILURE) from None


@notes_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
           ) -> None:
    """Notes pending, in flight, sent, failed and unknown, with the latest problems.

    Exits 3 when some notes failed or are unknown."""
    def go() -> tuple[dict[str, int], list[dict[str, object]]]:
        with _outbox() as box:
            return box.counts(), box.problems()

    counts, problems = _guarded(go)
    if as_json:
        out.print_json(json.dumps({"counts": counts, "problems": problems}, default=str,
                                  ensure_ascii=False))
    else:
        out.print("notes: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        for p in problems:
            colour = "red" if p["status"] == "failed" else "yellow"
            out.print(f"  [{colour}]{p['status']}[/] note {p['note_id']}: "
                      f"{escape(str(p['last_error']))}", highlight=False, soft_wrap=True)
        if counts["unknown"]:
            out.print(f"{counts['unknown']} note(s) may or may not have reached the CRM: check "
                      "there, then `crm-sync notes resend` (all, or --id N for some).",
                      soft_wrap=True)
    attention = counts["failed"] + counts["unknown"]
    raise typer.Exit(ExitCode.ROWS_NEED_ATTENTION if attention else ExitCode.OK)


@notes_app.command("resend")
def resend(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list them.")] = False,
    ids: Annotated[list[int] | None, typer.Option(
        "--id", help="Only this note id (repeatable); default: every unknown note.")] = None,
) -> None:
    """Put notes whose fate is unknown back to pending: the next cycle sends them again.

    A note that did reach the CRM before will then show twice there."""
    def go() -> list[int]:
        with _outbox() as box:
            return box.resend_unknown(dry_run=dry_run, ids=ids)

    found = _guarded(go)
    shown = ", ".join(map(str, found[:50])) + (" ..." if len(found) > 50 else "")
    if not found:
        out.print("no unknown notes" + (" among the given ids" if ids else ""))
    elif dry_run:
        out.print(f"{len(found)} unknown note(s) would go back to pending: {shown}",
                  soft_wrap=True)
    else:
        out.print(f"{len(found)} note(s) back to pending, sent with the next cycle: {shown}",
                  soft_wrap=True)
