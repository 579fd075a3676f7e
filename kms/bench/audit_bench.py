"""Audit log: durable appends per second under 32 concurrent writers (group commit), and
offline verification speed over a synthetic export; ``commit_floor`` measures what the disk
alone allows the append figure to reach (docs/audit.md, "Performance")."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Engine

from kms.audit import checkpoint as cp
from kms.audit import merkle
from kms.audit.event import AuditEvent
from kms.audit.export_format import write_export
from kms.audit.log import AuditLog
from kms.audit.record import (
    Actor,
    ActorKind,
    ChainHead,
    Operation,
    Outcome,
    RequestMetadata,
    build_record,
    encode,
    record_hash,
)
from kms.audit.verify import verify_export
from kms.clock import Clock

#: the checkpoint key of the benches' own audit logs (their checkpoints are never signed)
BENCH_PEM = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def bench_event() -> AuditEvent:
    """The record every audit bench appends (an XKS encrypt, as kms serve writes one: its
    detail the read-only empty mapping the XKS handler gives an event without one, so that
    the benches take the writer wire's path for it; eighteenth pass)."""
    return AuditEvent(op=Operation.XKS_ENCRYPT, outcome=Outcome.OK,
                      actor=Actor(kind=ActorKind.XKS_CREDENTIAL, id="BENCHAKIDBENCHAKID22"),
                      key_id="bench-key", key_version=1, store="default",
                      request=RequestMetadata(kmsRequestId="r", kmsOperation="Encrypt"),
                      context_hash="0" * 64, latency_us=100, detail=MappingProxyType({}))


def serving_log(engine: Engine, clock: Clock) -> AuditLog:
    """An audit log as kms serve's (its records committed by the writer process once a loop
    is attached), signing checkpoints with nothing: what the serving-path benches append to."""
    return AuditLog(engine, clock, origin="bench/audit", key_name="bench/audit",
                    public_key_pem=BENCH_PEM, sign=lambda _m: b"", writer="process")


def append_rate(log: AuditLog, seconds: float, writers: int = 32) -> dict[str, float]:
    """32 threads calling ``append`` in a closed loop (the library's path, as in the CLI:
    the log's writer thread commits)."""
    event = bench_event()
    counts = [0] * writers
    stop = time.perf_counter() + seconds

    def writer(i: int) -> None:
        while time.perf_counter() < stop:
            log.append(event)
            counts[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": round(sum(counts) / (time.perf_counter() - start), 1), "writers": writers}


def append_rate_serving(engine: Engine, clock: Clock, seconds: float,
                        writers: int = 32) -> dict[str, float]:
    """``kms serve``'s path: 32 coroutines on one event loop awaiting ``append_async`` in a
    closed loop, the log attached to that loop with its writer process
    (KMS_AUDIT_WRITER=process, the default); uvloop, as kms serve runs on."""
    log = serving_log(engine, clock)
    event = bench_event()
    counts = [0] * writers

    async def main() -> float:
        log.attach_loop()
        try:
            await log.append_async(event)  # the writer process is up
            stop = time.perf_counter() + seconds

            async def writer(i: int) -> None:
                while time.perf_counter() < stop:
                    await log.append_async(event)
                    counts[i] += 1

            start = time.perf_counter()
            await asyncio.gather(*(writer(i) for i in range(writers)))
            return time.perf_counter() - start
        finally:
            log.close()

    elapsed = uvloop.run(main())
    return {"rps": round(sum(counts) / elapsed, 1), "writers": writers}


def commit_floor(seconds: float = 2.0, rows: int = 32) -> dict[str, float]:
    """The disk's share of ``append_rate``: back-to-back SQLite commits of ``rows`` audit-
    sized rows (WAL, synchronous=FULL, the pragmas of kms/db/engine.py) from one thread,
    with no Python work between them. ``bound_rps`` = rows / mean commit time is the most
    ``rows`` closed-loop writers could append per second on this disk, whatever the code
    does (each writer waits for a commit to be durable before it appends again)."""
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "floor.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, body BLOB, leaf BLOB)")
            conn.execute("CREATE TABLE h (id INTEGER PRIMARY KEY, size INTEGER)")
            conn.execute("INSERT INTO h VALUES (1, 0)")
            sql = "INSERT INTO r VALUES " + ",".join(["(?,?,?)"] * rows)  # noqa: S608
            body, leaf = b"x" * 480, b"y" * 32
            seq = 0
            times: list[float] = []

            def commit() -> None:
                nonlocal seq
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("SELECT size FROM h WHERE id = 1").fetchone()
                conn.execute(sql, [v for i in range(seq, seq + rows) for v in (i, body, leaf)])
                conn.execute("UPDATE h SET size = ? WHERE id = 1", (seq + rows,))
                conn.execute("COMMIT")
                seq += rows
                times.append(time.perf_counter() - start)

            warm = time.perf_counter() + seconds / 4  # let the WAL reach its working size
            while time.perf_counter() < warm:
                commit()
            times.clear()
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop:
                commit()
        finally:
            conn.close()
    times.sort()
    mean = sum(times) / len(times)
    return {"rows": rows, "commit_ms_mean": round(mean * 1e3, 3),
            "commit_ms_p50": round(times[len(times) // 2] * 1e3, 3),
            "commit_ms_p99": round(times[int(len(times) * 0.99)] * 1e3, 3),
            "bound_rps": round(rows / mean, 1)}


def _synthetic(n: int, origin: str, key: ec.EllipticCurvePrivateKey,
               every: int) -> tuple[list[bytes], list[str]]:
    actor = Actor(kind=ActorKind.XKS_CREDENTIAL, id="BENCHAKIDBENCHAKID22")
    now = datetime.now(UTC)
    head: ChainHead | None = None
    frontier = merkle.CompactRange()
    records: list[bytes] = []
    notes: list[str] = []
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    kid = cp.key_id_from_pem(pem)

    def sign(message: bytes) -> bytes:
        return key.sign(message, ec.ECDSA(hashes.SHA256()))

    for i in range(n):
        rec = build_record(head, time=now, op=Operation.XKS_DECRYPT, outcome=Outcome.OK,
                           actor=actor, key_id="bench-key", key_version=1, store="default",
                           request=RequestMetadata(kmsRequestId=f"req-{i}",
                                                   kmsOperation="Decrypt"),
                           context_hash="0" * 64, latency_us=120)
        body = encode(rec)
        records.append(body)
        frontier.append(merkle.leaf_hash(body))
        head = ChainHead(rec.seq, record_hash(body))
        if (i + 1) % every == 0 or i + 1 == n:
            text = cp.format_checkpoint(cp.Checkpoint(origin, frontier.size, frontier.root()))
            notes.append(cp.sign_note(text, origin, kid, sign))
    return records, notes


def verify_rate(n: int) -> dict[str, float]:
    origin = "bench.local/audit"
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    records, notes = _synthetic(n, origin, key, every=10_000)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "export"

        def stream() -> Iterator[bytes]:
            yield from records

        write_export(out, stream(), notes, pem, origin, origin)
        start = time.perf_counter()
        report = verify_export(out, pem)
        elapsed = time.perf_counter() - start
    if report.status != "valid":
        raise RuntimeError(f"synthetic export did not verify: {report.status}")
    return {"rps": round(n / elapsed, 1), "records": n}
