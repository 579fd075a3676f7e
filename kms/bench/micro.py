"""In-process measurements behind docs/benchmarks-history.md (second pass on), for effects
smaller than the run-to-run noise of the HTTP figures: ``python -m kms.bench.micro`` prints them.

- ``hsm``: one 32-byte AES-GCM encrypt through ``Pkcs11Hsm``, ``InstrumentedHsm`` and
  ``KeyService`` (minimum and median of repeated batches of calls);
- ``envelope``: our uncached 1 KiB envelope encrypt and a bare ``Pkcs11Hsm.encrypt``
  timed alternately in one loop (so both see the same machine), p10 and median;
- ``xks``: one signed XKS encrypt through ``XksHandler.process`` (SigV4, parsing, key
  state, the HSM call, the audit event; no HTTP, no audit append), the same request with a
  wrong signature, and the audit record encoding of that event (``encode_fields``; in the
  writer process: rebuilding the objects first, as before 0373216, and ``encode_values``);
- ``batches``: 32 audit writer threads for 3 s: records/s, mean group-commit batch size and
  commit time (from the ``kms_audit_*`` histograms the runtime feeds); then kms serve's
  path for 3 s: 32 coroutines on a loop with the audit writer process, records/s;
- ``edge``: kms serve's XKS path in-process: signed encrypts through the ASGI app (the
  front door, ``XksHandler``, the audit append through the writer process), 32 coroutines
  on one uvloop loop, no sockets or HTTP parsing: event-loop CPU per request and requests/s,
  rounds alternating with the HSM call replaced by a constant (in this process only: a
  diagnosis of the HSM call's share of the loop, docs/benchmarks-history.md, eighth pass).

The parts share one fresh ``KMS_HOME`` (own SoftHSM token, SQLite), like ``kms bench``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hsm.types import GcmCiphertext
from kms.audit.event import cli_actor
from kms.bench import audit_bench
from kms.bench.local_runtime import local_runtime
from kms.envelope import EnvelopeEncryptor
from kms.envelope.context import context_digest
from kms.keys.local_keyring import LocalKeyring
from kms.keys.model import KeyUsage
from kms.metrics import REGISTRY, InstrumentedHsm
from kms.runtime import Runtime

if TYPE_CHECKING:
    from kms.bench.wrk import Prepared

CONTEXT = {"tenant": "bench", "purpose": "prompt-log"}
USAGE = frozenset({KeyUsage.ENCRYPT, KeyUsage.DECRYPT})


def per_call_us(fn: Callable[[], object], calls: int = 1000, batches: int = 12) -> str:
    fn()
    out = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) / calls * 1e6)
    return f"min {min(out):.1f} us, median {statistics.median(out):.1f} us"


def _label(rt: Runtime) -> str:
    version = rt.keys.cache.get("micro").version(1)
    assert version is not None
    return version.hsm_label


def hsm(rt: Runtime) -> None:
    label = _label(rt)
    instrumented = rt.hsm
    assert isinstance(instrumented, InstrumentedHsm)
    data, aad = os.urandom(32), b"a" * 40
    print("Pkcs11Hsm.encrypt      ", per_call_us(
        lambda: instrumented.inner.encrypt(label, data, aad)))
    print("InstrumentedHsm.encrypt", per_call_us(
        lambda: instrumented.encrypt(label, data, aad)))
    print("KeyService.encrypt     ", per_call_us(
        lambda: rt.keys.encrypt("micro", data, aad)))


def envelope(rt: Runtime, rounds: int = 3, calls: int = 3000) -> None:
    enc = EnvelopeEncryptor(LocalKeyring(rt.keys, cli_actor("bench")), "micro")
    instrumented = rt.hsm
    assert isinstance(instrumented, InstrumentedHsm)
    bare = instrumented.inner
    label = _label(rt)
    plaintext, data_key = os.urandom(1024), os.urandom(32)
    aad = b"x" * 40 + context_digest(CONTEXT)
    clock = time.perf_counter
    for _ in range(rounds):
        ours, hsm_only = [], []
        for _ in range(calls):
            t0 = clock()
            enc.encrypt(plaintext, CONTEXT)
            t1 = clock()
            bare.encrypt(label, data_key, aad)
            t2 = clock()
            ours.append(t1 - t0)
            hsm_only.append(t2 - t1)
        ours.sort()
        hsm_only.sort()
        p10, mid = calls // 10, calls // 2
        print(f"envelope uncached 1 KiB: p10 {ours[p10] * 1e6:.1f} us, median "
              f"{ours[mid] * 1e6:.1f} us | bare HSM encrypt: p10 "
              f"{hsm_only[p10] * 1e6:.1f} us, median {hsm_only[mid] * 1e6:.1f} us")


def batches(rt: Runtime, seconds: float = 3.0) -> None:
    """32 writer threads (the runtime reports every committed batch to the kms_audit_*
    histograms), then kms serve's path: 32 coroutines and the writer process."""
    def totals() -> tuple[float, float, float]:
        get = REGISTRY.get_sample_value
        return (get("kms_audit_batch_size_count") or 0.0,
                get("kms_audit_batch_size_sum") or 0.0,
                get("kms_audit_append_duration_seconds_sum") or 0.0)

    count0, records0, seconds0 = totals()
    rate = audit_bench.append_rate(rt.audit, seconds)["rps"]
    count1, records1, seconds1 = totals()
    count = count1 - count0
    print(f"audit append, 32 writers: {rate:,.0f} records/s in {count:,.0f} batches, "
          f"mean batch {(records1 - records0) / count:.1f} records, mean commit "
          f"{(seconds1 - seconds0) / count * 1000:.2f} ms")
    serving = audit_bench.append_rate_serving(rt.engine, rt.clock, seconds)["rps"]
    print(f"audit append, kms serve's path (32 coroutines, writer process): "
          f"{serving:,.0f} records/s")


