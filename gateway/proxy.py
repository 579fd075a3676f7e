"""The proxy's request flow: one method per endpoint, called by :mod:`gateway.routes`.

``POST /v1/chat/completions``, in order:

1. authenticate the virtual key (401), check the model is allowed (403), count the request
   against the key's limits (429 with ``x-ratelimit-*`` and ``retry-after``);
2. in a worker thread (KMS and database calls block): encrypt the prompt under the tenant's
   key and store it (unless the client sent ``x-gateway-no-store``), and decrypt the
   tenant's provider keys (cached for at most the published bound). A revoked key fails
   here with 403, an unreachable key service with 503;
3. forward with the tenant's key, failing over to its next key on 429/5xx;
4. plain: return the answer; streaming: pass the SSE bytes through as they come and cancel
   the upstream call when the client goes away;
5. charge the tokens the upstream reported, and store the encrypted response and metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx
import structlog
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotAllowedError,
    UpstreamError,
)
from gateway.provider_keys import ProviderCredential, ProviderKeyVault
from gateway.rate_limits import RateLimits
from gateway.request_logs import RequestLog, Usage
from gateway.stream_assembler import StreamAssembler
from gateway.tenant_keys import kms_request_id
from gateway.tenants import Tenant, TenantStore
from gateway.upstream import PASS_HEADERS, Upstream
from gateway.virtual_keys import VirtualKey, VirtualKeyStore

log = structlog.get_logger("gateway.proxy")

NO_STORE_HEADER = "x-gateway-no-store"
REQUEST_ID_HEADER = "x-gateway-request-id"


class CancellingStreamingResponse(StreamingResponse):
    """Streams, and stops (cancelling the upstream call) as soon as the client disconnects,
    even while no chunk is due: Starlette only notices on the next send otherwise."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            async def stream() -> None:
                with contextlib.suppress(OSError):
                    await self.stream_response(send)
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


