"""Tenants, each bound to its customer's key: XKS endpoint, key id and SigV4 credential.

The credential secret is stored sealed under the gateway master key (AAD: tenant and
access key id), and opened only to build the tenant's XKS client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway import db
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.master_key import MasterKey
from gateway.pii import MODES as PII_MODES

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    xks_endpoint: str
    key_id: str
    access_key_id: str
    secret_sealed: bytes = field(repr=False)
    rpm: int | None = None
    tpm: int | None = None
    #: PII redaction (gateway/pii.py): "off", "forward" or "logs"
    pii_mode: str = "off"


def _check_pii(mode: str) -> None:
    if mode not in PII_MODES:
        raise InvalidRequestError(f"PII mode must be one of {', '.join(PII_MODES)}")


def _from_row(r: Any) -> Tenant:
    return Tenant(r.id, r.xks_endpoint, r.key_id, r.access_key_id, r.secret_sealed,
                  r.rpm, r.tpm, r.pii_mode or "off")


class TenantStore:
    def __init__(self, engine: Engine, master_key: MasterKey, *, ttl_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._master_key = master_key
        self._ttl = ttl_seconds
        self._clock = clock
        #: tenant id -> (read at, tenant); dict operations are atomic under the GIL
        self._cache: dict[str, tuple[float, Tenant]] = {}

    def create(self, tenant_id: str, xks_endpoint: str, key_id: str, access_key_id: str,
               secret: str, *, rpm: int | None = None, tpm: int | None = None,
               pii_mode: str = "off") -> Tenant:
        if not TENANT_ID.match(tenant_id):
            raise InvalidRequestError("tenant id: 1-64 characters of A-Za-z0-9._-")
        if not KEY_ID.match(key_id):
            raise InvalidRequestError("key id: 1-128 characters of A-Za-z0-9._-")
        parts = urlsplit(xks_endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or "/kms/xks" in parts.path:
            raise InvalidRequestError(
                "--xks-endpoint must be scheme://host[:port]/{prefix}, before /kms/xks/v1")
        if not access_key_id or not secret:
            raise InvalidRequestError("the access key id and secret must not be empty")
        if any(limit is not None and limit < 1 for limit in (rpm, tpm)):
            raise InvalidRequestError("rate limits must be positive")
        _check_pii(pii_mode)
        sealed = self._master_key.seal_credential(tenant_id, access_key_id, secret)
        tenant = Tenant(tenant_id, xks_endpoint.rstrip("/"), key_id, access_key_id, sealed,
                        rpm, tpm, pii_mode)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(db.tenants).values(
                    id=tenant.id, xks_endpoint=tenant.xks_endpoint, key_id=key_id,
                    access_key_id=access_key_id, secret_sealed=sealed, rpm=rpm, tpm=tpm,
                    pii_mode=pii_mode, created_at=datetime.now(UTC)))
        except IntegrityError:
            raise ConflictError(f"tenant {tenant_id!r} exists already") from None
        return tenant

    def set_pii(self, tenant_id: str, pii_mode: str) -> Tenant:
        """Change the tenant's PII redaction mode (a running gateway applies it within its
        cache TTL, GATEWAY_CACHE_SECONDS)."""
        _check_pii(pii_mode)
        with self._engine.begin() as conn:
            count = conn.execute(update(db.tenants).where(db.tenants.c.id == tenant_id)
                                 .values(pii_mode=pii_mode)).rowcount
        if not count:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        self._forget(tenant_id)
        return self.get(tenant_id)

    def get(self, tenant_id: str) -> Tenant:
        with self._engine.connect() as conn:
            row = conn.execute(select(db.tenants).where(db.tenants.c.id == tenant_id)).first()
        if row is None:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        return _from_row(row)

    def cached(self, tenant_id: str) -> Tenant:
        """:meth:`get` through an in-memory cache of at most ``ttl_seconds`` (the request
        path: limits and the PII mode may lag a change made elsewhere by that long)."""
        now = self._clock()
        hit = self._cache.get(tenant_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        tenant = self.get(tenant_id)
        self._cache[tenant_id] = (now, tenant)
        return tenant

    def try_cached(self, tenant_id: str) -> Tenant | None:
        """:meth:`cached` from memory only: None when the database must be read."""
        hit = self._cache.get(tenant_id)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return None

    def _forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)

    def all(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(db.tenants).order_by(db.tenants.c.id)).all()
        return [_from_row(r) for r in rows]

    def open_secret(self, tenant: Tenant) -> str:
        return self._master_key.open_credential(tenant.id, tenant.access_key_id,
                                                tenant.secret_sealed)
