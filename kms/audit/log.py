"""The audit log in the database: durable appends with group commit, and signed checkpoints.

* ``append`` blocks until the record is committed (SQLite ``synchronous=FULL``, PostgreSQL
  commit) and returns its sequence number; if it cannot be written it raises
  :class:`DependencyTimeoutError` and the operation it records must fail (fail closed).
* One writer thread per process drains a queue and commits everything waiting as one
  transaction (group commit). Several processes append through one sequencer: the
  ``audit_head`` row, locked with ``SELECT ... FOR UPDATE`` on PostgreSQL and by
  ``BEGIN IMMEDIATE`` on SQLite, so the log has no gap and no fork.
* The head row carries the Merkle compact range, so the root for the current size costs
  O(log n), never a rescan.
* Checkpoints (C2SP tlog-checkpoint signed notes, signed by the HSM's EC P-256 key) are
  made on demand and every ``interval`` seconds, even without traffic (a quiet log gets
  its latest checkpoint re-signed with a fresh time).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from kms.audit import checkpoint as cp
from kms.audit import merkle
from kms.audit.event import AuditEvent
from kms.audit.record import ChainHead, build_record, encode, format_time, record_hash
from kms.clock import Clock, iso
from kms.db import schema as t
from kms.db.engine import is_sqlite, read_only
from kms.errors import DependencyTimeoutError

MAX_BATCH = 512
_log = logging.getLogger("kms.audit")
APPEND_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    last_hash: str
    frontier: merkle.CompactRange

    def chain_head(self) -> ChainHead | None:
        return None if self.size == 0 else ChainHead(self.size - 1, self.last_hash)


def init_head(conn: Connection) -> None:
    """Create the head row of an empty log (idempotent; run by ``kms init``)."""
    if conn.execute(select(t.audit_head.c.id)).first() is None:
        conn.execute(t.audit_head.insert().values(
            id=1, size=0, last_hash="0" * 64, frontier=merkle.CompactRange().to_bytes()))


class AuditLog:
    """An :class:`~kms.audit.event.AuditSink` over the database, with checkpoints."""

    def __init__(self, engine: Engine, clock: Clock, *, origin: str, key_name: str,
                 public_key_pem: bytes, sign: cp.Signer,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self._engine = engine
        self._pg = not is_sqlite(str(engine.url))
        self._clock = clock
        self.origin = origin
        self.key_name = key_name
        self.public_key_pem = public_key_pem
        self._key_id = cp.key_id_from_pem(public_key_pem)
        self._sign = sign
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[tuple[AuditEvent, Future[int]] | None] = (
            queue.SimpleQueue())
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer",
                                        daemon=True)
        self._writer.start()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # -- appending --------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> int:
        return self.submit(event).result(timeout=APPEND_TIMEOUT_S)

    def submit(self, event: AuditEvent) -> Future[int]:
        """Queue an event; the future resolves to its seq once durable (for async callers)."""
        fut: Future[int] = Future()
        self._queue.put((event, fut))
        return fut

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            started = time.perf_counter()
            try:
                first = self._commit([e for e, _ in batch])
            except Exception:  # any failure: every waiter fails closed
                err = DependencyTimeoutError("the audit log could not be written")
                for _, fut in batch:
                    fut.set_exception(err)
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            for i, (_, fut) in enumerate(batch):
                fut.set_result(first + i)

    def _lock_head(self, conn: Connection) -> Head:
        q = select(t.audit_head).where(t.audit_head.c.id == 1)
        if self._pg:
            q = q.with_for_update()
        row = conn.execute(q).one()
        return Head(int(row.size), row.last_hash, merkle.CompactRange.from_bytes(row.frontier))

    def _commit(self, events: list[AuditEvent]) -> int:
        with self._engine.begin() as conn:
            head = self._lock_head(conn)
            chain = head.chain_head()
            frontier = head.frontier
            now = format_time(self._clock())  # one time for the whole batch
            rows = []
            for e in events:
                record = build_record(
                    chain, time=now, op=e.op, outcome=e.outcome, actor=e.actor,
                    key_id=e.key_id, key_version=e.key_version, store=e.store, error=e.error,
                    request=e.request, context_hash=e.context_hash, latency_us=e.latency_us,
                    detail=e.detail)
                body = encode(record)
                leaf = merkle.leaf_hash(body)
                frontier.append(leaf)
                chain = ChainHead(record.seq, record_hash(body))
                rows.append({"seq": record.seq, "body": body, "leaf_hash": leaf})
            conn.execute(t.audit_records.insert(), rows)
            assert chain is not None
            conn.execute(update(t.audit_head).where(t.audit_head.c.id == 1).values(
                size=frontier.size, last_hash=chain.record_hash, frontier=frontier.to_bytes()))
        return head.size

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> Head:
        with read_only(self._engine) as conn:
            row = conn.execute(select(t.audit_head).where(t.audit_head.c.id == 1)).one()
        return Head(int(row.size), row.last_hash, merkle.CompactRange.from_bytes(row.frontier))

    def records(self, start: int = 0, stop: int | None = None,
                chunk: int = 5000) -> Iterator[bytes]:
        """Canonical record bytes in seq order, read in chunks."""
        seq = start
        while stop is None or seq < stop:
            with read_only(self._engine) as conn:
                q = (select(t.audit_records.c.seq, t.audit_records.c.body)
                     .where(t.audit_records.c.seq >= seq).order_by(t.audit_records.c.seq)
                     .limit(chunk if stop is None else min(chunk, stop - seq)))
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield bytes(r.body)
            seq = int(rows[-1].seq) + 1

    def leaf_hashes(self, stop: int) -> list[bytes]:
        with read_only(self._engine) as conn:
            rows = conn.execute(select(t.audit_records.c.leaf_hash)
                                .where(t.audit_records.c.seq < stop)
                                .order_by(t.audit_records.c.seq)).all()
        return [bytes(r.leaf_hash) for r in rows]

    def checkpoints(self) -> list[str]:
        with read_only(self._engine) as conn:
            rows = conn.execute(select(t.audit_checkpoints.c.note)
                                .order_by(t.audit_checkpoints.c.size)).all()
        return [r.note for r in rows]

    def latest_checkpoint(self) -> tuple[str, str] | None:
        """(note, created_at) of the largest checkpoint, if any."""
        with read_only(self._engine) as conn:
            row = conn.execute(select(t.audit_checkpoints)
                               .order_by(t.audit_checkpoints.c.size.desc()).limit(1)).first()
        return None if row is None else (row.note, row.created_at)

    def check_integrity(self) -> None:
        """Start-up check: the head row matches the record it names (fail closed).

        The record at ``size - 1`` is looked up by seq, not as "the latest record": another
        process (a replica, a CLI) may commit records between the two reads, and a
        "latest" read would then fail a sound log. Records and head commit together, so
        the record the head names is always visible once the head is.
        """
        head = self.head()
        with read_only(self._engine) as conn:
            if head.size == 0:
                first = conn.execute(select(t.audit_records.c.seq).limit(1)).first()
                if first is None or self.head().size > 0:
                    return
                raise DependencyTimeoutError("the audit log head does not match its records")
            last = conn.execute(select(t.audit_records.c.body)
                                .where(t.audit_records.c.seq == head.size - 1)).first()
        if (last is None or record_hash(bytes(last.body)) != head.last_hash
                or head.frontier.size != head.size):
            raise DependencyTimeoutError("the audit log head does not match its records")

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign a checkpoint for the current size now; returns the signed note."""
        head = self.head()
        now = self._clock()
        body = cp.format_checkpoint(cp.Checkpoint(
            origin=self.origin, size=head.size, root=head.frontier.root(), time=iso(now)))
        note = cp.sign_note(body, self.key_name, self._key_id, self._sign)
        with self._engine.begin() as conn:
            exists = conn.execute(select(t.audit_checkpoints.c.size)
                                  .where(t.audit_checkpoints.c.size == head.size)).first()
            if exists:
                conn.execute(update(t.audit_checkpoints)
                             .where(t.audit_checkpoints.c.size == head.size)
                             .values(note=note, created_at=iso(now)))
            else:
                conn.execute(t.audit_checkpoints.insert().values(
                    size=head.size, note=note, created_at=iso(now)))
        return note

    def start_checkpointing(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.checkpoint()
                except Exception:  # HSM or database away: the next tick tries again
                    _log.warning("audit checkpoint failed; retrying next interval")

        self._checkpointer = threading.Thread(target=loop, name="audit-checkpoints",
                                              daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._writer.join(timeout=5)