class Proxy:
    def __init__(self, tenants: TenantStore, virtual_keys: VirtualKeyStore, vault: ProviderKeyVault,
                 request_log: RequestLog, rate_limits: RateLimits, upstream: Upstream) -> None:
        self._tenants = tenants
        self._virtual_keys = virtual_keys
        self._vault = vault
        self._log = request_log
        self._limits = rate_limits
        self._upstream = upstream
        self._background: set[asyncio.Task[None]] = set()

    # -- endpoints -------------------------------------------------------------------------

    async def list_models(self, authorization: str | None) -> Response:
        key = await asyncio.to_thread(self._virtual_keys.authenticate, bearer(authorization))
        creds = await asyncio.to_thread(self._credentials, key, None)
        _, response = await self._upstream.open(creds, "GET", "/models")
        try:
            body = json.loads(await response.aread())
        except ValueError:
            raise UpstreamError("the provider sent a malformed model list") from None
        finally:
            await response.aclose()
        if response.status_code != 200 or not isinstance(body, dict):
            raise UpstreamError(f"the provider answered {response.status_code}")
        data = [m for m in body.get("data") or []
                if isinstance(m, dict) and key.allows(str(m.get("id")))]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, authorization: str | None, body: Any,
                               headers: Mapping[str, str]) -> Response:
        key, tenant = await asyncio.to_thread(self._authenticate, authorization)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise InvalidRequestError("the body must be a JSON object with a 'model'")
        model: str = body["model"]
        if not key.allows(model):
            raise ModelNotAllowedError(f"this virtual key may not use model {model!r}")
        limit_headers = await self._limits.admit(key, tenant)
        request_id = "req_" + secrets.token_hex(12)
        store = headers.get(NO_STORE_HEADER, "").lower() not in ("1", "true", "yes")
        creds = await asyncio.to_thread(self._prepare, key, request_id, body, store)
        provider_model = model.split("/", 1)[1] if "/" in model else model
        started = time.monotonic()
        cred, response = await self._upstream.open(
            creds, "POST", "/chat/completions", dict(body, model=provider_model))
        out_headers = {**limit_headers, REQUEST_ID_HEADER: request_id,
                       **{h: response.headers[h] for h in PASS_HEADERS if h in response.headers}}
        meta = {"model": model, "provider": cred.provider, "provider_key_id": cred.id,
                "virtual_key_id": key.id, "env": key.env, "stream": bool(body.get("stream"))}
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            usage = self._usage(content)
            await self._finish(key, tenant, request_id, store, response.status_code, started, usage,
                               content, meta)
            return Response(content, status_code=response.status_code, headers=out_headers)
        out_headers.pop("content-type", None)
        return CancellingStreamingResponse(
            self._relay(response, key, tenant, request_id, store, started, meta),
            status_code=response.status_code, headers=out_headers,
            media_type="text/event-stream")

    # -- steps -----------------------------------------------------------------------------

    def _authenticate(self, authorization: str | None) -> tuple[VirtualKey, Tenant]:
        key = self._virtual_keys.authenticate(bearer(authorization))
        return key, self._tenants.get(key.tenant_id)

    def _prepare(self, key: VirtualKey, request_id: str, body: dict[str, Any],
                 store: bool) -> list[ProviderCredential]:
        token = kms_request_id.set(request_id)
        try:
            if store:
                self._log.begin(key.tenant_id, request_id, key.id, json.dumps(body).encode())
            return self._credentials(key, body["model"])
        finally:
            kms_request_id.reset(token)

    def _credentials(self, key: VirtualKey, model: str | None) -> list[ProviderCredential]:
        provider = None
        if model and "/" in model:
            prefix = model.split("/", 1)[0]
            if prefix in {k.provider for k in self._vault.for_tenant(key.tenant_id)}:
                provider = prefix
        if provider is None:
            provider = self._vault.default_provider(key.tenant_id)
        return self._vault.credentials(key.tenant_id, provider)

    async def _relay(self, response: httpx.Response, key: VirtualKey, tenant: Tenant,
                     request_id: str,
                     store: bool, started: float, meta: dict[str, Any]) -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        try:
            async for chunk in response.aiter_raw():
                assembler.feed(chunk)
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            if not assembler.done:
                log.info("stream_ended_early", request_id=request_id)
            completion = assembler.completion()
            # The client may be gone (this generator cancelled): finish in a task of its own.
            task = asyncio.get_running_loop().create_task(self._finish(
                key, tenant, request_id, store, response.status_code, started,
                Usage.parse(completion["usage"]), json.dumps(completion).encode(), meta))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _finish(self, key: VirtualKey, tenant: Tenant, request_id: str, store: bool,
                      status: int, started: float, usage: Usage, response: bytes,
                      meta: dict[str, Any]) -> None:
        latency_ms = int((time.monotonic() - started) * 1000)
        await self._limits.charge_tokens(key, tenant, usage.total_tokens or 0)
        log.info("request", request_id=request_id, tenant=key.tenant_id, virtual_key=key.id,
                 status=status, latency_ms=latency_ms, total_tokens=usage.total_tokens)
        if not store:
            return

        def finish() -> None:
            token = kms_request_id.set(request_id)
            try:
                self._log.finish(key.tenant_id, request_id, status=status,
                                 latency_ms=latency_ms, usage=usage, response=response,
                                 meta=meta)
            finally:
                kms_request_id.reset(token)
        try:
            await asyncio.to_thread(finish)
        except GatewayError as exc:
            # The answer is already the client's; the record stays with its prompt only.
            log.warning("response_not_stored", request_id=request_id, error=exc.code)

    @staticmethod
    def _usage(content: bytes) -> Usage:
        try:
            return Usage.parse(json.loads(content).get("usage"))
        except (ValueError, AttributeError):
            return Usage()

    async def drain(self) -> None:
        """Wait for the log writes of finished streams (at shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
