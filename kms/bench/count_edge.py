"""``python -m kms.bench.count_edge N [--stub-hsm]``: exactly N signed XKS encrypts (after a
warm-up of 400) through ``kms serve``'s ASGI application in-process, 32 coroutines on
uvloop, audit records committed by the writer process as ``kms serve`` does, and nothing
timed. For instruction counts, which stay put when the machine's speed does not
(docs/benchmarks.md, fifteenth pass):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=cg.N \\
        .venv/bin/python -m kms.bench.count_edge N --stub-hsm

run for N = 2000 and N = 0; the difference of the two totals over 2000 is the cost of one
request. ``--stub-hsm`` answers the HSM call with a constant (SoftHSM's own instructions
out of the count)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from kms.audit.event import cli_actor
from kms.bench.local_runtime import local_runtime
from kms.bench.micro import USAGE, _xks_credential
from kms.bench.xks_load import encrypt_body, presign
from kms.metrics import InstrumentedHsm

WARM_UP = 400
WORKERS = 32


class _Receive:
    """What uvicorn hands the app when it holds the whole body (no body timer then)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.more_body = False
        self.waiting_for_100_continue = False

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.body, "more_body": False}


def main(argv: list[str]) -> int:
    import uvloop

    from hsm.types import GcmCiphertext
    from kms.app import create_app

    count = int(argv[0]) if argv else 2000
    with local_runtime(audit_writer="process") as (rt, _):
        rt.keys.create_key("micro", USAGE, cli_actor("bench"))
        url, akid, secret = _xks_credential(rt)
        calls = []
        for p in presign(url, akid, secret,
                         [encrypt_body(os.urandom(32), "micro") for _ in range(400)]):
            headers = [(b"host", b"127.0.0.1:8000")]
            headers += [(k.lower().encode(), v.encode()) for k, v in p.headers.items()]
            calls.append(({"type": "http", "method": "POST", "path": p.path,
                           "raw_path": p.path.encode(), "query_string": b"",
                           "headers": headers, "client": ("10.0.0.1", 40000)}, p.body))
        app = create_app(rt, background=False)
        if "--stub-hsm" in argv:
            assert isinstance(rt.hsm, InstrumentedHsm)

            def constant(label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
                return GcmCiphertext(iv=os.urandom(12), ciphertext=bytes(len(plaintext)),
                                     tag=bytes(16))

            setattr(rt.hsm.inner, "encrypt", constant)  # noqa: B010  # this process only

        async def one(i: int) -> None:
            scope, body = calls[i % len(calls)]
            status: list[object] = []

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])

            await app(dict(scope), _Receive(body).receive, send)  # type: ignore[arg-type]
            if status != [200]:
                raise RuntimeError(f"XKS encrypt answered {status}")

        async def run(n: int) -> None:
            async def worker(k: int) -> None:
                for j in range(k, n, WORKERS):
                    await one(j)

            await asyncio.gather(*(worker(k) for k in range(WORKERS)))

        async def go() -> None:
            rt.audit.attach_loop()
            if not await rt.audit.writer_ready(30.0):
                raise RuntimeError("the audit writer process did not start")
            await run(WARM_UP)
            await run(count)

        uvloop.install()
        asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
