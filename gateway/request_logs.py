"""The encrypted prompt/response log.

Each request is one row. The prompt (the request body), the response (the body, or the
assembled stream) and the metadata (model, provider, provider key id, stream flag) are
envelope blobs under the tenant's key, with the context ``{tenant, field}`` (bound to the
payload and to the data-key wrap) and the request id as associated data (bound to the
payload only, so the tenant's cached data key serves many requests): a blob copied to
another row, field or tenant does not decrypt. In clear: ids, the time,
and counters for cost reporting (status, latency, token usage reported by the upstream).

The prompt is encrypted *before* the request is forwarded: a tenant whose key is revoked
gets no service from its very next request (fail closed). All methods block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from gateway import db
from gateway.errors import NotFoundError
from gateway.tenant_keys import TenantKeys, kms_request_id


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


class RequestLog:
    def __init__(self, engine: Engine, tenant_keys: TenantKeys) -> None:
        self._engine = engine
        self._keys = tenant_keys

    def begin(self, tenant_id: str, request_id: str, virtual_key_id: str,
              prompt: bytes) -> None:
        blob = self._keys.encrypt(tenant_id, prompt, _context(tenant_id, "prompt"),
                                  _request(request_id))
        with self._engine.begin() as conn:
            conn.execute(insert(db.request_logs).values(
                id=request_id, tenant_id=tenant_id, virtual_key_id=virtual_key_id,
                created_at=datetime.now(UTC), prompt_blob=blob))

    def finish(self, tenant_id: str, request_id: str, *, status: int, latency_ms: int,
               usage: Usage, response: bytes | None, meta: dict[str, Any]) -> None:
        values: dict[str, Any] = {
            "status_code": status, "latency_ms": latency_ms,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "meta_blob": self._keys.encrypt(tenant_id, json.dumps(meta).encode(),
                                            _context(tenant_id, "meta"), _request(request_id)),
        }
        if response is not None:
            values["response_blob"] = self._keys.encrypt(
                tenant_id, response, _context(tenant_id, "response"), _request(request_id))
        with self._engine.begin() as conn:
            conn.execute(update(db.request_logs).where(db.request_logs.c.id == request_id)
                         .values(**values))

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
