"""Schema versions of the KMS database, applied by ``kms init`` (kms/migrate.py does the work).

1. the first schema: stores, keys, versions, credentials, tokens, the audit log;
2. ``keys.description``: an operator's note on what a key protects.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from kms import migrate as m
from kms.db import schema
from kms.errors import DependencyTimeoutError

LATEST = m.latest_version(schema.metadata)


def _seed_v1(conn: Connection) -> None:
    conn.execute(schema.state_epoch.insert().values(id=1, epoch=0))


def current_version(engine: Engine) -> int:
    return m.current_version(engine)


def migrate(engine: Engine, target: int | None = None) -> int:
    """Bring the schema to ``target`` (default: the latest); returns the version reached."""
    return m.migrate(engine, schema.metadata, target=target, after_version={1: _seed_v1})


def require_current(engine: Engine) -> None:
    """Refuse to serve on a database that ``kms init`` has not brought up to date."""
    version = current_version(engine)
    if version != LATEST:
        raise DependencyTimeoutError(
            f"database schema is at version {version}, expected {LATEST}: run `kms init`"
        )
