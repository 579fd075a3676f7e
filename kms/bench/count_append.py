"""``python -m kms.bench.count_append N [--asyncio]``: exactly N durable audit appends from
each of 32 coroutines (after a warm-up of 20) through ``AuditLog.append_async``, committed
by the writer process as ``kms serve`` does, on uvloop as ``kms serve`` runs, and nothing
timed: for instruction counts of the serving process's side of one audit record, which
stay put when the machine's speed does not (docs/benchmarks-history.md, seventeenth pass):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.N \\
        .venv/bin/python -m kms.bench.count_append N

run for N = 600 and N = 300; the difference of the two totals over 9,600 (32 times 300) is
one record's cost in the serving process (valgrind does not follow the writer process, a
program of its own, unless told to). ``--asyncio`` runs the coroutines on asyncio's own
event loop instead. Prints the number of records appended; fails if the log does not hold
exactly those."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from kms.bench.audit_bench import bench_event, serving_log
from kms.bench.local_runtime import local_runtime

WARM_UP = 20
WRITERS = 32


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv and argv[0].isdigit() else 300
    run = asyncio.run if "--asyncio" in argv else uvloop.run
    with local_runtime() as (rt, _env):
        log = serving_log(rt.engine, rt.clock)
        event = bench_event()
        before = log.head().size

        async def go() -> list[int]:
            log.attach_loop()
            try:
                seqs = [await log.append_async(event) for _ in range(WARM_UP)]

                async def writer() -> list[int]:
                    return [await log.append_async(event) for _ in range(count)]

                for part in await asyncio.gather(*(writer() for _ in range(WRITERS))):
                    seqs += part
                return seqs
            finally:
                log.close()

        seqs = run(go())
        appended = log.head().size - before
    expected = WARM_UP + WRITERS * count
    if appended != expected or sorted(seqs) != list(range(before, before + expected)):
        print(f"count_append: {appended} records in the log, {expected} expected",
              file=sys.stderr)
        return 1
    print(f"count_append: {appended} records appended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
