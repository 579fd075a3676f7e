"""The kill switch's other half: how every process learns that a key's state changed.

Each process caches :class:`KeyRecord` snapshots, keyed by key id, for the hot path. The
cache is valid only while the database's state epoch (bumped by every state change) is
the one it was filled under:

* ``FileEpoch`` (SQLite) stats a small file beside the database that every state change
  replaces, and re-reads the epoch row when it changed (and at least every ``interval``):
  other processes on the machine see a change on their next call.
* ``PollingEpoch`` re-reads the epoch row at most every ``interval`` seconds.
* ``NotifyEpoch`` (PostgreSQL) listens on the ``kms_state`` channel in a background
  thread and re-reads the epoch on each notification and at least every ``interval``; when
  the listener has not confirmed the epoch within ``bound`` seconds, ``current()`` reads it
  from the database itself (fail closed: if that fails, the request fails).

The process that makes a change also clears its cache before the change returns, so a
revoke is refused by its own process on the very next call. The published bound for every
other process is ``interval`` (default 0.25 s), comfortably inside the 1 s of the design.
The periodic re-read alone (a change whose epoch-file update was lost to a crash) is seen
within ``interval + REFRESH_GRACE_S`` (0.5 s) on the event loop's fast path, where one
request claims the due re-read and the others keep their epoch meanwhile (_RefreshClaim).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Protocol

from kms.db.engine import may_block
from kms.errors import DependencyTimeoutError
from kms.keys.model import KeyRecord, KeyStore
from kms.keys.registry import NOTIFY_CHANNEL, Registry

DEFAULT_INTERVAL_S = 0.25
# FileEpoch: one request asks for the epoch several times (store, key, credentials); a
# stat() result this fresh is reused. Another process's revoke is seen this much later at
# most (the bound is 1 s); this process's own changes are seen at once (observe/remember).
STAT_REUSE_S = 0.002
# FileEpoch and PollingEpoch on the event loop: when the periodic re-read falls due, one
# request claims it (and runs on a worker thread, where the read may block); for up to
# this long the others keep the epoch they have instead of all following it onto worker
# threads. A change signalled through the epoch file is never served stale this way.
REFRESH_GRACE_S = 0.25


class EpochSource(Protocol):
    def current(self) -> int: ...

    def observe(self, epoch: int) -> None:
        """This process committed ``epoch`` itself: no need to read it back."""
        ...

    def close(self) -> None: ...


class _RefreshClaim:
    """Single flight for a periodic re-read that falls due on the event loop.

    The first caller past the interval claims the re-read and goes on to read (raising
    WouldBlock on the loop, so its request reruns on a worker thread and reads there);
    until the claim is REFRESH_GRACE_S old, later callers on the loop keep the value they
    have. Without it, every request arriving while that read waited for a thread and the
    GIL followed it onto the worker threads, each reading the epoch again in turn (about
    one request in six at 1,200 requests/s, docs/benchmarks.md). Past
    ``interval + REFRESH_GRACE_S`` every caller reads again: the bound stays fail-closed.
    Only the loop's thread calls it, so the claim needs no lock.
    """

    __slots__ = ("_claimed_at", "_interval")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._claimed_at = float("-inf")

    def others_may_wait(self, now: float, age: float) -> bool:
        if age >= self._interval + REFRESH_GRACE_S:
            return False
        if now - self._claimed_at < REFRESH_GRACE_S:
            return True  # a worker thread is re-reading the epoch
        self._claimed_at = now  # this caller re-reads it
        return False


class PollingEpoch:
    """Reads the epoch row at most every ``interval`` seconds."""

    def __init__(self, registry: Registry, interval: float = DEFAULT_INTERVAL_S) -> None:
        self._registry = registry
        self._interval = interval
        self._lock = threading.Lock()
        self._value = -1
        self._checked = float("-inf")
        self._refresh = _RefreshClaim(interval)

    def current(self) -> int:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self._value
        if not may_block() and self._refresh.others_may_wait(now, now - self._checked):
            return self._value
        with self._lock:
            if time.monotonic() - self._checked >= self._interval:
                self._value = self._registry.epoch()
                self._checked = time.monotonic()
            return self._value

    def observe(self, epoch: int) -> None:
        with self._lock:
            if epoch > self._value:
                self._value, self._checked = epoch, time.monotonic()

    def close(self) -> None:
        pass


class EpochFile:
    """A file next to the SQLite database, replaced after every state change.

    Readers ``stat()`` it on every request (microseconds); when its identity changes they
    re-read the epoch row. A process that crashes between its commit and the file update is
    covered by the periodic re-read of :class:`FileEpoch`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def touch(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            tmp.write_text(str(time.time_ns()))
            os.replace(tmp, self.path)
        except OSError:
            pass  # readers fall back to their periodic re-read

    def identity(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)


class FileEpoch:
    """SQLite: a stat() of the epoch file per call, the epoch row re-read when it changed
    and at least every ``interval`` seconds."""

    def __init__(self, registry: Registry, file: EpochFile,
                 interval: float = DEFAULT_INTERVAL_S) -> None:
        self._registry = registry
        self._file = file
        self._interval = interval
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._value = -1
        self._checked = float("-inf")
        self._stat_at = float("-inf")
        self._refresh = _RefreshClaim(interval)

    def current(self) -> int:
        now = time.monotonic()
        if now - self._stat_at < STAT_REUSE_S and now - self._checked < self._interval:
            return self._value  # the file was stat()ed and matched a moment ago
        ident = self._file.identity()
        if ident == self._seen:
            age = now - self._checked
            if age < self._interval:
                self._stat_at = now
                return self._value
            # Only the periodic re-read is due (the file has not changed).
            if not may_block() and self._refresh.others_may_wait(now, age):
                return self._value
        with self._lock:
            if ident == self._seen and time.monotonic() - self._checked < self._interval:
                # Another thread read the epoch after the file had this identity (i.e.
                # after the change that gave it): no need to read it again.
                return self._value
            value = self._registry.epoch()
            self._seen, self._value, self._checked = ident, value, now
            self._stat_at = now
            return value

    def observe(self, epoch: int) -> None:
        """Called after this process touched the file for ``epoch``: remember the file's
        new identity with it. If another process changed state in between, its change
        is seen at the latest at the next periodic re-read (``interval``)."""
        ident = self._file.identity()
        with self._lock:
            if epoch > self._value:
                self._seen, self._value, self._checked = ident, epoch, time.monotonic()

    def close(self) -> None:
        pass


class NotifyEpoch:
    """PostgreSQL LISTEN/NOTIFY, with a periodic re-read as a heartbeat."""

    def __init__(self, registry: Registry, dsn: str, interval: float = DEFAULT_INTERVAL_S,
                 bound: float = 0.5) -> None:
        self._registry = registry
        self._dsn = dsn
        self._interval = interval
        self._bound = bound
        self._value = registry.epoch()
        self._confirmed = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="kms-epoch", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        import psycopg  # only PostgreSQL deployments need it

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        self._value = self._registry.epoch()
                        self._confirmed = time.monotonic()
                        for _ in conn.notifies(timeout=self._interval, stop_after=1):
                            pass
            except Exception:  # reconnect; current() falls back to direct reads meanwhile
                self._stop.wait(0.2)

    def current(self) -> int:
        if time.monotonic() - self._confirmed <= self._bound:
            return self._value
        return self._registry.epoch()

    def observe(self, epoch: int) -> None:
        if epoch > self._value:
            self._value = epoch

    def close(self) -> None:
        self._stop.set()


class KeyStateCache:
    """KeyRecord snapshots valid for one state epoch."""

    def __init__(self, registry: Registry, epoch: EpochSource) -> None:
        self._registry = registry
        self._epoch = epoch
        self._lock = threading.Lock()
        self._filled_under = -1
        self._records: dict[str, KeyRecord] = {}
        self._stores: list[KeyStore] | None = None

    def get(self, key_id: str) -> KeyRecord:
        try:
            epoch = self._epoch.current()
        except DependencyTimeoutError:
            raise
        with self._lock:
            if epoch != self._filled_under:
                self._records.clear()
                self._stores = None
                self._filled_under = epoch
            record = self._records.get(key_id)
        if record is None:
            record = self._registry.get_key(key_id)
            with self._lock:
                if self._filled_under == epoch:
                    self._records[key_id] = record
        return record

    def stores(self) -> list[KeyStore]:
        """All key stores, cached under the same epoch as the keys."""
        epoch = self._epoch.current()
        with self._lock:
            if epoch != self._filled_under:
                self._records.clear()
                self._stores = None
                self._filled_under = epoch
            stores = self._stores
        if stores is None:
            stores = self._registry.list_stores()
            with self._lock:
                if self._filled_under == epoch:
                    self._stores = stores
        return stores

    def epoch(self) -> int:
        """The current state epoch (for other caches that follow the same rule)."""
        return self._epoch.current()

    def remember(self, record: KeyRecord) -> None:
        """After this process changed a key: forget everything else and keep ``record``
        (fresh from the changing transaction) for the current epoch, so the very next call
        sees the new state without a database read."""
        epoch = self._epoch.current()
        with self._lock:
            self._records.clear()
            self._stores = None
            self._filled_under = epoch
            self._records[record.key_id] = record

    def invalidate(self) -> None:
        """Forget everything now (called by the process that changed a key's state)."""
        with self._lock:
            self._records.clear()
            self._stores = None
            self._filled_under = -1

    def close(self) -> None:
        self._epoch.close()
