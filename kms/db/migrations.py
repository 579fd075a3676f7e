"""Versioned schema migrations, applied in order by ``kms init`` (and at start-up checks).

Each migration is a function of a connection inside one transaction; the version row is
updated in the same transaction, so a crash leaves the schema at one version or the next.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select

from kms.db import schema
from kms.errors import DependencyTimeoutError


def _v1(conn: Connection) -> None:
    schema.metadata.create_all(conn)
    conn.execute(schema.state_epoch.insert().values(id=1, epoch=0))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
LATEST = len(MIGRATIONS)


def current_version(engine: Engine) -> int:
    if not inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as conn:
        row = conn.execute(select(schema.schema_version.c.version)).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine) -> int:
    """Bring the schema to the latest version; returns the version it is now at."""
    version = current_version(engine)
    for index in range(version, LATEST):
        with engine.begin() as conn:
            MIGRATIONS[index](conn)
            conn.execute(schema.schema_version.delete())
            conn.execute(schema.schema_version.insert().values(id=1, version=index + 1))
    return LATEST


def require_current(engine: Engine) -> None:
    """Refuse to serve on a database that ``kms init`` has not brought up to date."""
    version = current_version(engine)
    if version != LATEST:
        raise DependencyTimeoutError(
            f"database schema is at version {version}, expected {LATEST}: run `kms init`"
        )
