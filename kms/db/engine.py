"""Engine creation with the settings each backend needs for durability and concurrency."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from kms.errors import ValidationError

READ_ONLY = "kms_read_only"

_NO_BLOCKING: ContextVar[bool] = ContextVar("kms_no_blocking_io", default=False)


class WouldBlock(Exception):
    """Raised instead of a database read inside :func:`non_blocking`: the caller (the XKS
    edge, on the event loop) then reruns the request on a worker thread."""


class non_blocking:
    """Within this block, every database read raises :class:`WouldBlock` instead.

    A class rather than a ``@contextmanager`` generator: the event loop's fast path enters
    it twice per XKS request, and this costs a third as much."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _NO_BLOCKING.set(True)

    def __exit__(self, *exc: object) -> None:
        _NO_BLOCKING.reset(self._token)


def may_block() -> bool:
    """False inside :func:`non_blocking` (on the event loop's fast path)."""
    return not _NO_BLOCKING.get()


def read_only(engine: Engine) -> Connection:
    """A connection for reads only (SQLite: no write lock taken)."""
    if _NO_BLOCKING.get():
        raise WouldBlock()
    return engine.connect().execution_options(**{READ_ONLY: True})


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with full fsync, or PostgreSQL (psycopg 3)."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
            pool_size=8,
            max_overflow=8,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a commit is durable when it returns
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at BEGIN: no upgrade deadlocks between writers.
            # Hot-path readers opt out with read_only(engine) and get a plain snapshot.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    raise ValidationError("KMS_DATABASE_URL must be sqlite:/// or postgresql+psycopg://")
