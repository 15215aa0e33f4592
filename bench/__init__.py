"""crm-sync's benchmark (not part of the installed package).

Run from the repository root, after `pip install -e '.[bench]'`:

    .venv/bin/python -m bench.run --sizes 20000,100000 --peers \\
        --pg postgresql+psycopg://postgres@127.0.0.1:5432/test --json bench-results.json

Modules:
    run.py       the orchestrator: emulator subprocess per size, one child per measurement,
                 the table, the targets, the JSON (see its docstring for what is measured)
    worker.py    the child process: runs one scenario, reports its result (and a profile)
    floor.py     the floor: the same pages fetched and JSON-decoded with plain httpx
    sync_run.py  crm-sync's scenarios: full pull, no-op cycle, push; phase timers
    peers.py     the naive hand-written script and dlt's rest_api source
    soak.py      the daemon's memory over hundreds of cycles (`python -m bench.soak`), with
                 edits on both sides between cycles; a tracemalloc diff on request
    soak_child.py    its measured process: `crm-sync run`'s daemon, a cycle per order
    soak_edits.py    its changes to both sides between cycles
    soak_figures.py  its growth figures, tables and tracemalloc diffs

Results and the machine they were measured on: docs/benchmarks.md.
"""
