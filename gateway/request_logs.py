"""The encrypted prompt/response log.

Each request is one row. The prompt (the request body), the response (the body, or the
assembled stream) and the metadata (model, provider, provider key id, stream flag) are
envelope blobs under the tenant's key, with the context ``{tenant, field}`` (bound to the
payload and to the data-key wrap) and the request id as associated data (bound to the
payload only, so the tenant's cached data key serves many requests): a blob copied to
another row, field or tenant does not decrypt. In clear: ids, the time,
and counters for cost reporting (status, latency, token usage reported by the upstream).

The prompt is encrypted *before* the request is forwarded: a tenant whose key is revoked
gets no service once its key service refuses (fail closed; a cached data key, at most
``GATEWAY_CACHE_SECONDS`` old, bounds the delay). The row is written once, after the
response, by a background group-commit writer (see :class:`RequestLog`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert, select

from gateway import db
from gateway.errors import NotFoundError
from gateway.tenant_keys import TenantKeys, kms_request_id

log = structlog.get_logger("gateway.request_logs")


def _context(tenant_id: str, field: str) -> dict[str, str]:
    return {"tenant": tenant_id, "field": field}


def _request(request_id: str) -> bytes:
    return b"request:" + request_id.encode()


@dataclass(frozen=True, slots=True)
class LogSummary:
    """The clear part of a log row."""

    id: str
    tenant_id: str
    virtual_key_id: str
    created_at: datetime
    status_code: int | None
    latency_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant_id, "virtual_key_id": self.virtual_key_id,
                "created_at": self.created_at.isoformat(), "status": self.status_code,
                "latency_ms": self.latency_ms, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def parse(cls, usage: object) -> Usage:
        if not isinstance(usage, dict):
            return cls()

        def num(name: str) -> int | None:
            v = usage.get(name)
            return v if isinstance(v, int) and v >= 0 else None
        return cls(num("prompt_tokens"), num("completion_tokens"), num("total_tokens"))


class _GroupCommitWriter:
    """One thread that inserts the log rows handed to it, many per transaction: the rows
    that arrive while a commit is running go into the next one (group commit), so the
    request path never waits for the database and the disk sees one sync per batch."""

    def __init__(self, engine: Engine, max_batch: int = 1000, linger: float = 0.01) -> None:
        self._engine = engine
        self._max_batch = max_batch
        #: after the first row of a batch, wait this long for more (fewer wake-ups and
        #: commits competing with the event loop for the GIL)
        self._linger = linger
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._submitted = 0
        self._done = 0
        self._closing = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, row: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(row)
            self._submitted += 1
            if len(self._pending) == 1:
                self._cond.notify()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every row submitted so far is committed (or given up)."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                if not self._closing and self._linger > 0:
                    self._cond.wait(self._linger)  # submit() notifies only an empty queue
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
            self._write(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(5):
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(db.request_logs), batch)
                return
            except Exception as exc:  # a locked or full database: retry, then one by one
                log.warning("request_log_write_failed", rows=len(batch), attempt=attempt,
                            error=type(exc).__name__)
                time.sleep(0.05 * 2 ** attempt)
        for row in batch:
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(db.request_logs), [row])
            except Exception as exc:
                self.dropped += 1
                log.error("request_log_row_lost", request_id=row["id"],
                          error=type(exc).__name__)


class RequestLog:
    """Seals the fields of a request's record and hands the row to the group-commit writer.

    A row is written once, when the request is over (its prompt was sealed before the
    request was forwarded). Durability: a row is committed within about 10 ms (the writer's
    linger) plus one database commit of :meth:`record`; a crash of the process loses the
    rows recorded in that window and those of requests still in flight. :meth:`flush`
    and :meth:`close` (a clean stop) write everything.
    """

    def __init__(self, engine: Engine, tenant_keys: TenantKeys) -> None:
        self._engine = engine
        self._keys = tenant_keys
        self._writer: _GroupCommitWriter | None = None
        self._writer_lock = threading.Lock()

    def seal(self, tenant_id: str, request_id: str, field: str, data: bytes, *,
             blocking: bool = True) -> bytes | None:
        """``data`` as an envelope blob under the tenant's key for ``field`` of the record.
        ``blocking=False``: only with a cached data key, else None (nothing is called)."""
        if not blocking:
            return self._keys.try_encrypt(tenant_id, data, _context(tenant_id, field),
                                          _request(request_id))
        return self._keys.encrypt(tenant_id, data, _context(tenant_id, field),
                                  _request(request_id))

    def record(self, *, tenant_id: str, request_id: str, virtual_key_id: str,
               created_at: datetime, status: int | None, latency_ms: int | None,
               usage: Usage, prompt_blob: bytes, response_blob: bytes | None,
               meta_blob: bytes | None) -> None:
        """Queue the row for the writer; returns at once."""
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = _GroupCommitWriter(self._engine)
                writer = self._writer
        writer.submit({
            "id": request_id, "tenant_id": tenant_id, "virtual_key_id": virtual_key_id,
            "created_at": created_at, "status_code": status, "latency_ms": latency_ms,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "prompt_blob": prompt_blob,
            "response_blob": response_blob, "meta_blob": meta_blob})

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every recorded row is committed."""
        writer = self._writer
        return True if writer is None else writer.flush(timeout)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def recent(self, tenant_id: str, limit: int = 100) -> list[LogSummary]:
        t = db.request_logs
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.tenant_id, t.c.virtual_key_id,
                                       t.c.created_at, t.c.status_code, t.c.latency_ms,
                                       t.c.prompt_tokens, t.c.completion_tokens,
                                       t.c.total_tokens)
                                .where(t.c.tenant_id == tenant_id)
                                .order_by(t.c.created_at.desc()).limit(limit)).all()
        return [LogSummary(*r) for r in rows]

    def purge_older_than(self, tenant_id: str, days: float) -> int:
        """Retention: delete the tenant's records older than ``days``; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        t = db.request_logs
        with self._engine.begin() as conn:
            return int(conn.execute(delete(t).where(t.c.tenant_id == tenant_id,
                                                    t.c.created_at < cutoff)).rowcount)

    def show(self, tenant_id: str, request_id: str) -> dict[str, Any]:
        """Decrypt one request's log on demand (one KMS decrypt per field, named by id)."""
        t = db.request_logs
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.tenant_id == tenant_id,
                                               t.c.id == request_id)).first()
        if row is None:
            raise NotFoundError(f"no request {request_id!r} for tenant {tenant_id!r}")
        token = kms_request_id.set(request_id)
        try:
            out = LogSummary(row.id, row.tenant_id, row.virtual_key_id, row.created_at,
                             row.status_code, row.latency_ms, row.prompt_tokens,
                             row.completion_tokens, row.total_tokens).as_dict()
            out["prompt"] = self._open(tenant_id, request_id, "prompt", row.prompt_blob)
            out["response"] = self._open(tenant_id, request_id, "response", row.response_blob)
            out["meta"] = self._open(tenant_id, request_id, "meta", row.meta_blob)
        finally:
            kms_request_id.reset(token)
        return out

    def _open(self, tenant_id: str, request_id: str, field: str,
              blob: bytes | None) -> Any:
        if blob is None:
            return None
        plain = self._keys.decrypt(tenant_id, blob, _context(tenant_id, field),
                                   _request(request_id))
        try:
            return json.loads(plain)
        except ValueError:
            return plain.decode("utf-8", errors="replace")
