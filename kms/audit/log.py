"""The audit log in the database: durable appends with group commit, and signed checkpoints.

* ``append`` blocks until the record is committed (SQLite ``synchronous=FULL``, PostgreSQL
  commit) and returns its sequence number; if it cannot be written it raises
  :class:`DependencyTimeoutError` and the operation it records must fail (fail closed).
* One writer thread per process drains a queue and commits everything waiting as one
  transaction (group commit, kms/audit/commit.py); the callers of a committed batch are
  released just before the next batch's commit (see ``_write_loop``).
* With ``writer="process"`` (``kms serve``), once ``attach_loop`` has run on the serving
  event loop, that loop hands each iteration's records to a writer process and reads its
  answers itself (kms/audit/writer_process.py); callers on other threads join the loop's
  batches. The writer thread then serves only callers before the loop is attached or
  after it is gone.
* Several writers (processes, replicas, the CLI) append through one sequencer: the
  ``audit_head`` row, locked with ``SELECT ... FOR UPDATE`` on PostgreSQL and by
  ``BEGIN IMMEDIATE`` on SQLite, so the log has no gap and no fork.
* The head row carries the Merkle compact range, so the root for the current size costs
  O(log n), never a rescan.
* Checkpoints (C2SP tlog-checkpoint signed notes, signed by the HSM's EC P-256 key) are
  made on demand and every ``interval`` seconds, even without traffic (a quiet log gets
  its latest checkpoint re-signed with a fresh time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from kms.audit import checkpoint as cp
from kms.audit import merkle
from kms.audit.commit import BatchCommitter, encode_event
from kms.audit.event import AuditEvent
from kms.audit.record import ChainHead, record_hash
from kms.audit.writer_process import LoopChannel
from kms.clock import Clock, iso
from kms.db import schema as t
from kms.db.engine import read_only
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


class _Waiter:
    """What ``append`` blocks on: a bare lock, released by the writer (a Future costs a
    Condition, a waiter lock and a notify_all per record: the bulk of the per-record cost
    with 32 threads waiting)."""

    __slots__ = ("error", "lock", "seq")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.seq = -1
        self.error: BaseException | None = None

    def set_result(self, seq: int) -> None:
        self.seq = seq
        self.lock.release()

    def set_exception(self, error: BaseException) -> None:
        self.error = error
        self.lock.release()


class _LoopWaiter:
    """What ``append_async`` awaits: an asyncio future on its event loop.

    The writer never touches the future itself (it belongs to the loop's thread): it
    stores the outcome here, and ``_wake`` hands every waiter of a batch that shares a loop
    to that loop in ONE ``call_soon_threadsafe`` (one wake-up per batch instead of one per
    record, which is what ``asyncio.wrap_future`` would cost). ``deadline``: the timer of
    the loop iteration's records it was sent with (see _Deadline).
    """

    __slots__ = ("deadline", "error", "future", "loop", "seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[int] = loop.create_future()
        self.seq = -1
        self.error: BaseException | None = None
        self.deadline: _Deadline | None = None

    def set_exception(self, error: BaseException) -> None:  # _fail: wake this one alone
        self.error = error
        _wake({self.loop: [self]})


class _Deadline:
    """One APPEND_TIMEOUT_S timer for the waiters of one loop iteration's records (they
    were sent together, so they share a deadline): a timer per record cost a TimerHandle
    and two pushes and pops on the loop's heap, whose comparisons run in Python. Each
    waiter's answer counts down ``left``; the last one cancels the timer. A waiter answered
    twice, or never, only leaves the timer to fire, which fails only the futures not done.
    Each waiter drops its ``deadline`` when answered and the deadline its waiters when it
    fires, so no reference cycle outlives the batch: reference counting frees it, not the
    cyclic garbage collector."""

    __slots__ = ("left", "timer", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop, waiters: list[_LoopWaiter]) -> None:
        self.waiters = waiters
        self.left = len(waiters)
        for w in waiters:
            w.deadline = self
        self.timer = loop.call_later(APPEND_TIMEOUT_S, self.expire)

    def expire(self) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            _expire(w.future)


def _answered(w: _LoopWaiter) -> None:
    d = w.deadline
    if d is not None:
        w.deadline = None
        d.left -= 1
        if not d.left:
            d.timer.cancel()


def _deliver(waiters: list[_LoopWaiter]) -> None:
    """On the waiters' loop: resolve their futures (a cancelled one is skipped)."""
    for w in waiters:
        _answered(w)
        if w.future.done():
            continue
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(w.seq)


def _expire(future: asyncio.Future[int]) -> None:
    if not future.done():
        future.set_exception(DependencyTimeoutError(
            "the audit log did not commit the record in time"))


def _wake(by_loop: dict[asyncio.AbstractEventLoop, list[_LoopWaiter]]) -> None:
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_deliver, waiters)


