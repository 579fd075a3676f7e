"""The audit log's commits in a separate writer process, fed by the event loop (``kms serve``).

Why: in one process the writer thread's SQLite calls each release the GIL and then wait
to get it back from the busy event loop, and each batch's callers are woken through
``call_soon_threadsafe``: at 1,000 requests/s a commit that needs 0.2 ms of disk took
1-1.6 ms (p99 3-9 ms), and every XKS request waits for its record's commit
(docs/benchmarks-history.md, fifth pass). Here the event loop writes each iteration's records to
a socket and reads the answers as one more readable socket, with no thread in between,
and the writer process encodes, hashes and commits with its own interpreter.

Protocol, over a socket pair private to the two processes; each message is a 4-byte
big-endian length and a payload. The parent sends the database URL (JSON) once; the child
imports what it needs, opens its database connection (a database that is down is logged,
and its batches fail closed as ever) and answers ``["ready"]`` (the parent's
:meth:`LoopChannel.wait_ready`: ``kms serve`` opens its port only after it, so that the
first requests after a start do not wait ~0.2 s for the child's start-up). Then one
batch per message: a pickled list of event field tuples (only the parent holds the other
end of the socket; the server itself never unpickles anything). The child reads every
batch that has arrived (up to MAX_FRAMES), commits them in ONE transaction (group
commit), then answers each batch, in order, in JSON: ``["ok", seqs, seconds]`` (seq -1:
that event was not a valid record and was not written) or ``["error", message]``. A
caller is released only by the answer to its batch, sent after the commit returned: never
"durable" before it is.

Failure: a child that dies, stops answering for :data:`REPLY_TIMEOUT_S` or breaks the
protocol fails every batch it holds closed (DependencyTimeoutError) and is replaced on the
next batch (at most once per ``LoopChannel.respawn_interval_s``; in between, batches fail
closed). A parent that dies (kill -9) closes its end: the child commits the batches it has
read and exits on end-of-file. Records it committed without being able to answer are in
the log but were never acknowledged, which the crash-consistency guarantee allows (every
acknowledged record is in the log; tests/kms/test_audit_crash.py,
tests/reliability/test_replica_crash.py).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

from kms.audit.commit import BatchCommitter, encode_event
from kms.audit.event import AuditEvent
from kms.audit.record import (
    Actor,
    ActorKind,
    Operation,
    Outcome,
    RequestMetadata,
    encode_values,
)
from kms.errors import DependencyTimeoutError
from kms.framing import HEADER as _HEADER
from kms.framing import READY as _READY
from kms.framing import STOP_TIMEOUT_S
from kms.framing import frames as _frames
from kms.helper_channel import HelperChannel

REPLY_TIMEOUT_S = 30.0  # past the database's own lock timeout (busy_timeout 30 s)
IDLE_S = 1.0  # the child hands its connection back to the pool after this long idle
MAX_UNSENT = 64 << 20  # bytes queued for a child that does not read: fail closed past it
MAX_FRAMES = 256  # batches the child commits in one transaction at most (bounded latency)
_log = logging.getLogger("kms.audit")

_EventFields = tuple[object, ...]
# What the parent hears for one batch: its token, the seqs (None: the batch failed), and
# the failure's message.
Deliver = Callable[[object, "list[int] | None", str], None]


def _fields(e: AuditEvent) -> _EventFields:
    """What goes over the socket for ``e``. Events of the exact expected types go as plain
    values (C-speed pickling, ~2 us per event against ~9 us for the objects, whose
    dataclass and enum reducers run Python code); anything else goes as the object. A
    detail that is another kind of mapping (the XKS handler's shared read-only empty one)
    goes as its ``dict`` copy either way: a mappingproxy does not pickle, and taken as an
    object it would send every XKS record the slow way (docs/benchmarks-history.md,
    eighteenth pass)."""
    actor, req, detail = e.actor, e.request, e.detail
    if type(detail) is not dict and (type(detail) is MappingProxyType
                                     or isinstance(detail, Mapping)):
        # the XKS handler's empty proxy first: an ABC isinstance takes ~0.9 us, a copy of a
        # mapping that is not a dict ~0.7 us, against ~0.1 us for both checks and a new {}
        detail = dict(detail) if detail else {}
    if (type(e.op) is Operation and type(e.outcome) is Outcome and type(actor) is Actor
            and type(actor.kind) is ActorKind and type(detail) is dict
            and (req is None or type(req) is RequestMetadata)):
        # ``_value_``: the member's own attribute (``.value`` is a Python-level descriptor)
        return ("v", e.op._value_, e.outcome._value_, actor.kind._value_, actor.id, e.key_id,
                e.key_version, e.store, e.error,
                None if req is None else (req.awsPrincipalArn, req.awsSourceVpce,
                                          req.kmsKeyArn, req.kmsOperation,
                                          req.kmsRequestId, req.kmsViaService),
                e.context_hash, e.latency_us, detail)
    return ("o", e if detail is e.detail else dataclasses.replace(e, detail=detail))


def _event(fields: _EventFields) -> AuditEvent:
    """The child's inverse of :func:`_fields` (raises on anything else)."""
    if fields[0] == "o" and len(fields) == 2 and type(fields[1]) is AuditEvent:
        return fields[1]
    tag, op, outcome, kind, actor_id, key_id, version, store, error, req, ctx, lat, detail = (
        cast(tuple[str, str, str, str, str, Any, Any, Any, Any, Any, Any, Any, Any], fields))
    if tag != "v":
        raise ValueError("unknown event encoding")
    request = None
    if req is not None:
        principal, vpce, key_arn, operation, request_id, via = req  # REQUEST_FIELDS order
        request = RequestMetadata(kmsRequestId=request_id, awsPrincipalArn=principal,
                                  kmsKeyArn=key_arn, kmsViaService=via, awsSourceVpce=vpce,
                                  kmsOperation=operation)
    return AuditEvent(op=Operation(op), outcome=Outcome(outcome),
                      actor=Actor(kind=ActorKind(kind), id=actor_id), key_id=key_id,
                      key_version=version, store=store, error=error, request=request,
                      context_hash=ctx, latency_us=lat, detail=detail)


def _encode_wire(seq: int, now: str, prev: str, fields: _EventFields) -> bytes:
    """The child's encoder (``BatchCommitter.commit``): the record bytes straight from the
    plain values where ``encode_values`` can; otherwise (the object form, or values it does
    not handle) through the objects and ``encode_event``, which gives the bytes or the
    precise error. Same bytes either way (tests/audit/test_writer_process.py)."""
    if fields[0] == "v" and len(fields) == 13:
        body = encode_values(seq, now, prev, *fields[1:])
        if body is not None:
            return body
    return encode_event(seq, now, prev, _event(fields))


def encode_batch(events: list[AuditEvent]) -> bytes:
    """A batch message's payload. An event that cannot be pickled (not a valid event
    anyway) goes as None: the child answers -1 for it, and the others are written."""
    try:
        return pickle.dumps([_fields(e) for e in events], protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        items: list[_EventFields | None] = []
        for e in events:
            try:
                fields = _fields(e)
                pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
                items.append(fields)
            except Exception:
                _log.error("audit event not sent to the writer process (op %r)",
                           getattr(e, "op", None))
                items.append(None)
        return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


class LoopChannel(HelperChannel):
    """The event loop's end of a writer process (kms/helper_channel.py). Every method runs
    on ``loop``'s thread, except ``close`` once the loop no longer serves (it blocks while
    the child finishes)."""

    module = "kms.audit.writer_process"
    what = "the audit writer process"
    # The environment without the PIN (the writer never touches the HSM) or the database
    # URL, which comes over the socket: HelperChannel.withheld.

    def __init__(self, database_url: str, loop: asyncio.AbstractEventLoop, deliver: Deliver,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        super().__init__(loop)
        self._url = database_url
        self._deliver = deliver
        self._on_batch = on_batch
        self._pending: collections.deque[tuple[object, int, float]] = collections.deque()

    def _config(self) -> bytes:
        return json.dumps({"url": self._url}).encode()

    def check(self) -> int:
        """On the loop (``attach_loop``, ``/readyz``): the writer process's pid, started
        now if it is not running. Raises DependencyTimeoutError if it cannot be started or has
        held a batch past REPLY_TIMEOUT_S (it is then replaced)."""
        if self._pending and time.monotonic() - self._pending[0][2] > REPLY_TIMEOUT_S:
            self._broken("the audit writer process did not answer")
        if self._sock is None:
            self._start()
        assert self._proc is not None
        return self._proc.pid

    def submit(self, events: list[AuditEvent], token: object) -> None:
        """Send one batch; ``deliver(token, ...)`` is called on the loop with its outcome."""
        try:
            if self._sock is not None and self._pending and (
                    time.monotonic() - self._pending[0][2] > REPLY_TIMEOUT_S):
                self._broken("the audit writer process did not answer")
            if self._sock is None:
                self._start()
            if len(self._out) > MAX_UNSENT:
                raise DependencyTimeoutError("the audit writer process is not keeping up")
        except DependencyTimeoutError as exc:
            self._deliver(token, None, str(exc))
            return
        self._pending.append((token, len(events), time.monotonic()))
        self._send(encode_batch(events))  # a broken channel fails this batch too

    def _answer(self, frame: bytes) -> bool:
        if not self._pending:
            self._broken("the audit writer process answered out of protocol")
            return False
        token, count, _ = self._pending.popleft()
        try:
            reply = json.loads(frame)
            status = reply[0]
            if status == "ok":
                seqs = reply[1]
                if (not isinstance(seqs, list) or len(seqs) != count
                        or not all(type(s) is int for s in seqs)):
                    raise ValueError("seqs")
                seconds = float(reply[2])
            elif status == "error":
                message = str(reply[1])
            else:
                raise ValueError("status")
        except (ValueError, TypeError, IndexError, KeyError):
            message = "the audit writer process answered out of protocol"
            self._deliver(token, None, message)  # this batch fails closed too
            self._broken(message)
            return False
        if status == "ok":
            if self._on_batch is not None:
                self._on_batch(count, seconds)
            self._deliver(token, seqs, "")
        else:
            self._deliver(token, None, message)
        return True

    def _forget_pending(self, why: str) -> None:
        """Every batch the lost child held fails closed."""
        pending, self._pending = self._pending, collections.deque()
        for token, _, _ in pending:
            self._deliver(token, None, why)

    def close(self) -> None:
        """End-of-file to the child, after which it commits what it has read, answers,
        and exits. Answers that arrive within STOP_TIMEOUT_S are delivered."""
        self._closed = True
        was_ready = self._ready.is_set()
        detached = self._detach()
        if detached is None:
            return
        sock, proc = detached
        if was_ready:  # _take keeps the handshake rule for what arrives now
            self._ready.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        try:
            sock.setblocking(True)
            if self._out:
                sock.settimeout(STOP_TIMEOUT_S)
                sock.sendall(self._out)
                self._out.clear()
            sock.shutdown(socket.SHUT_WR)
            while self._pending and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(1 << 16)
                if not data:
                    break
                self._in += data
                for frame in _frames(self._in):
                    if not self._take(frame):
                        break
        except OSError:
            pass
        sock.close()
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._forget_pending("the audit log closed before the record was committed")


# -- the writer process ----------------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    from kms.clock import system_clock
    from kms.db.engine import make_engine

    buf = bytearray()
    while not (frames := _frames(buf)):
        data = sock.recv(1 << 16)
        if not data:
            return
        buf += data
    config = json.loads(frames[0])
    engine = make_engine(str(config["url"]))
    committer = BatchCommitter(engine, system_clock)
    try:
        committer.open()
    except Exception as exc:  # the database is down: each batch then fails closed, as ever
        _log.warning("audit database not reachable at start (%s)", type(exc).__name__)
    sock.sendall(_HEADER.pack(len(_READY)) + _READY)
    pending = frames[1:]
    try:
        eof = False
        while not eof or pending:
            if not pending:
                ready, _, _ = select.select([sock], [], [], IDLE_S)
                if not ready:
                    committer.idle()
                    continue
            while len(pending) < MAX_FRAMES:  # what has arrived: one transaction for it
                ready, _, _ = select.select([sock], [], [], 0)
                if not ready:
                    break
                data = sock.recv(1 << 20)
                if not data:
                    eof = True
                    break
                buf += data
                pending += _frames(buf)
            if pending:
                now, pending = pending[:MAX_FRAMES], pending[MAX_FRAMES:]
                replies = _commit_all(committer, now)
                try:
                    sock.sendall(b"".join(_HEADER.pack(len(r)) + r for r in replies))
                except OSError:  # the parent is gone; what was committed stays committed
                    return
    finally:
        committer.idle()
        engine.dispose()


def _commit_all(committer: BatchCommitter, frames: list[bytes]) -> list[bytes]:
    """Commit the batches of ``frames`` in one transaction; one JSON answer per batch."""
    batches: list[list[_EventFields | None] | None] = []
    for frame in frames:
        try:
            # Only the parent holds the other end of this socket pair.
            items = pickle.loads(frame)  # noqa: S301
            batches.append(items if isinstance(items, list) else None)
        except Exception:
            batches.append(None)
    events: list[_EventFields] = [
        fields for items in batches if items is not None for fields in items
        if fields is not None]
    started = time.perf_counter()
    try:
        seqs = iter(committer.commit(events, _encode_wire)) if events else iter(())
    except DependencyTimeoutError as exc:
        return [json.dumps(["error", str(exc)]).encode()] * len(frames)
    except Exception as exc:  # the database failed: the parent fails these batches closed
        _log.warning("audit batch not committed (%s)", type(exc).__name__)
        return [json.dumps(["error", "the audit log could not be written"]).encode()] * len(
            frames)
    seconds = time.perf_counter() - started
    replies = []
    for items in batches:
        if items is None:
            replies.append(json.dumps(["error", "the audit batch was not readable"]).encode())
        else:
            replies.append(json.dumps(
                ["ok", [-1 if f is None else next(seqs) for f in items], seconds]).encode())
    return replies


def main(argv: list[str]) -> int:
    """``python -m kms.audit.writer_process FD``: serve the parent on socket FD."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the parent
    from kms.logging import configure_logging

    configure_logging()
    sock = socket.socket(fileno=int(argv[0]))
    try:
        _serve(sock)
    except OSError:  # the parent went away
        return 0
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
