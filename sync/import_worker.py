"""`python -m sync.import_worker`: one worker of a first import's pool (import_pool.py).

Reads an ImportSetup, then batches of listed items, from stdin; writes `prepare_all`'s result
for each batch to stdout; exits at the end of stdin, which is also what it reads when the
cycle's process dies. Nothing else may write to stdout, so it is kept for the frames and the
file descriptor 1 is pointed at stderr: a stray print cannot corrupt a frame.
"""

from __future__ import annotations

import gc
import os
import sys

from sync.convert import Converter
from sync.import_pool import read_frame, write_frame
from sync.prepare import ImportSetup, prepare_all


def main() -> int:
    frames_in = sys.stdin.buffer
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # a batch's objects die with it: the cyclic collector would only walk them
    gc.set_threshold(50_000, 10, 10)
    setup = read_frame(frames_in)
    if not isinstance(setup, ImportSetup):
        return 0  # the end of stdin: the pool closed before the first batch
    conv = Converter(setup.spec)
    while isinstance(batch := read_frame(frames_in), list):
        write_frame(frames_out, prepare_all(batch, conv, setup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