def _fail(waiter: _Waiter | _LoopWaiter | Future[int], message: str) -> None:
    # A cancelled Future (asyncio.wrap_future cancels it when the request is cancelled)
    # refuses a result: nobody waits for it any more.
    with contextlib.suppress(InvalidStateError):
        waiter.set_exception(DependencyTimeoutError(message))


_Item = tuple[AuditEvent, "_Waiter | _LoopWaiter | Future[int]"]
_INVALID = "the audit record is not valid and was not written"


def _deliver_batch(token: object, seqs: list[int] | None, message: str) -> None:
    """On the attached loop: the writer process's answer for one batch (``token``: its
    waiters, in order). Futures are resolved right here: no thread hop."""
    waiters: list[_Waiter | _LoopWaiter | Future[int]] = token  # type: ignore[assignment]
    for i, w in enumerate(waiters):
        seq = -1 if seqs is None else seqs[i]
        if type(w) is _LoopWaiter:
            _answered(w)
            if not w.future.done():
                if seq >= 0:
                    w.future.set_result(seq)
                else:
                    w.future.set_exception(DependencyTimeoutError(
                        message if seqs is None else _INVALID))
        elif seq < 0:
            _fail(w, message if seqs is None else _INVALID)
        elif isinstance(w, _Waiter | Future):
            with contextlib.suppress(InvalidStateError):
                w.set_result(seq)


