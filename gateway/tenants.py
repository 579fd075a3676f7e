"""Tenants, each bound to its customer's key: XKS endpoint, key id and SigV4 credential.

The credential secret is stored sealed under the gateway master key (AAD: tenant and
access key id), and opened only to build the tenant's XKS client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from gateway import db
from gateway.errors import ConflictError, InvalidRequestError, NotFoundError
from gateway.master_key import MasterKey

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


class TenantStore:
    def __init__(self, engine: Engine, master_key: MasterKey) -> None:
        self._engine = engine
        self._master_key = master_key

    def create(self, tenant_id: str, xks_endpoint: str, key_id: str, access_key_id: str,
               secret: str, *, rpm: int | None = None, tpm: int | None = None) -> Tenant:
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
        sealed = self._master_key.seal_credential(tenant_id, access_key_id, secret)
        tenant = Tenant(tenant_id, xks_endpoint.rstrip("/"), key_id, access_key_id, sealed,
                        rpm, tpm)
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(db.tenants).values(
                    id=tenant.id, xks_endpoint=tenant.xks_endpoint, key_id=key_id,
                    access_key_id=access_key_id, secret_sealed=sealed, rpm=rpm, tpm=tpm,
                    created_at=datetime.now(UTC)))
        except IntegrityError:
            raise ConflictError(f"tenant {tenant_id!r} exists already") from None
        return tenant

    def get(self, tenant_id: str) -> Tenant:
        with self._engine.connect() as conn:
            row = conn.execute(select(db.tenants).where(db.tenants.c.id == tenant_id)).first()
        if row is None:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        return Tenant(row.id, row.xks_endpoint, row.key_id, row.access_key_id,
                      row.secret_sealed, row.rpm, row.tpm)

    def all(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(db.tenants).order_by(db.tenants.c.id)).all()
        return [Tenant(r.id, r.xks_endpoint, r.key_id, r.access_key_id, r.secret_sealed,
                       r.rpm, r.tpm) for r in rows]

    def open_secret(self, tenant: Tenant) -> str:
        return self._master_key.open_credential(tenant.id, tenant.access_key_id,
                                                tenant.secret_sealed)
