"""One group-commit batch of audit events into the database: the log's write path.

Used by the audit log's writer (kms/audit/log.py), either on a thread of the serving
process or in a separate writer process (kms/audit/writer_process.py). Several writers,
in any number of processes, append through one sequencer: the ``audit_head`` row, locked
with ``SELECT ... FOR UPDATE`` on PostgreSQL and by ``BEGIN IMMEDIATE`` on SQLite, so the
log has no gap and no fork.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Engine, PoolProxiedConnection

from kms.audit import merkle
from kms.audit.event import AuditEvent
from kms.audit.record import GENESIS_PREV, encode_fields, format_time
from kms.clock import Clock
from kms.db.engine import is_sqlite
from kms.errors import DependencyTimeoutError

_INSERT_ROWS = 64  # rows per INSERT statement (a bounded set of statements to cache)
# The write path's SQL (kms/db/schema.py: audit_head, audit_records), run on the raw
# DB-API connection; qmark placeholders, turned into %s for psycopg.
_HEAD_SQL = "SELECT size, last_hash, frontier FROM audit_head WHERE id = 1"
_UPDATE_SQL = "UPDATE audit_head SET size = ?, last_hash = ?, frontier = ? WHERE id = 1"
_INSERT_SQL = "INSERT INTO audit_records (seq, body, leaf_hash) VALUES "
_log = logging.getLogger("kms.audit")
T = TypeVar("T")


def encode_event(seq: int, now: str, prev: str, e: AuditEvent) -> bytes:
    """The record bytes of ``e`` at this position (``BatchCommitter.commit``'s encoder for
    event objects; the writer process has its own for the values it receives)."""
    return encode_fields(seq, now, prev, e.op, e.outcome, e.actor, e.key_id, e.key_version,
                         e.store, e.error, e.request, e.context_hash, e.latency_us, e.detail)


class BatchCommitter:
    """Appends batches of events, one transaction each. Not thread-safe: one caller."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._pg = not is_sqlite(str(engine.url))
        self._insert_cache: dict[int, str] = {}
        # The DB-API connection held while batches follow each other, and the frontier
        # (serialized, and as a list of hashes) this committer last committed.
        self._raw: PoolProxiedConnection | None = None
        self._edge: tuple[bytes, list[bytes]] | None = None
        self._head_sql = _HEAD_SQL + (" FOR UPDATE" if self._pg else "")
        self._update_sql = _UPDATE_SQL.replace("?", "%s") if self._pg else _UPDATE_SQL

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_cache.get(rows)
        if sql is None:
            ph = "(?,?,?)" if not self._pg else "(%s,%s,%s)"
            sql = _INSERT_SQL + ",".join([ph] * rows)
            self._insert_cache[rows] = sql
        return sql

    def commit(self, events: Sequence[T], encode: Callable[[int, str, str, T], bytes],
               before_commit: Callable[[], None] | None = None) -> list[int]:
        """Append ``events`` in one transaction; their seqs (-1 for an invalid event).
        ``before_commit`` is called right before COMMIT. Raises if nothing was committed.

        The hot path: the raw DB-API connection (no SQLAlchemy statement machinery) and
        few statements per batch (SQLite: BEGIN IMMEDIATE, read the head, one multi-row
        INSERT per 64 records, update the head, COMMIT), because each statement releases
        and retakes the GIL, which costs a hand-off when other threads are busy. Records
        are encoded by ``encode``: :func:`encode_event` (``record.encode_fields``: same
        checks, same bytes as ``encode(AuditRecord(...))``), or in the writer process from
        the plain values it receives (``record.encode_values``); the Merkle frontier is
        extended a level at a time and kept between batches while no other writer has
        appended.
        """
        raw = self.open()
        done = False
        try:
            cur = raw.cursor()
            if not self._pg:
                cur.execute("BEGIN IMMEDIATE")  # the write lock: the sequencer
            cur.execute(self._head_sql)
            row = cur.fetchone()
            if row is None:
                raise DependencyTimeoutError("the audit log has no head row (kms init)")
            size, last_hash, frontier_bytes = row
            size = int(size)
            frontier_bytes = bytes(frontier_bytes)
            cached = self._edge
            if cached is not None and cached[0] == frontier_bytes:
                edge = list(cached[1])  # the frontier this committer wrote last
            else:  # first batch, or another writer appended since
                edge = list(merkle.CompactRange.from_bytes(frontier_bytes).hashes)
                if int.from_bytes(frontier_bytes[:8], "big") != size:
                    raise DependencyTimeoutError("the audit log head is inconsistent")
            prev = GENESIS_PREV if size == 0 else last_hash
            now = format_time(self._clock())  # one time for the whole batch
            seq = size
            seqs: list[int] = []
            params: list[object] = []
            leaves: list[bytes] = []
            sha256 = hashlib.sha256
            for e in events:
                try:
                    body = encode(seq, now, prev, e)
                except Exception:  # RecordFormatError (or worse): this waiter fails closed
                    _log.error("invalid audit event rejected", exc_info=True)
                    seqs.append(-1)
                    continue
                leaf = sha256(b"\x00" + body).digest()
                leaves.append(leaf)
                prev = sha256(body).hexdigest()
                params += (seq, body, leaf)
                seqs.append(seq)
                seq += 1
            new_frontier = frontier_bytes
            if leaves:
                merkle.extend_right_edge(edge, size, leaves)
                new_frontier = seq.to_bytes(8, "big") + b"".join(edge)
                chunk = 3 * _INSERT_ROWS
                for i in range(0, len(params), chunk):
                    part = params[i:i + chunk]
                    cur.execute(self._insert_sql(len(part) // 3), part)
                cur.execute(self._update_sql, (seq, prev, new_frontier))
            if before_commit is not None:
                before_commit()
            raw.commit()
            done = True
        finally:
            if not done:  # never reuse a connection in an unknown state: drop it
                self._raw = None
                self._edge = None
                raw.invalidate()
        self._edge = (new_frontier, edge)
        return seqs

    def open(self) -> PoolProxiedConnection:
        """The connection batches use, opened now if it is not (the writer process opens it
        at start, so that its first batch does not); kept while batches follow each other
        (see idle)."""
        if self._raw is None:
            self._raw = self._engine.raw_connection()
        return self._raw

    def idle(self) -> None:
        """Nothing is waiting: hand the connection back to the pool."""
        if self._raw is not None:
            raw, self._raw = self._raw, None
            raw.close()
