"""``python -m kms.bench.count_edge N [--stub-hsm]``: exactly N signed XKS encrypts (after a
warm-up of 400) through ``kms serve``'s ASGI application in-process, 32 coroutines on
uvloop, audit records committed by the writer process as ``kms serve`` does, and nothing
timed: the ``edge`` part of ``python -m kms.bench.micro`` for instruction counts, which
stay put when the machine's speed does not (docs/benchmarks.md, fifteenth pass):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.N \\
        .venv/bin/python -m kms.bench.count_edge N --stub-hsm

run for N = 2000 and N = 0; the difference of the two totals over 2000 is the cost of one
request. ``--stub-hsm`` answers the HSM call with a constant (SoftHSM's own instructions
out of the count)."""

from __future__ import annotations

import asyncio
import sys

from kms.audit.event import cli_actor
from kms.bench.local_runtime import local_runtime
from kms.bench.micro import USAGE, constant_encrypt, edge_calls, edge_request, run_on_uvloop
from kms.metrics import InstrumentedHsm

WARM_UP = 400
WORKERS = 32


def main(argv: list[str]) -> int:
    from kms.app import create_app

    count = int(argv[0]) if argv else 2000
    with local_runtime(audit_writer="process") as (rt, _):
        rt.keys.create_key("micro", USAGE, cli_actor("bench"))
        calls = edge_calls(rt)
        app = create_app(rt, background=False)
        if "--stub-hsm" in argv:
            assert isinstance(rt.hsm, InstrumentedHsm)
            setattr(rt.hsm.inner, "encrypt", constant_encrypt)  # noqa: B010  # this process

        async def run(n: int) -> None:
            async def worker(k: int) -> None:
                for j in range(k, n, WORKERS):
                    await edge_request(app, calls[j % len(calls)])

            await asyncio.gather(*(worker(k) for k in range(WORKERS)))

        async def go() -> None:
            rt.audit.attach_loop()
            if not await rt.audit.writer_ready(30.0):
                raise RuntimeError("the audit writer process did not start")
            await run(WARM_UP)
            await run(count)

        run_on_uvloop(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
