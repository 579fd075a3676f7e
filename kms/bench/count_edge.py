"""``python -m kms.bench.count_edge N [--stub-hsm] [--sequential]``: exactly N signed XKS
encrypts (after a warm-up of 400) through ``kms serve``'s ASGI application in-process, 32
coroutines on uvloop, audit records committed by the writer process as ``kms serve`` does,
and nothing timed: the ``edge`` part of ``python -m kms.bench.micro`` for instruction
counts, which stay put when the machine's speed does not (docs/benchmarks-history.md, fifteenth
pass):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.N \\
        .venv/bin/python -m kms.bench.count_edge N --stub-hsm

run for N = 2000 and N = 0; the difference of the two totals over 2000 is the cost of one
request. ``--stub-hsm`` answers the HSM call with a constant (SoftHSM's own instructions
out of the count).

``--sequential`` (sixteenth pass) counts the request path alone, the same from run to run
within about 1 %: one request at a time, the audit append answered at once (no writer, no
batching), and the time-based refreshes held off after the warm-up (the epoch file's
``stat()`` every 2 ms and the epoch's re-read every 0.25 s would otherwise fall on far more
requests under valgrind, 50 times slower, than at full speed). Without it the count moves
by ±5 % between runs with how the writer's batches fall."""

from __future__ import annotations

import asyncio
import sys

from kms.audit.event import cli_actor
from kms.bench.local_runtime import local_runtime
from kms.bench.micro import USAGE, constant_encrypt, edge_calls, edge_request, run_on_uvloop
from kms.metrics import InstrumentedHsm

WARM_UP = 400
WORKERS = 32


class _AnsweredAudit:
    """``--sequential``: the audit append answered at once (what the front door awaits)."""

    async def append_async(self, event: object) -> int:
        return 0


def main(argv: list[str]) -> int:
    from kms.app import KmsApp, create_app
    from kms.keys import state_cache

    count = int(argv[0]) if argv else 2000
    sequential = "--sequential" in argv
    with local_runtime(audit_writer="thread" if sequential else "process") as (rt, _):
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

        async def in_turn(n: int) -> None:
            for j in range(n):
                await edge_request(app, calls[j % len(calls)])

        async def go() -> None:
            if sequential:
                assert isinstance(app, KmsApp) and app.xks is not None
                app.xks.audit = _AnsweredAudit()  # type: ignore[assignment]  # the await only
                await in_turn(WARM_UP)
                state_cache.STAT_REUSE_S = 1e9  # this process only
                setattr(rt.cache._epoch, "_interval", 1e9)  # noqa: B010
                await in_turn(count)
                return
            rt.audit.attach_loop()
            if not await rt.audit.writer_ready(30.0):
                raise RuntimeError("the audit writer process did not start")
            await run(WARM_UP)
            await run(count)

        run_on_uvloop(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
