"""Virtual keys: what clients present instead of a provider key.

Issued per tenant with an environment, allowed models, rpm/tpm limits and an expiry; the
key is shown once and stored only as its keyed hash (HMAC-SHA256 under a subkey of the
gateway master key). Look-up is by hash (an index on a value an attacker cannot steer
without the key), then a constant-time comparison. Revocable; every request is attributed
to the key's id.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from gateway import db
from gateway.errors import AuthenticationError, InvalidRequestError, NotFoundError
from gateway.master_key import MasterKey

ENVIRONMENTS = ("dev", "staging", "prod")
KEY_PREFIX = "gwk-"
MAX_KEY_LEN = 128


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str
    tenant_id: str
    env: str
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def public(self) -> dict[str, object]:
        return {"id": self.id, "tenant": self.tenant_id, "env": self.env,
                "models": list(self.models), "rpm": self.rpm, "tpm": self.tpm,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "created_at": self.created_at.isoformat()}


def _aware(t: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _from_row(r: object) -> VirtualKey:
    return VirtualKey(r.id, r.tenant_id, r.env, tuple(json.loads(r.models)),  # type: ignore[attr-defined]
                      r.rpm, r.tpm, _aware(r.expires_at), _aware(r.revoked_at),  # type: ignore[attr-defined]
                      _aware(r.created_at))  # type: ignore[arg-type,attr-defined]


#: at most this many keys are held in the look-up cache (it is emptied when full)
CACHE_CAPACITY = 10_000


class VirtualKeyStore:
    def __init__(self, engine: Engine, master_key: MasterKey,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 ttl_seconds: float = 0.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``ttl_seconds`` > 0: :meth:`authenticate` keeps the keys it found in memory that
        long (by hash), so a key revoked by another process is refused within that time;
        expiry is checked on every use."""
        self._engine = engine
        self._master_key = master_key
        self._clock = clock
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        #: key hash -> (read at, key); found keys only (an unknown key is always looked up)
        self._cache: dict[bytes, tuple[float, VirtualKey]] = {}

    def create(self, tenant_id: str, *, env: str = "prod", models: list[str] | None = None,
               rpm: int | None = None, tpm: int | None = None,
               expires_in_days: float | None = None) -> tuple[VirtualKey, str]:
        """Issue a key; returns it with the secret, which is not kept anywhere."""
        if env not in ENVIRONMENTS:
            raise InvalidRequestError(f"env must be one of {', '.join(ENVIRONMENTS)}")
        for limit in (rpm, tpm):
            if limit is not None and limit < 1:
                raise InvalidRequestError("rate limits must be positive")
        if expires_in_days is not None and expires_in_days <= 0:
            raise InvalidRequestError("--expires-in-days must be positive")
        now = self._clock()
        key_id = "vk_" + secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{env}-{secrets.token_urlsafe(32)}"
        expires = now + timedelta(days=expires_in_days) if expires_in_days else None
        clean_models = tuple(m.strip() for m in models or [] if m.strip())
        with self._engine.begin() as conn:
            if conn.execute(select(db.tenants.c.id).where(db.tenants.c.id == tenant_id)
                            ).first() is None:
                raise NotFoundError(f"no tenant {tenant_id!r}")
            conn.execute(insert(db.virtual_keys).values(
                id=key_id, tenant_id=tenant_id, key_hash=self._master_key.hash_virtual_key(secret),
                env=env, models=json.dumps(list(clean_models)), rpm=rpm, tpm=tpm,
                expires_at=expires, created_at=now))
        return VirtualKey(key_id, tenant_id, env, clean_models, rpm, tpm, expires, None,
                          now), secret

    def authenticate(self, presented: str | None) -> VirtualKey:
        """The live key that ``presented`` is, or :class:`AuthenticationError`. Blocks."""
        bad = AuthenticationError("Incorrect API key provided (unknown, revoked or expired "
                                  "virtual key).")
        if not presented or len(presented) > MAX_KEY_LEN or not presented.startswith(KEY_PREFIX):
            raise bad
        digest = self._master_key.hash_virtual_key(presented)
        key = self._cached(digest)
        if key is None:
            with self._engine.connect() as conn:
                row = conn.execute(select(db.virtual_keys)
                                   .where(db.virtual_keys.c.key_hash == digest)).first()
            if row is None or not hmac.compare_digest(bytes(row.key_hash), digest):
                raise bad
            key = _from_row(row)
            if self._ttl > 0:
                if len(self._cache) >= CACHE_CAPACITY:
                    self._cache.clear()
                self._cache[digest] = (self._monotonic(), key)
        now = self._clock()
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            raise bad
        return key

    def _cached(self, digest: bytes) -> VirtualKey | None:
        """The key with hash ``digest`` if it was read less than the TTL ago. The dict
        was filled by hash, so the hash comparison was done when it was read."""
        if self._ttl <= 0:
            return None
        hit = self._cache.get(digest)
        if hit is None or self._monotonic() - hit[0] >= self._ttl:
            return None
        return hit[1]

    def try_authenticate(self, presented: str | None) -> VirtualKey | None:
        """:meth:`authenticate` from memory only: None when the database must be read."""
        if (not presented or len(presented) > MAX_KEY_LEN or not presented.startswith(KEY_PREFIX)
                or self._ttl <= 0):
            return None
        if self._cached(self._master_key.hash_virtual_key(presented)) is None:
            return None
        return self.authenticate(presented)

    def revoke(self, key_id: str) -> VirtualKey:
        with self._engine.begin() as conn:
            count = conn.execute(update(db.virtual_keys)
                                 .where(db.virtual_keys.c.id == key_id,
                                        db.virtual_keys.c.revoked_at.is_(None))
                                 .values(revoked_at=self._clock())).rowcount
        self._cache = {d: hit for d, hit in self._cache.items() if hit[1].id != key_id}
        key = self.get(key_id)
        if not count and key.revoked_at is None:
            raise NotFoundError(f"no virtual key {key_id!r}")
        return key

    def get(self, key_id: str) -> VirtualKey:
        with self._engine.connect() as conn:
            row = conn.execute(select(db.virtual_keys)
                               .where(db.virtual_keys.c.id == key_id)).first()
        if row is None:
            raise NotFoundError(f"no virtual key {key_id!r}")
        return _from_row(row)

    def for_tenant(self, tenant_id: str) -> list[VirtualKey]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(db.virtual_keys)
                                .where(db.virtual_keys.c.tenant_id == tenant_id)
                                .order_by(db.virtual_keys.c.created_at)).all()
        return [_from_row(r) for r in rows]
