"""The key registry: stores, keys and versions in the database. No HSM calls here.

Every write that changes what a key may do (state, usage, versions, a store's enabled flag)
bumps the state epoch in the same transaction (and on PostgreSQL sends a NOTIFY), which is
what lets every process drop its cached view within the revocation bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from kms.clock import iso
from kms.db import schema as t
from kms.db.engine import is_sqlite, read_only
from kms.errors import ConflictError, DependencyTimeoutError, KeyNotFoundError
from kms.keys.model import (
    KeyRecord,
    KeyState,
    KeyStore,
    KeyUsage,
    KeyVersion,
    Transition,
    format_usage,
    next_state,
    parse_usage,
)

NOTIFY_CHANNEL = "kms_state"
_BUMPED = "kms_epoch_bumped"


class Registry:
    """Database access for key stores, keys and versions."""

    def __init__(self, engine: Engine, on_change: Callable[[int], None] | None = None) -> None:
        """``on_change(new_epoch)`` runs after each committed transaction that bumped the
        epoch (the SQLite epoch file, so other processes notice at the cost of a stat(); and
        this process's epoch source, so it need not read back what it just wrote)."""
        self.engine = engine
        self._pg = not is_sqlite(str(engine.url))
        self._on_change = on_change

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        bumped: int | None = None
        try:
            with self.engine.begin() as conn:
                yield conn
                bumped = conn.info.pop(_BUMPED, None)
        except IntegrityError:
            raise ConflictError("an object with this name exists already") from None
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None
        if bumped is not None:
            self.changed(bumped)

    def changed(self, epoch: int) -> None:
        """Announce the committed state epoch ``epoch`` (after the commit)."""
        if self._on_change is not None:
            self._on_change(epoch)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with read_only(self.engine) as conn:
                yield conn
        except OperationalError:
            raise DependencyTimeoutError("the database is unavailable") from None

    def bump_epoch(self, conn: Connection) -> int:
        """In the caller's transaction: every cached view of key/store/credential state is
        stale once it commits. Callers outside this class then call :meth:`changed` with
        the returned epoch."""
        return self._bump_epoch(conn)

    def _bump_epoch(self, conn: Connection) -> int:
        epoch = int(conn.execute(update(t.state_epoch).where(t.state_epoch.c.id == 1)
                                 .values(epoch=t.state_epoch.c.epoch + 1)
                                 .returning(t.state_epoch.c.epoch)).scalar_one())
        conn.info[_BUMPED] = epoch
        if self._pg:
            conn.execute(text("SELECT pg_notify(:ch, '')"), {"ch": NOTIFY_CHANNEL})
        return epoch

    def epoch(self) -> int:
        """The current state epoch (one indexed row: cheap enough for every request)."""
        with self._read() as conn:
            value = conn.execute(select(t.state_epoch.c.epoch)
                                 .where(t.state_epoch.c.id == 1)).scalar_one()
        return int(value)

    # -- stores ---------------------------------------------------------------------------

    def create_store(self, name: str, uri_prefix: str, now: datetime) -> KeyStore:
        with self._write() as conn:
            conn.execute(t.key_stores.insert().values(
                name=name, uri_prefix=uri_prefix, enabled=True, throttle_rps=None,
                created_at=iso(now)))
            self._bump_epoch(conn)  # other processes' store caches must see it
        return KeyStore(name, uri_prefix, True, None, iso(now))

    def set_uri_prefix(self, name: str, uri_prefix: str) -> None:
        with self._write() as conn:
            conn.execute(update(t.key_stores).where(t.key_stores.c.name == name)
                         .values(uri_prefix=uri_prefix))
            self._bump_epoch(conn)

    def list_stores(self) -> list[KeyStore]:
        with self._read() as conn:
            rows = conn.execute(select(t.key_stores).order_by(t.key_stores.c.name)).all()
        return [KeyStore(r.name, r.uri_prefix, bool(r.enabled), r.throttle_rps, r.created_at)
                for r in rows]

    def get_store(self, name: str) -> KeyStore:
        for store in self.list_stores():
            if store.name == name:
                return store
        raise KeyNotFoundError(f"no key store named {name!r}")

    def update_store(self, name: str, *, enabled: bool | None = None,
                     throttle_rps: int | None = None, clear_throttle: bool = False) -> None:
        values: dict[str, object] = {}
        if enabled is not None:
            values["enabled"] = enabled
        if throttle_rps is not None or clear_throttle:
            values["throttle_rps"] = throttle_rps
        with self._write() as conn:
            n = conn.execute(update(t.key_stores).where(t.key_stores.c.name == name)
                             .values(**values)).rowcount
            if n == 0:
                raise KeyNotFoundError(f"no key store named {name!r}")
            self._bump_epoch(conn)

    # -- keys -----------------------------------------------------------------------------

    def create_key(self, key_id: str, store: str, usage: frozenset[KeyUsage], hsm_label: str,
                   imported: bool, now: datetime, description: str | None = None) -> None:
        with self._write() as conn:
            if conn.execute(select(t.key_stores.c.name)
                            .where(t.key_stores.c.name == store)).first() is None:
                raise KeyNotFoundError(f"no key store named {store!r}")
            if conn.execute(select(t.keys.c.key_id)
                            .where(t.keys.c.key_id == key_id)).first() is not None:
                raise ConflictError(f"key {key_id!r} exists already")
            conn.execute(t.keys.insert().values(
                key_id=key_id, store=store, usage=format_usage(usage),
                state=KeyState.ENABLED.value, primary_version=1, min_decrypt_version=1,
                deletion_due=None, rules=None, description=description, created_at=iso(now),
                updated_at=iso(now)))
            conn.execute(t.key_versions.insert().values(
                key_id=key_id, version=1, hsm_label=hsm_label, imported=imported,
                created_at=iso(now)))
            self._bump_epoch(conn)

    def label_in_use(self, hsm_label: str) -> bool:
        with self._read() as conn:
            return conn.execute(select(t.key_versions.c.key_id)
                                .where(t.key_versions.c.hsm_label == hsm_label)).first() is not None

    def get_key(self, key_id: str) -> KeyRecord:
        with self._read() as conn:
            return self._load(conn, key_id)

    def list_keys(self, store: str | None = None) -> list[KeyRecord]:
        with self._read() as conn:
            q = select(t.keys.c.key_id).order_by(t.keys.c.key_id)
            if store is not None:
                q = q.where(t.keys.c.store == store)
            return [self._load(conn, r.key_id) for r in conn.execute(q).all()]

    def _load(self, conn: Connection, key_id: str) -> KeyRecord:
        row = conn.execute(
            select(t.keys, t.key_stores.c.enabled.label("store_enabled"))
            .join(t.key_stores, t.keys.c.store == t.key_stores.c.name)
            .where(t.keys.c.key_id == key_id)).first()
        if row is None:
            raise KeyNotFoundError("no such key")
        versions = conn.execute(select(t.key_versions).where(t.key_versions.c.key_id == key_id)
                                .order_by(t.key_versions.c.version)).all()
        return KeyRecord(
            key_id=row.key_id, store=row.store, usage=parse_usage(row.usage),
            state=KeyState(row.state), primary_version=row.primary_version,
            min_decrypt_version=row.min_decrypt_version, deletion_due=row.deletion_due,
            rules=row.rules, created_at=row.created_at, updated_at=row.updated_at,
            versions=tuple(KeyVersion(v.version, v.hsm_label, bool(v.imported), v.created_at)
                           for v in versions),
            store_enabled=bool(row.store_enabled), description=row.description)

    def transition(self, key_id: str, transition: Transition, now: datetime, *,
                   deletion_due: str | None = None) -> tuple[KeyRecord, KeyRecord]:
        """Apply a lifecycle transition atomically; returns (before, after)."""
        with self._write() as conn:
            before = self._load(conn, key_id)
            target = next_state(transition, before.state)
            conn.execute(update(t.keys).where(t.keys.c.key_id == key_id).values(
                state=target.value, updated_at=iso(now),
                deletion_due=deletion_due if target is KeyState.PENDING_DELETION else None))
            self._bump_epoch(conn)
            after = self._load(conn, key_id)
        return before, after

    def add_version(self, key_id: str, hsm_label: str, now: datetime) -> KeyRecord:
        """Rotate: a new primary version backed by ``hsm_label`` (already in the HSM)."""
        with self._write() as conn:
            before = self._load(conn, key_id)
            next_state(Transition.ROTATE, before.state)
            number = max(v.version for v in before.versions) + 1
            conn.execute(t.key_versions.insert().values(
                key_id=key_id, version=number, hsm_label=hsm_label, imported=False,
                created_at=iso(now)))
            conn.execute(update(t.keys).where(t.keys.c.key_id == key_id)
                         .values(primary_version=number, updated_at=iso(now)))
            self._bump_epoch(conn)
            return self._load(conn, key_id)

    def set_min_decrypt_version(self, key_id: str, version: int, now: datetime) -> KeyRecord:
        with self._write() as conn:
            self._load(conn, key_id)
            conn.execute(update(t.keys).where(t.keys.c.key_id == key_id)
                         .values(min_decrypt_version=version, updated_at=iso(now)))
            self._bump_epoch(conn)
            return self._load(conn, key_id)

    def set_rules(self, key_id: str, rules_json: str | None, now: datetime) -> KeyRecord:
        with self._write() as conn:
            self._load(conn, key_id)
            conn.execute(update(t.keys).where(t.keys.c.key_id == key_id)
                         .values(rules=rules_json, updated_at=iso(now)))
            self._bump_epoch(conn)
            return self._load(conn, key_id)

    def due_for_deletion(self, now: datetime) -> list[str]:
        with self._read() as conn:
            rows = conn.execute(select(t.keys.c.key_id).where(
                t.keys.c.state == KeyState.PENDING_DELETION.value,
                t.keys.c.deletion_due <= iso(now))).all()
        return [r.key_id for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """Number of keys in each state (for the ``kms_keys`` gauge)."""
        with self._read() as conn:
            rows = conn.execute(select(t.keys.c.state, func.count())
                                .group_by(t.keys.c.state)).all()
        return {str(r[0]): int(r[1]) for r in rows}
