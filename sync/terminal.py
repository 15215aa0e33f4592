"""The command line's rich consoles: a terminal's own width; piped (to a file, journald,
grep), wide enough that lines and table cells come out whole instead of cut at 80 columns."""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["PIPED_WIDTH", "console"]

PIPED_WIDTH = 160


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH)
