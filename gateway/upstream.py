"""Calls to the LLM provider (OpenAI-compatible) with the tenant's own keys, with failover.

One :class:`httpx.AsyncClient` for the process. A request is tried with each of the
tenant's keys for the provider in turn, moving on when the provider answers 429 or 5xx or
cannot be reached; the last answer (or error) is what the client gets. Responses are opened
in streaming mode so that SSE passes through without buffering; the caller closes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import structlog

from gateway.errors import UpstreamError
from gateway.provider_keys import ProviderCredential

log = structlog.get_logger("gateway.upstream")

RETRYABLE = frozenset({429, 500, 502, 503, 504})
#: Headers of the upstream answer that the client may see.
PASS_HEADERS = ("content-type", "openai-processing-ms", "openai-version", "x-request-id")


def url(cred: ProviderCredential, path: str) -> str:
    base = cred.base_url
    if not base.endswith("/v1"):
        base += "/v1"
    return base + path


class Upstream:
    def __init__(self, timeout_seconds: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=5.0), transport=transport,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def open(self, creds: Sequence[ProviderCredential], method: str, path: str,
                   json_body: object | None = None) -> tuple[ProviderCredential, httpx.Response]:
        """Send with failover; returns the key used and the open (unread) response."""
        last: httpx.Response | None = None
        for i, cred in enumerate(creds):
            request = self._http.build_request(
                method, url(cred, path), json=json_body,
                headers={"Authorization": f"Bearer {cred.api_key}"})
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                log.warning("upstream_unreachable", provider_key=cred.id,
                            error=type(exc).__name__)
                if i == len(creds) - 1:
                    raise UpstreamError("the provider could not be reached") from None
                continue
            if response.status_code in RETRYABLE and i < len(creds) - 1:
                log.info("upstream_failover", provider_key=cred.id,
                         status=response.status_code)
                await response.aclose()
                continue
            return cred, response
        assert last is None
        raise UpstreamError("the provider could not be reached")

    async def aclose(self) -> None:
        await self._http.aclose()
