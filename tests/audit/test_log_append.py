"""AuditLog appends (SQLite): group commit over the raw DB-API path, one sequencer for
several writers (as several processes would be), an invalid event failing alone, and the
log failing closed when the database refuses the write."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Engine

from kms.audit import merkle
from kms.audit.event import AuditEvent, cli_actor
from kms.audit.log import AuditLog, init_head
from kms.audit.record import (
    GENESIS_PREV,
    Actor,
    ActorKind,
    Operation,
    Outcome,
    RequestMetadata,
    decode,
    record_hash,
)
from kms.clock import system_clock
from kms.db.engine import make_engine
from kms.db.migrations import migrate
from kms.errors import DependencyTimeoutError
from tests.audit.timers import record_append_timers

PEM = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path / 'kms.db'}")
    migrate(engine)
    with engine.begin() as conn:
        init_head(conn)
    return engine


def _log(engine: Engine) -> AuditLog:
    return AuditLog(engine, system_clock, origin="test/audit", key_name="test/audit",
                    public_key_pem=PEM, sign=lambda _m: b"")


def _event(i: int) -> AuditEvent:
    return AuditEvent(op=Operation.XKS_ENCRYPT, outcome=Outcome.OK,
                      actor=Actor(kind=ActorKind.XKS_CREDENTIAL, id=f"AKID{i % 3}"),
                      key_id="k", key_version=1, store="default",
                      request=RequestMetadata(kmsRequestId=f"r-{i}", kmsOperation="Encrypt"),
                      context_hash="ab" * 32, latency_us=i)


def _check_log(log: AuditLog, expected: int) -> list[bytes]:
    bodies = list(log.records())
    assert len(bodies) == expected
    prev = GENESIS_PREV
    frontier = merkle.CompactRange()
    for seq, body in enumerate(bodies):
        rec = decode(body)  # canonical, schema-valid
        assert (rec.seq, rec.prev) == (seq, prev)
        prev = record_hash(body)
        frontier.append(merkle.leaf_hash(body))
    head = log.head()
    assert (head.size, head.last_hash) == (expected, prev if expected else "0" * 64)
    assert head.frontier == frontier
    assert log.leaf_hashes(expected) == [merkle.leaf_hash(b) for b in bodies]
    log.check_integrity()
    return bodies


def test_concurrent_appends_from_two_logs_share_one_chain(tmp_path: Path) -> None:
    """Two AuditLogs on two engines (two writer threads, as two processes would have)
    and 16 threads each: every seq returned once, no gap, one chain, head consistent."""
    logs = [_log(_engine(tmp_path)), _log(make_engine(f"sqlite:///{tmp_path / 'kms.db'}"))]
    per_thread = 40
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        log = logs[t % 2]
        mine = []
        for i in range(per_thread):
            e = _event(t * 1000 + i)
            mine.append(log.append(e) if i % 3 else log.submit(e).result(timeout=10))
        with lock:
            seqs.extend(mine)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(writer, range(32)))
    total = 32 * per_thread
    assert sorted(seqs) == list(range(total))
    bodies = _check_log(logs[0], total)
    ids = {decode(b).request.kmsRequestId for b in bodies}  # type: ignore[union-attr]
    assert ids == {f"r-{t * 1000 + i}" for t in range(32) for i in range(per_thread)}
    for log in logs:
        log.close()


def test_an_invalid_event_fails_alone(tmp_path: Path) -> None:
    log = _log(_engine(tmp_path))
    bad = AuditEvent(op=Operation.KEY_REVOKE, outcome=Outcome.OK, actor=cli_actor(),
                     key_version=0)  # versions start at 1: AuditRecord rejects it
    gate = threading.Lock()
    gate.acquire()
    real = log._commit

    def held(events: list[AuditEvent], before_commit: Any = None) -> list[int]:
        with gate:
            return real(events, before_commit)

    log._commit = held  # type: ignore[method-assign]
    # The first batch waits at the gate, so the next three are committed as one batch.
    futures = [log.submit(_event(0)), log.submit(bad), log.submit(_event(1)),
               log.submit(_event(2))]
    gate.release()
    results: list[int | None] = []
    for fut in futures:
        try:
            results.append(fut.result(timeout=10))
        except DependencyTimeoutError:
            results.append(None)
    assert results.count(None) == 1 and results[1] is None
    assert sorted(r for r in results if r is not None) == [0, 1, 2]
    _check_log(log, 3)
    log.close()


def test_append_fails_closed_when_the_database_refuses(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    log = _log(engine)
    assert log.append(_event(0)) == 0
    refuse = True

    def fail(*_a: object, **_k: object) -> None:
        if refuse:
            raise RuntimeError("disk on fire")

    real_raw = engine.raw_connection

    class Broken:
        def __init__(self) -> None:
            self.inner = real_raw()

        def cursor(self) -> object:
            cur = self.inner.cursor()

            class C:
                def execute(self, sql: str, params: Any = ()) -> object:
                    if sql.startswith("INSERT"):
                        fail()
                    return cur.execute(sql, params)

                def fetchone(self) -> object:
                    return cur.fetchone()

            return C()

        def commit(self) -> None:
            self.inner.commit()

        def close(self) -> None:
            self.inner.close()

        def invalidate(self) -> None:
            self.inner.invalidate()

    engine.raw_connection = Broken  # type: ignore[method-assign, assignment]
    with pytest.raises(DependencyTimeoutError):
        log.append(_event(1))
    with pytest.raises(DependencyTimeoutError):
        log.submit(_event(2)).result(timeout=10)
    refuse = False
    assert log.append(_event(3)) == 1  # the failed batches left nothing behind
    engine.raw_connection = real_raw  # type: ignore[method-assign]
    _check_log(log, 2)
    log.close()


def test_a_cancelled_future_does_not_stop_the_writer(tmp_path: Path) -> None:
    """asyncio.wrap_future cancels the Future when the request is cancelled (client gone):
    the writer must keep going (the record itself is committed)."""
    log = _log(_engine(tmp_path))
    gate = threading.Lock()
    gate.acquire()
    real = log._commit

    def held(events: list[AuditEvent], before_commit: Any = None) -> list[int]:
        with gate:
            return real(events, before_commit)

    log._commit = held  # type: ignore[method-assign]
    first = log.submit(_event(0))
    cancelled = log.submit(_event(1))
    assert cancelled.cancel()
    gate.release()
    assert first.result(timeout=10) == 0
    assert log.append(_event(2)) == 2
    _check_log(log, 3)
    log.close()


def test_append_async_from_many_coroutines_and_an_invalid_one(tmp_path: Path) -> None:
    """``append_async`` (the XKS edge's path): 200 coroutines on one loop get distinct,
    gap-free seqs, woken per batch; an invalid event in the same batches fails alone
    with DependencyTimeoutError; and the loop is never blocked while they wait."""
    log = _log(_engine(tmp_path))
    bad = AuditEvent(op=Operation.KEY_REVOKE, outcome=Outcome.OK, actor=cli_actor(),
                     key_version=0)

    async def main() -> tuple[list[int], list[BaseException]]:
        results = await asyncio.gather(
            *(log.append_async(bad if i == 57 else _event(i)) for i in range(200)),
            return_exceptions=True)
        ok = [r for r in results if isinstance(r, int)]
        errors = [r for r in results if isinstance(r, BaseException)]
        return ok, errors

    ok, errors = asyncio.run(main())
    assert sorted(ok) == list(range(199))
    assert len(errors) == 1 and isinstance(errors[0], DependencyTimeoutError)
    _check_log(log, 199)
    log.close()


def test_the_appends_of_one_loop_iteration_share_one_timeout_timer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One APPEND_TIMEOUT_S timer per loop iteration's records (not one per record: each
    cost two operations on the loop's timer heap), cancelled once all are answered, an
    invalid event's refusal included; and freed then without the cyclic garbage collector
    (no waiter <-> deadline cycle left behind)."""
    import gc
    import weakref

    import kms.audit.log as log_module

    deadlines: list[weakref.ref[log_module._Deadline]] = []

    class Recorded(log_module._Deadline):
        __slots__ = ("__weakref__",)  # the test's, not the production class's

        def __init__(self, loop: asyncio.AbstractEventLoop,
                     waiters: list[log_module._LoopWaiter]) -> None:
            super().__init__(loop, waiters)
            deadlines.append(weakref.ref(self))

    monkeypatch.setattr(log_module, "_Deadline", Recorded)
    log = _log(_engine(tmp_path))
    bad = AuditEvent(op=Operation.KEY_REVOKE, outcome=Outcome.OK, actor=cli_actor(),
                     key_version=0)
    timers: list[asyncio.TimerHandle] = []

    async def main() -> list[int | BaseException]:
        record_append_timers(timers)
        return await asyncio.gather(
            *(log.append_async(bad if i == 3 else _event(i)) for i in range(40)),
            return_exceptions=True)

    gc.disable()
    try:
        results = asyncio.run(main())
        assert len(deadlines) == 1 and deadlines[0]() is None  # freed by reference counts
    finally:
        gc.enable()
    assert sorted(r for r in results if isinstance(r, int)) == list(range(39))
    assert isinstance(results[3], DependencyTimeoutError)
    assert len(timers) == 1 and timers[0].cancelled()
    _check_log(log, 39)
    log.close()


def test_append_async_fails_closed_when_the_writer_fails(tmp_path: Path) -> None:
    log = _log(_engine(tmp_path))

    def broken(events: list[AuditEvent], before_commit: Any = None) -> list[int]:
        raise RuntimeError("disk on fire")

    log._commit = broken  # type: ignore[method-assign]

    with pytest.raises(DependencyTimeoutError):
        asyncio.run(log.append_async(_event(0)))
    log.close()


def test_append_async_times_out_when_the_writer_hangs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that hangs (not one that fails) must not hold the request forever: the
    caller gets DependencyTimeoutError after APPEND_TIMEOUT_S, and the record, committed
    once the writer moves again, is not lost."""
    import kms.audit.log as log_module

    monkeypatch.setattr(log_module, "APPEND_TIMEOUT_S", 0.2)
    log = _log(_engine(tmp_path))
    gate = threading.Lock()
    gate.acquire()
    real = log._commit

    def held(events: list[AuditEvent], before_commit: Any = None) -> list[int]:
        with gate:
            return real(events, before_commit)

    log._commit = held  # type: ignore[method-assign]
    with pytest.raises(DependencyTimeoutError):
        asyncio.run(log.append_async(_event(0)))
    gate.release()
    assert log.append(_event(1)) == 1
    _check_log(log, 2)
    log.close()
