"""Per-tenant envelope encryption over the tenant's XKS key, and the kill-switch mapping.

Each tenant gets its own :class:`kms.client.XksClient`, :class:`kms.client.XksKeyring` and
:class:`kms.envelope.DataKeyCache` (max age = the published cache bound). Every call into
the tenant's key service goes through :meth:`TenantKeys.call`, which translates its errors:

- key revoked, disabled, deleted, unknown, or the gateway's credential refused
  -> :class:`CustomerKeyRevokedError` (403)
- key service unreachable or failing -> :class:`CustomerKeyUnreachableError` (503)

and on any of them purges the tenant's cached data keys and decrypted provider keys, so
that nothing of a revoked tenant outlives the first refusal.
These calls block (HTTP to the KMS): callers on the event loop run them in a thread.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import NoReturn, TypeVar

import kms.errors as kms_errors
from gateway.errors import (
    CustomerKeyRevokedError,
    CustomerKeyUnreachableError,
    StoredDataUnreadableError,
)
from gateway.settings import Settings
from gateway.tenants import Tenant, TenantStore
from kms.client import XksClient, XksKeyring
from kms.envelope import DataKeyCache, EnvelopeEncryptor

T = TypeVar("T")

#: The gateway request id that XKS calls carry as ``kmsRequestId``, so that the tenant's
#: KMS audit log can be joined with the gateway's log (set around a request or `logs show`).
kms_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kms_request_id", default=None)

_REFUSED = (kms_errors.InvalidStateError, kms_errors.KeyNotFoundError,
            kms_errors.AccessDeniedError, kms_errors.AuthenticationFailedError,
            kms_errors.InvalidKeyUsageError)


class _WouldCallKms(Exception):
    """Raised by :class:`_CacheOnlyKeyring`: the operation needs the tenant's key service."""


class _CacheOnlyKeyring:
    """A keyring that never calls anything: an encryptor over it succeeds only with a data
    key from the shared :class:`DataKeyCache`, so it may run on the event loop."""

    def __init__(self, keyring_id: str) -> None:
        self.keyring_id = keyring_id

    def wrap_data_key(self, key_id: str, data_key: bytes, aad: bytes) -> NoReturn:
        raise _WouldCallKms

    def unwrap_data_key(self, wrapped: object, aad: bytes) -> NoReturn:
        raise _WouldCallKms


class TenantCrypto:
    """Envelope encryption under one tenant's key, with a bounded data-key cache."""

    def __init__(self, tenant: Tenant, secret: str, settings: Settings) -> None:
        self.tenant = tenant
        # XKS calls name the gateway as the service and carry the gateway request id, so
        # the tenant's KMS audit log joins with the gateway's log.
        self.client = XksClient(tenant.xks_endpoint, tenant.access_key_id, secret,
                                timeout=settings.kms_timeout_seconds,
                                principal_arn=settings.principal_arn,
                                via_service="ai-gateway", request_ids=kms_request_id.get)
        self.cache = DataKeyCache(max_age_seconds=settings.cache_seconds)
        keyring = XksKeyring(self.client)
        self.encryptor = EnvelopeEncryptor(keyring, tenant.key_id, cache=self.cache)
        #: the same key and cache, but never a KMS call (see TenantKeys.try_encrypt)
        self.cached_encryptor = EnvelopeEncryptor(_CacheOnlyKeyring(keyring.keyring_id),
                                                  tenant.key_id, cache=self.cache)

    def __repr__(self) -> str:
        return f"TenantCrypto(tenant={self.tenant.id!r})"


class TenantKeys:
    """The tenants' :class:`TenantCrypto` objects, built lazily; thread-safe."""

    def __init__(self, store: TenantStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._lock = threading.Lock()
        self._by_tenant: dict[str, TenantCrypto] = {}
        self._on_refusal: list[Callable[[str], None]] = []

    def on_refusal(self, callback: Callable[[str], None]) -> None:
        """Register a purge to run (with the tenant id) whenever the tenant's KMS refuses."""
        self._on_refusal.append(callback)

    def crypto(self, tenant_id: str) -> TenantCrypto:
        with self._lock:
            found = self._by_tenant.get(tenant_id)
        if found is not None:
            return found
        tenant = self._store.get(tenant_id)
        built = TenantCrypto(tenant, self._store.open_secret(tenant), self._settings)
        with self._lock:
            return self._by_tenant.setdefault(tenant_id, built)

    def encrypt(self, tenant_id: str, plaintext: bytes, context: Mapping[str, str],
                associated_data: bytes = b"") -> bytes:
        crypto = self.crypto(tenant_id)
        return self.call(tenant_id, lambda: crypto.encryptor.encrypt(
            plaintext, context, associated_data=associated_data))

    def try_encrypt(self, tenant_id: str, plaintext: bytes, context: Mapping[str, str],
                    associated_data: bytes = b"") -> bytes | None:
        """:meth:`encrypt` with a cached data key (at most the cache bound old), without
        blocking; None when that needs a call to the tenant's key service (or the tenant's
        client is not built yet): call :meth:`encrypt` in a thread then."""
        crypto = self._by_tenant.get(tenant_id)
        if crypto is None:
            return None
        try:
            return crypto.cached_encryptor.encrypt(plaintext, context,
                                                   associated_data=associated_data)
        except _WouldCallKms:
            return None

    def decrypt(self, tenant_id: str, blob: bytes, context: Mapping[str, str],
                associated_data: bytes = b"") -> bytes:
        crypto = self.crypto(tenant_id)
        return self.call(tenant_id, lambda: crypto.encryptor.decrypt(
            blob, context, associated_data=associated_data))

    def call(self, tenant_id: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except kms_errors.InvalidCiphertextError:
            raise StoredDataUnreadableError(
                "stored data could not be decrypted under this tenant's key") from None
        except _REFUSED:
            self.purge(tenant_id)
            raise CustomerKeyRevokedError(
                "the customer's key is revoked or access to it is denied; "
                "this tenant's data cannot be decrypted") from None
        except kms_errors.KmsError:
            self.purge(tenant_id)
            raise CustomerKeyUnreachableError(
                "the customer's key service is unreachable; try again later") from None

    def purge(self, tenant_id: str) -> None:
        with self._lock:
            crypto = self._by_tenant.get(tenant_id)
        if crypto is not None:
            crypto.cache.purge()
        for callback in self._on_refusal:
            callback(tenant_id)

    def close(self) -> None:
        with self._lock:
            for crypto in self._by_tenant.values():
                crypto.client.close()
            self._by_tenant.clear()
