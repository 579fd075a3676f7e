"""BYOK provider keys: per tenant and provider (base URL + API key), several per provider.

An API key is stored only as an envelope blob under the tenant's key, the encryption
context binding tenant, provider and credential id (so a blob moved to another row or
tenant does not decrypt). No API returns it. It is decrypted just in time and the
plaintext is held in memory at most ``ttl_seconds`` (the published cache bound), and
dropped at once when the tenant's key service refuses (see ``TenantKeys.on_refusal``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update

from gateway import db
from gateway.errors import InvalidRequestError, NoProviderKeyError, NotFoundError
from gateway.tenant_keys import TenantKeys


@dataclass(frozen=True, slots=True)
class ProviderKeyInfo:
    """What may be shown about a provider key: never the key."""

    id: str
    tenant_id: str
    provider: str
    base_url: str
    created_at: datetime
    rotated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProviderCredential:
    """A decrypted provider key, for one upstream call."""

    id: str
    provider: str
    base_url: str
    api_key: str = field(repr=False)


def _context(tenant_id: str, provider: str, key_id: str) -> dict[str, str]:
    return {"tenant": tenant_id, "kind": "provider-key", "provider": provider,
            "credential": key_id}


def _check(provider: str, base_url: str, api_key: str) -> None:
    if not provider or len(provider) > 64 or not provider.replace("-", "").isalnum():
        raise InvalidRequestError("provider: 1-64 characters of A-Za-z0-9-")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError("base URL must be http(s)://host[:port][/path]")
    if not api_key:
        raise InvalidRequestError("the API key (stdin) must not be empty")


class ProviderKeyVault:
    def __init__(self, engine: Engine, tenant_keys: TenantKeys, *, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._keys = tenant_keys
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        #: provider key id -> (decrypted at, tenant id, credential)
        self._plain: dict[str, tuple[float, str, ProviderCredential]] = {}
        #: tenant id -> (read at, its keys' metadata, oldest first): the request path's view
        self._infos: dict[str, tuple[float, list[ProviderKeyInfo]]] = {}
        tenant_keys.on_refusal(self.purge)

    # -- administration ----------------------------------------------------------------

    def add(self, tenant_id: str, provider: str, base_url: str, api_key: str) -> ProviderKeyInfo:
        _check(provider, base_url, api_key)
        key_id = "pk_" + secrets.token_hex(8)
        blob = self._keys.encrypt(tenant_id, api_key.encode(),
                                  _context(tenant_id, provider, key_id))
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(insert(db.provider_keys).values(
                id=key_id, tenant_id=tenant_id, provider=provider, base_url=base_url.rstrip("/"),
                api_key_blob=blob, created_at=now))
        self._infos.pop(tenant_id, None)
        return ProviderKeyInfo(key_id, tenant_id, provider, base_url.rstrip("/"), now, None)

    def rotate(self, key_id: str, api_key: str) -> ProviderKeyInfo:
        info = self._info(key_id)
        _check(info.provider, info.base_url, api_key)
        blob = self._keys.encrypt(info.tenant_id, api_key.encode(),
                                  _context(info.tenant_id, info.provider, key_id))
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(update(db.provider_keys).where(db.provider_keys.c.id == key_id)
                         .values(api_key_blob=blob, rotated_at=now))
        self._forget(key_id)
        return self._info(key_id)

    def delete(self, key_id: str) -> None:
        with self._engine.begin() as conn:
            count = conn.execute(
                delete(db.provider_keys).where(db.provider_keys.c.id == key_id)).rowcount
        self._forget(key_id)
        if not count:
            raise NotFoundError(f"no provider key {key_id!r}")

    def for_tenant(self, tenant_id: str, provider: str | None = None) -> list[ProviderKeyInfo]:
        q = select(db.provider_keys).where(db.provider_keys.c.tenant_id == tenant_id)
        if provider is not None:
            q = q.where(db.provider_keys.c.provider == provider)
        with self._engine.connect() as conn:
            rows = conn.execute(q.order_by(db.provider_keys.c.created_at,
                                           db.provider_keys.c.id)).all()
        return [ProviderKeyInfo(r.id, r.tenant_id, r.provider, r.base_url, r.created_at,
                                r.rotated_at) for r in rows]

    def default_provider(self, tenant_id: str) -> str:
        keys = self.for_tenant(tenant_id)
        if not keys:
            raise NoProviderKeyError("this tenant has no provider key")
        return keys[0].provider

    # -- use -------------------------------------------------------------------------------

    def resolve(self, tenant_id: str, model: str | None, *,
                blocking: bool = True) -> list[ProviderCredential] | None:
        """The decrypted keys to try for ``model`` (``provider/model`` picks the provider;
        otherwise the provider of the tenant's oldest key), in failover order.

        The keys' metadata is cached for ``ttl_seconds`` like the keys themselves, so a key
        added, rotated or deleted by another process is seen within that time.
        ``blocking=False``: from memory only, None when the database or the tenant's key
        service would have to be called (the caller then calls again in a thread)."""
        now = self._clock()
        hit = self._infos.get(tenant_id)
        if hit is not None and now - hit[0] < self._ttl:
            infos = hit[1]
        elif not blocking:
            return None
        else:
            infos = self.for_tenant(tenant_id)
            self._infos[tenant_id] = (now, infos)
        provider = None
        if model and "/" in model:
            prefix = model.split("/", 1)[0]
            if any(i.provider == prefix for i in infos):
                provider = prefix
        if provider is None:
            if not infos:
                raise NoProviderKeyError("this tenant has no provider key")
            provider = infos[0].provider
        out = []
        for info in infos:
            if info.provider != provider:
                continue
            cred = self._plain_hit(info.id, now)
            if cred is None:
                if not blocking:
                    return None
                cred = self._credential(tenant_id, info)
            out.append(cred)
        return out

    def _plain_hit(self, key_id: str, now: float) -> ProviderCredential | None:
        hit = self._plain.get(key_id)
        return hit[2] if hit is not None and now - hit[0] < self._ttl else None

    def credentials(self, tenant_id: str, provider: str) -> list[ProviderCredential]:
        """The tenant's keys for ``provider``, oldest first (the failover order). Blocks."""
        infos = self.for_tenant(tenant_id, provider)
        if not infos:
            raise NoProviderKeyError(f"this tenant has no key for provider {provider!r}")
        return [self._credential(tenant_id, info) for info in infos]

    def _credential(self, tenant_id: str, info: ProviderKeyInfo) -> ProviderCredential:
        now = self._clock()
        with self._lock:
            hit = self._plain.get(info.id)
            if hit is not None and now - hit[0] < self._ttl:
                return hit[2]
        with self._engine.connect() as conn:
            blob = conn.execute(select(db.provider_keys.c.api_key_blob)
                                .where(db.provider_keys.c.id == info.id)).scalar_one()
        api_key = self._keys.decrypt(tenant_id, blob,
                                     _context(tenant_id, info.provider, info.id)).decode()
        cred = ProviderCredential(info.id, info.provider, info.base_url, api_key)
        with self._lock:
            self._plain[info.id] = (now, tenant_id, cred)
            self._expire(now)
        return cred

    def _expire(self, now: float) -> None:
        for key_id in [k for k, (t, _, _) in self._plain.items() if now - t >= self._ttl]:
            del self._plain[key_id]

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._plain.pop(key_id, None)
            self._infos.clear()

    def purge(self, tenant_id: str) -> None:
        """Drop every decrypted key of ``tenant_id`` from memory."""
        with self._lock:
            for key_id in [k for k, (_, t, _) in self._plain.items() if t == tenant_id]:
                del self._plain[key_id]

    def _info(self, key_id: str) -> ProviderKeyInfo:
        with self._engine.connect() as conn:
            r = conn.execute(select(db.provider_keys)
                             .where(db.provider_keys.c.id == key_id)).first()
        if r is None:
            raise NotFoundError(f"no provider key {key_id!r}")
        return ProviderKeyInfo(r.id, r.tenant_id, r.provider, r.base_url, r.created_at,
                               r.rotated_at)