class AuditLog:
    """An :class:`~kms.audit.event.AuditSink` over the database, with checkpoints."""

    def __init__(self, engine: Engine, clock: Clock, *, origin: str, key_name: str,
                 public_key_pem: bytes, sign: cp.Signer,
                 on_batch: Callable[[int, float], None] | None = None,
                 writer: str = "thread") -> None:
        if writer not in ("thread", "process"):
            raise ValueError("writer must be 'thread' or 'process'")
        self._engine = engine
        self._clock = clock
        self.origin = origin
        self.key_name = key_name
        self.public_key_pem = public_key_pem
        self._key_id = cp.key_id_from_pem(public_key_pem)
        self._sign = sign
        self._on_batch = on_batch
        # Items: one (event, waiter), a list of them (what an event loop gathered in one
        # iteration, see append_async), or None (stop).
        self._queue: queue.SimpleQueue[_Item | list[_Item] | None] = queue.SimpleQueue()
        self._outboxes: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._committer = BatchCommitter(engine, clock)  # the writer thread's
        # writer="process": the event loop given to attach_loop hands its records to a
        # writer process (kms/audit/writer_process.py); other callers use the thread.
        self._process_url = (engine.url.render_as_string(hide_password=False)
                             if writer == "process" else None)
        self._channel: LoopChannel | None = None
        self._channel_thread: int | None = None
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer",
                                        daemon=True)
        self._writer.start()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # -- appending --------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> int:
        """Make ``event`` durable; returns its seq. Raises DependencyTimeoutError if the
        record cannot be written (or is not committed within APPEND_TIMEOUT_S)."""
        waiter = _Waiter()
        self._put((event, waiter))
        if not waiter.lock.acquire(timeout=APPEND_TIMEOUT_S):
            raise DependencyTimeoutError("the audit log did not commit the record in time")
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    async def append_async(self, event: AuditEvent) -> int:
        """``append`` for coroutines: awaits the commit without blocking the loop. Raises
        DependencyTimeoutError if the record cannot be written (or is not committed within
        APPEND_TIMEOUT_S); a cancelled caller leaves its record to be written anyway."""
        loop = asyncio.get_running_loop()
        waiter = _LoopWaiter(loop)
        self._put_on_loop(loop, (event, waiter))
        return await waiter.future  # the timeout: the outbox's _Deadline

    def _flush_outbox(self, loop: asyncio.AbstractEventLoop) -> None:
        outbox = self._outboxes.pop(loop, None)
        if outbox:
            waiters = [w for _, w in outbox if type(w) is _LoopWaiter]
            if waiters:
                _Deadline(loop, waiters)
            channel = self._channel
            if channel is not None and channel.loop is loop:
                channel.submit([e for e, _ in outbox], [w for _, w in outbox])
            else:
                self._queue.put(outbox)

    def submit(self, event: AuditEvent) -> Future[int]:
        """Queue an event; the future resolves to its seq once durable (for callers that
        hold a concurrent Future; coroutines use append_async)."""
        fut: Future[int] = Future()
        self._put((event, fut))
        return fut

    def _put(self, item: _Item) -> None:
        """A caller off the attached loop: its record goes with the loop's next batch to the
        writer process (one writer for the whole process: no lock contention between two);
        without an attached loop, or on the loop's own thread, to the writer thread."""
        channel = self._channel
        if channel is not None and threading.get_ident() != self._channel_thread:
            try:
                channel.loop.call_soon_threadsafe(self._put_on_loop, channel.loop, item)
                return
            except RuntimeError:  # the loop is closed
                pass
        self._queue.put(item)

    def writer_status(self) -> dict[str, object]:
        """For ``/readyz``, on the attached loop: where records are committed, and the
        writer process's pid (started now if it is not running). Raises
        DependencyTimeoutError if the writer process cannot run."""
        channel = self._channel
        if channel is None:
            return {"writer": "thread"}
        if threading.get_ident() != self._channel_thread:  # off the loop: report only
            return {"writer": "process", "pid": channel.pid, "ready": channel.ready}
        pid = channel.check()
        if not channel.ready:
            raise DependencyTimeoutError("the audit writer process is starting")
        return {"writer": "process", "pid": pid, "ready": True}

    def _put_on_loop(self, loop: asyncio.AbstractEventLoop, item: _Item) -> None:
        """On ``loop``: gathered per loop iteration and handed over as one item, so the
        writer (thread or process) wakes once for all the records of that iteration and
        commits them as one batch, instead of waking (and committing) for the first one."""
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes[loop] = []
        if not outbox:
            loop.call_soon(self._flush_outbox, loop)
        outbox.append(item)

    async def writer_ready(self, timeout: float) -> bool:
        """On the attached loop: whether the writer process (if any) has started and opened
        the database, waiting up to ``timeout`` seconds for it."""
        channel = self._channel
        return True if channel is None else await channel.wait_ready(timeout)

    def attach_loop(self) -> None:
        """Called on the serving event loop (``kms serve``'s lifespan): with
        writer="process", start the writer process and send it this loop's records."""
        if self._process_url is None or self._channel is not None:
            return
        loop = asyncio.get_running_loop()
        channel = LoopChannel(self._process_url, loop, _deliver_batch, self._on_batch)
        channel.check()  # starts the writer process
        self._channel, self._channel_thread = channel, threading.get_ident()

    def _write_loop(self) -> None:
        """Group commit, pipelined with the wake-ups.

        The waiters of a committed batch are released just before the *next* batch's
        COMMIT (its fsync, during which this thread does not hold the GIL), not right after
        their own: woken threads then run while the disk works instead of competing with
        this thread for the GIL while it prepares the next batch. Nobody is released
        before their record is durable, and when no batch follows (the queue is empty)
        the waiters are released at once.
        """
        get, get_nowait = self._queue.get, self._queue.get_nowait
        pending: list[tuple[_Waiter | _LoopWaiter | Future[int], int]] = []  # not yet released

        def release() -> None:
            by_loop: dict[asyncio.AbstractEventLoop, list[_LoopWaiter]] = {}
            for w, seq in pending:
                if isinstance(w, _LoopWaiter):  # woken below, one call per loop
                    if seq < 0:
                        w.error = DependencyTimeoutError(_INVALID)
                    else:
                        w.seq = seq
                    group = by_loop.get(w.loop)
                    if group is None:
                        group = by_loop[w.loop] = []
                    group.append(w)
                elif seq < 0:  # this event was rejected (not a valid record); the rest went in
                    _fail(w, _INVALID)
                else:
                    try:  # noqa: SIM105 - no context manager per record on the hot path
                        w.set_result(seq)
                    except InvalidStateError:  # a cancelled Future: its caller went away
                        pass
            pending.clear()
            if by_loop:
                _wake(by_loop)

        while True:
            try:
                item = get_nowait()
            except queue.Empty:
                release()
                self._idle()
                item = get()
            if item is None:
                release()
                self._idle()
                return
            batch: list[_Item] = item if isinstance(item, list) else [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if isinstance(nxt, list):
                    batch.extend(nxt)
                else:
                    batch.append(nxt)
            started = time.perf_counter()
            try:
                seqs = self._commit([e for e, _ in batch], before_commit=release)
            except Exception:  # any failure: every waiter of this batch fails closed
                release()
                for _, w in batch:
                    _fail(w, "the audit log could not be written")
                continue
            release()  # if _commit returned without reaching its COMMIT
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
            pending.extend(zip([w for _, w in batch], seqs, strict=True))
            if any(type(w) is _LoopWaiter for _, w in batch):
                # An event loop is waiting: wake it now. Its wake-up is one call per batch
                # and it runs on another thread, so deferring it saves nothing and would
                # hold the loop's requests for the whole preparation of the next batch.
                release()

    def _commit(self, events: list[AuditEvent],
                before_commit: Callable[[], None] | None = None) -> list[int]:
        """Append ``events`` in one transaction (kms/audit/commit.py); their seqs."""
        return self._committer.commit(events, encode_event, before_commit)

    def _idle(self) -> None:
        """The queue is empty: the committer may hand its connection back."""
        self._committer.idle()

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
        channel, self._channel = self._channel, None  # later callers: the writer thread
        if channel is not None:
            channel.close()
        self._queue.put(None)
        self._writer.join(timeout=5)