def xks_credential(rt: Runtime, key: str = "micro") -> tuple[str, str, str]:
    """(URL of an XKS encrypt with ``key``, access key id, secret) of a credential added to
    the default store now."""
    import base64

    from kms.xks.credentials import Secret

    secret = Secret(base64.b64encode(os.urandom(32)).decode("ascii"))
    akid, _ = rt.credentials.add("default", None, secret, cli_actor("bench"))
    prefix = rt.registry.get_store("default").uri_prefix
    return (f"http://127.0.0.1:8000/{prefix}/kms/xks/v1/keys/{key}/encrypt", akid,
            secret.reveal())


def xks(rt: Runtime) -> None:
    from kms.audit.record import encode_fields
    from kms.bench.xks_load import encrypt_body, presign
    from kms.xks.handler import XksHandler, XksRequest

    url, akid, secret = xks_credential(rt)
    handler = XksHandler(rt.keys, rt.cache, rt.credentials, rt.hsm, rt.clock)

    def signed(key_secret: str) -> XksRequest:
        p = presign(url, akid, key_secret, [encrypt_body(os.urandom(32), "micro")])[0]
        headers = [("host", "127.0.0.1:8000")]
        headers += [(k.lower(), v) for k, v in p.headers.items()]
        return XksRequest(p.method, p.path, "", headers, p.body, "10.0.0.1")

    good, bad = signed(secret), signed("A" * 44)
    answer = handler.process(good)
    assert answer.status == 200 and answer.event is not None, answer.body
    event = answer.event
    print("XksHandler.process, encrypt      ", per_call_us(lambda: handler.process(good)))
    print("XksHandler.process, bad signature", per_call_us(lambda: handler.process(bad)))
    print("audit encode_fields (that event) ", per_call_us(lambda: encode_fields(
        1, "2026-11-27T00:00:00.000000Z", "0" * 64, event.op, event.outcome, event.actor,
        event.key_id, event.key_version, event.store, event.error, event.request,
        event.context_hash, event.latency_us, event.detail)))
    from kms.audit import writer_process as wp
    from kms.audit.commit import encode_event

    fields = wp._fields(event)  # what crosses to the writer process
    print("writer process: rebuild + encode  ", per_call_us(lambda: encode_event(
        1, "2026-11-27T00:00:00.000000Z", "0" * 64, wp._event(fields))))
    print("writer process: encode_values     ", per_call_us(lambda: wp._encode_wire(
        1, "2026-11-27T00:00:00.000000Z", "0" * 64, fields)))


Call = tuple[dict[str, object], bytes]  # an XKS request's ASGI scope and its body


