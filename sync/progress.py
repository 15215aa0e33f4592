"""A progress bar for `crm-sync sync` and `resync` in a terminal."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sync.cycle import CycleOptions, CycleResult
from sync.runtime import Runtime


def run_with_progress(rt: Runtime, options: CycleOptions, console: Console) -> CycleResult:
    label = "dry run" if options.dry_run else options.kind
    with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("listing", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return asyncio.run(rt.cycle(options, progress=advance))
