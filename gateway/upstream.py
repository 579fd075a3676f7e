"""Calls to the LLM provider (OpenAI-compatible) with the tenant's own keys, with failover.

One :class:`gateway.http_client.HttpClient` (keep-alive pools) for the process. A request is
tried with each of the tenant's keys for the provider in turn, moving on when the provider
answers 429 or 5xx or cannot be reached; the last answer (or error) is what the client
gets. Answers are returned unread, so that SSE passes through without buffering; the
caller closes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import structlog

from gateway.errors import UpstreamError
from gateway.http_client import HttpClient, HttpError, Response
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
    def __init__(self, timeout_seconds: float = 60.0) -> None:
        self._http = HttpClient(timeout=timeout_seconds, connect_timeout=5.0)

    async def open(self, creds: Sequence[ProviderCredential], method: str, path: str,
                   json_body: object | None = None) -> tuple[ProviderCredential, Response]:
        """Send with failover; returns the key used and the open (unread) response."""
        body = None if json_body is None else json.dumps(json_body).encode()
        for i, cred in enumerate(creds):
            headers = {"Authorization": f"Bearer {cred.api_key}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            try:
                response = await self._http.request(method, url(cred, path), headers, body)
            except HttpError as exc:
                log.warning("upstream_unreachable", provider_key=cred.id, error=str(exc))
                if i == len(creds) - 1:
                    raise UpstreamError("the provider could not be reached") from None
                continue
            if response.status_code in RETRYABLE and i < len(creds) - 1:
                log.info("upstream_failover", provider_key=cred.id,
                         status=response.status_code)
                await response.aclose()
                continue
            return cred, response
        raise UpstreamError("the provider could not be reached")

    async def aclose(self) -> None:
        await self._http.aclose()