def edge_calls(rt: Runtime, n: int = 400) -> list[Call]:
    """``n`` signed XKS encrypts of the "micro" key, as kms serve's app receives them."""
    from kms.bench.xks_load import encrypt_body, presign

    url, akid, secret = xks_credential(rt)
    return [asgi_call(p) for p in presign(
        url, akid, secret, [encrypt_body(os.urandom(32), "micro") for _ in range(n)])]


def asgi_call(p: Prepared) -> Call:
    """A prepared (signed) request as kms serve's app receives it from uvicorn."""
    headers = [(b"host", b"127.0.0.1:8000")]
    headers += [(k.lower().encode(), v.encode()) for k, v in p.headers.items()]
    return ({"type": "http", "method": "POST", "path": p.path, "raw_path": p.path.encode(),
             "query_string": b"", "headers": headers, "client": ("10.0.0.1", 40000)}, p.body)


def constant_encrypt(label: str, plaintext: bytes, aad: bytes) -> GcmCiphertext:
    """A stand-in for the HSM's encrypt (set on the bare HSM object of this process only):
    the XKS path's cost without SoftHSM's."""
    return GcmCiphertext(iv=os.urandom(12), ciphertext=bytes(len(plaintext)), tag=bytes(16))


class _Receive:
    """What uvicorn hands the app when it already holds the whole body (no body timer)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.more_body = False
        self.waiting_for_100_continue = False

    async def receive(self) -> dict[str, object]:
        return {"type": "http.request", "body": self.body, "more_body": False}


async def edge_request(app: Any, call: Call, expect: int | None = 200) -> int:
    """One request through ``app``, its status; raises unless it is ``expect`` (unless
    that is None)."""
    scope, body = call
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(dict(scope), _Receive(body).receive, send)
    if len(status) != 1 or (expect is not None and status[0] != expect):
        raise RuntimeError(f"XKS encrypt answered {status}")
    return status[0]


def edge(rt: Runtime, rounds: int = 3, per_worker: int = 200, workers: int = 32) -> None:
    import asyncio

    from kms.app import create_app

    calls = edge_calls(rt)
    app = create_app(rt, background=False)
    instrumented = rt.hsm
    assert isinstance(instrumented, InstrumentedHsm)
    bare = instrumented.inner

    async def one(i: int) -> None:
        await edge_request(app, calls[i % len(calls)])

    async def measure() -> tuple[float, float]:
        async def worker(k: int) -> None:
            for j in range(per_worker):
                await one(j * workers + k)

        cpu0, wall0 = time.thread_time(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(workers)))
        n = per_worker * workers
        return (time.thread_time() - cpu0) / n * 1e6, n / (time.perf_counter() - wall0)

    async def main() -> None:
        rt.audit.attach_loop()
        if not await rt.audit.writer_ready(10.0):
            raise RuntimeError("the audit writer process did not start")
        for i in range(200):  # warm-up: caches, the writer process
            await one(i)
        for _ in range(rounds):
            for stub in (False, True):
                if stub:
                    setattr(bare, "encrypt", constant_encrypt)  # noqa: B010  # this process
                try:
                    cpu, rps = await measure()
                finally:
                    if stub:
                        delattr(bare, "encrypt")
                what = "HSM call replaced by a constant" if stub else "real HSM call         "
                print(f"XKS edge in-process, {what}: event loop {cpu:.0f} us/request, "
                      f"{rps:,.0f} requests/s")

    run_on_uvloop(main())


def run_on_uvloop(coro: Any) -> None:
    """Run ``coro`` on a uvloop event loop, the loop kms serve runs on."""
    import asyncio

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


PARTS = {"hsm": hsm, "envelope": envelope, "xks": xks, "batches": batches, "edge": edge}


def main(argv: list[str]) -> int:
    names = argv or list(PARTS)
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)}; choose from {', '.join(PARTS)}",
              file=sys.stderr)
        return 2
    # One runtime for all parts: SoftHSM reads its configuration (the token directory) once
    # per process, so a second fresh KMS_HOME in the same process would not find its token.
    # kms serve's audit path: the edge part attaches its loop, which starts the writer
    # process; the parts before it, with no loop attached, commit through the writer thread.
    with local_runtime(audit_writer="process") as (rt, _):
        rt.keys.create_key("micro", USAGE, cli_actor("bench"))
        for name in names:
            PARTS[name](rt)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
