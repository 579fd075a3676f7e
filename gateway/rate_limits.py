"""Requests-per-minute and tokens-per-minute limits per virtual key (the ``limits`` library).

Storage is a ``limits`` URI: ``memory://`` on one node (the default), ``redis://host:6379``
for several replicas (GATEWAY_RATE_LIMIT_STORAGE). The async storages are used so that a
Redis round trip never blocks the event loop. Headers follow OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; a refusal adds ``retry-after``.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gateway.errors import RateLimitError
from gateway.tenants import Tenant
from gateway.virtual_keys import VirtualKey

log = structlog.get_logger("gateway.rate_limits")


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else "async+" + uri


class RateLimits:
    def __init__(self, storage_uri: str = "memory://") -> None:
        storage = storage_from_string(_async_uri(storage_uri))
        self._limiter = MovingWindowRateLimiter(storage)

    async def _stats(self, item: RateLimitItemPerMinute, ident: str,
                     kind: str) -> dict[str, str]:
        stats = await self._limiter.get_window_stats(item, ident)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return {f"x-ratelimit-limit-{kind}": str(item.amount),
                f"x-ratelimit-remaining-{kind}": str(max(0, stats.remaining)),
                f"x-ratelimit-reset-{kind}": f"{reset}s"}

    async def admit(self, key: VirtualKey, tenant: Tenant) -> dict[str, str]:
        """Count one request against ``key`` and its tenant; :class:`RateLimitError` when over.

        The headers describe the virtual key's limits; a refusal by the tenant-wide limit
        carries that limit's headers instead.
        """
        if tenant.tpm is not None:
            tokens = RateLimitItemPerMinute(tenant.tpm)
            if not await self._limiter.test(tokens, "tenant-tpm:" + tenant.id):
                raise self._refuse(key, "tokens", await self._stats(
                    tokens, "tenant-tpm:" + tenant.id, "tokens"), scope="tenant")
        if tenant.rpm is not None:
            requests = RateLimitItemPerMinute(tenant.rpm)
            if not await self._limiter.hit(requests, "tenant-rpm:" + tenant.id):
                raise self._refuse(key, "requests", await self._stats(
                    requests, "tenant-rpm:" + tenant.id, "requests"), scope="tenant")
        headers: dict[str, str] = {}
        if key.tpm is not None:
            tokens = RateLimitItemPerMinute(key.tpm)
            headers.update(await self._stats(tokens, "tpm:" + key.id, "tokens"))
            if not await self._limiter.test(tokens, "tpm:" + key.id):
                raise self._refuse(key, "tokens", headers)
        if key.rpm is not None:
            requests = RateLimitItemPerMinute(key.rpm)
            allowed = await self._limiter.hit(requests, "rpm:" + key.id)
            headers.update(await self._stats(requests, "rpm:" + key.id, "requests"))
            if not allowed:
                raise self._refuse(key, "requests", headers)
        return headers

    async def charge_tokens(self, key: VirtualKey, tenant: Tenant, tokens: int) -> None:
        """Count the tokens a finished request used (reported by the upstream)."""
        if tenant.tpm is not None and tokens > 0:
            await self._limiter.hit(RateLimitItemPerMinute(tenant.tpm),
                                    "tenant-tpm:" + tenant.id, cost=min(tokens, tenant.tpm))
        if key.tpm is not None and tokens > 0:
            await self._limiter.hit(RateLimitItemPerMinute(key.tpm), "tpm:" + key.id,
                                    cost=min(tokens, key.tpm))

    @staticmethod
    def _refuse(key: VirtualKey, kind: str, headers: dict[str, str],
                scope: str = "virtual key") -> RateLimitError:
        reset = headers.get(f"x-ratelimit-reset-{kind}", "60s").rstrip("s")
        headers["retry-after"] = str(max(1, int(reset)))
        log.warning("rate_limit_burst", virtual_key=key.id, tenant=key.tenant_id, kind=kind,
                    scope=scope)
        where = f"virtual key {key.id}" if scope == "virtual key" else f"tenant {key.tenant_id}"
        return RateLimitError(f"Rate limit reached for {kind} per minute on {where}.", headers)
