"""The gateway's schema (SQLAlchemy Core) and engine. SQLite by default, PostgreSQL too.

What is in clear: ids, names of tenants and providers, base URLs, the XKS binding,
timestamps and counters. Provider API keys, prompts, responses and per-request metadata
(model and the like) exist only as envelope blobs under the tenant's key; XKS secrets only
sealed under the gateway master key; virtual keys only as keyed hashes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

from kms.migrate import migrate

metadata = MetaData()

tenants = Table(
    "tenants", metadata,
    Column("id", String(64), primary_key=True),
    Column("xks_endpoint", Text, nullable=False),
    Column("key_id", String(128), nullable=False),
    Column("access_key_id", String(128), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("rpm", Integer),  # tenant-wide limits, on top of each virtual key's
    Column("tpm", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # PII redaction mode (gateway/pii.py): off | forward | logs; NULL = off. Version 2.
    Column("pii_mode", String(16), info={"since": 2}),
)

provider_keys = Table(
    "provider_keys", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("provider", String(64), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("api_key_blob", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rotated_at", DateTime(timezone=True)),
)

virtual_keys = Table(
    "virtual_keys", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("env", String(16), nullable=False),
    Column("models", Text, nullable=False),  # JSON list; [] = any model
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

request_logs = Table(
    "request_logs", metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("virtual_key_id", String(40), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("status_code", Integer),
    Column("latency_ms", Integer),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("prompt_blob", LargeBinary, nullable=False),
    Column("response_blob", LargeBinary),
    Column("meta_blob", LargeBinary),
)


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True  # a server connection can go stale; a file cannot
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


def create_schema(engine: Engine) -> int:
    """Bring the gateway database to the latest schema version (``gateway init``); versions
    are derived from the ``since`` marks of the tables (kms/migrate.py). Returns it."""
    return migrate(engine, metadata)
